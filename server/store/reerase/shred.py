"""Re-erasure of a user's data key: its `datakeys` entry deleted in the transaction, its pad
zeroed in the copy's pad file after the commit, so what else was sealed under it (freed pages)
cannot be opened any more."""
from __future__ import annotations

import os
from pathlib import Path

from ..datakeys import SHRED_COUNT_KEY, SLOT_BYTES, UNZEROED_KEY
from ..table import Table

__all__ = ["shred", "zero"]


def shred(txn, datakeys: Table, meta: Table, tokens: list[bytes]) -> list[int]:
    """Delete the users' data key entries (`DataKeys.shred`, offline); their pad slots, also
    named in `UNZEROED_KEY` (with those already there) so the next writable open zeroes them
    should this process die before `zero` does."""
    slots = []
    for token in tokens:
        wrapped = datakeys.get(txn, token)
        if wrapped is not None:
            slots.append(int.from_bytes(bytes(wrapped[:8]), "big"))
            datakeys.delete(txn, token)
    if slots:
        before = [s for s in bytes(meta.get(txn, UNZEROED_KEY) or b"").split(b",") if s]
        meta.put(txn, UNZEROED_KEY, b",".join([*before, *(b"%d" % s for s in slots)]))
        count = int(meta.get(txn, SHRED_COUNT_KEY) or b"0")
        meta.put(txn, SHRED_COUNT_KEY, b"%d" % (count + len(slots)))
    return slots


def zero(path: Path, slots: list[int]) -> None:
    """Overwrite the pads of `slots` with zeros in the pad file `path`, fsynced."""
    if not slots or not path.exists():
        return
    fd = os.open(path, os.O_RDWR)
    try:
        for slot in slots:
            os.pwrite(fd, bytes(SLOT_BYTES), slot * SLOT_BYTES)
        os.fsync(fd)  # in place, not `durable.replace`: the zeros must land on the pads' blocks
    finally:
        os.close(fd)
