"""Session ids: deterministic, so offline mode and the worker give a session the same id."""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

_SESSION_NAMESPACE: Final = uuid.UUID("5e55107e-0000-4000-8000-5e55107e0000")
_NAMESPACE_BYTES: Final = _SESSION_NAMESPACE.bytes


def session_id_for(app_id: str, device_id: str, number: int, start_ts: int, event_id: str) -> str:
    """Deterministic session id: the same input gives the same id, offline or streaming."""
    name = f"{app_id}\x1f{device_id}\x1f{number}\x1f{start_ts}\x1f{event_id}"
    # uuid.uuid5, without building UUID objects: SHA-1 of namespace + name, version 5, RFC 4122.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
