"""The canonical format: the records of SPEC section 4, unchanged (a shallow copy each).

For partners that read the pipeline's own records (a data lake, a warehouse loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FORMAT = "canonical"


def translate(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One shallow copy of ``record``."""
    return [dict(record)]
