"""The canonical format: the records of SPEC section 4, unchanged (the same objects: records
are never changed once emitted, and sharing them lets a writer serialize each once).

For partners that read the pipeline's own records (a data lake, a warehouse loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

FORMAT = "canonical"


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``record`` itself."""
    return [cast(dict[str, Any], record)]
