"""`python -m pipeline ...` is the `sessionize` command."""

import sys

from pipeline.cli.main import main

sys.exit(main())
