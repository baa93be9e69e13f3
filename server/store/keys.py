"""Key encodings shared by every table (version 1).

Keys are UTF-8 parts joined by 0x1F (unit separator), which no valid id may contain, so a
prefix scan over `join_key(user_id, "")` finds exactly one user's records.
"""
from __future__ import annotations

SEP = b"\x1f"

__all__ = ["SEP", "join_key", "split_key"]


def join_key(*parts: str | bytes) -> bytes:
    out = []
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        if SEP in raw:
            raise ValueError(f"key part {part!r} contains the 0x1F separator")
        out.append(raw)
    return SEP.join(out)


def split_key(key: bytes) -> list[str]:
    return [p.decode() for p in key.split(SEP)]
