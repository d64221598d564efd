"""`python -m pipeline ...` is the `sessionize` command."""

import sys

from pipeline.cli import main

sys.exit(main())
