"""`python -m server rotate-key`: re-wrap every data key under a new master key, online.

1. A new `encryption` master key goes in front of the keyring file (the old ones stay, so
   every data key keeps opening meanwhile), and `meta` `datakey-kid` names it: from that
   commit on, every worker wraps new users' data keys under it (a worker that does not know the
   kid yet re-reads the keyring, `DataKeys._kek`).
2. The `datakeys` table is walked in key order, `chunk` entries per write transaction, each
   entry under another kid re-wrapped (its pad and its data key unchanged: no record is
   touched; a worker unwraps the new entry once, on its next use).

Interrupted, the command resumes: when `datakey-kid` is already the keyring's newest kid and
some entry is still under another kid, it finishes step 2 with that kid instead of making a new
one. Once it reports `remaining: 0`, the old master keys can be dropped from the keyring.
"""
from __future__ import annotations

import logging

from ..durable import Unconfirmed
from ..errors import FailedPrecondition
from ..security.secrets import Secrets
from .crypto import MASTER_RING
from .datakeys import WRAP_KID_KEY

__all__ = ["rotate_data_keys", "kids_in_use"]

logger = logging.getLogger("tailor.store")


def kids_in_use(store) -> dict[str, int]:
    """{master key id: data keys wrapped under it}."""
    out: dict[str, int] = {}
    with store.read() as txn:
        for _, wrapped in store.raw_table("datakeys").items(txn):
            kid = bytes(wrapped[9:9 + wrapped[8]]).decode()
            out[kid] = out.get(kid, 0) + 1
    return out


def rotate_data_keys(store, secrets: Secrets, chunk: int = 1000,
                     max_chunks: int | None = None) -> dict:
    """Steps 1 and 2 above on an open encrypted `store`; `max_chunks` stops early (tests of
    resuming). Returns {kid, resumed, rewrapped, remaining, kids}."""
    ring = secrets[MASTER_RING]
    stamp = store.get("meta", WRAP_KID_KEY)
    resumed = stamp == ring.kid.encode() and set(kids_in_use(store)) - {ring.kid}
    if not resumed:
        ring = _new_master(store, secrets, stamp)
        store.put("meta", WRAP_KID_KEY, ring.kid.encode())
        logger.info("new data keys are wrapped under master key %s", ring.kid)
    n, start, chunks = 0, b"", 0
    while start is not None and (max_chunks is None or chunks < max_chunks):
        done, start = store.write(lambda txn, at=start: _rewrap_chunk(store, txn, at, chunk, ring.kid))
        n, chunks = n + done, chunks + 1
    kids = kids_in_use(store)
    return {"kid": ring.kid, "resumed": bool(resumed), "rewrapped": n,
            "remaining": sum(c for k, c in kids.items() if k != ring.kid), "kids": kids}


def _new_master(store, secrets: Secrets, stamp: bytes | None):
    """Step 1's new key in front of the keyring file. Refused when the file was replaced but
    its directory could not be synced: data keys wrapped under a key a power loss may take
    back would never open again. A store never rotated (no `datakey-kid`: servers wrap under
    the keyring's front key, now the new one) then gets the old key's kid, so servers started
    since keep wrapping under it."""
    old = secrets[MASTER_RING].kid
    try:
        return secrets.rotate(MASTER_RING)
    except Unconfirmed as err:
        if stamp is None:
            store.put("meta", WRAP_KID_KEY, old.encode())
        raise FailedPrecondition(f"{err}; no data key was wrapped under the new master key "
                                 f"{secrets[MASTER_RING].kid}: run rotate-key again once the "
                                 "disk is healthy (every old key stays in the keyring)") from None


def _rewrap_chunk(store, txn, start: bytes, chunk: int, kid: str) -> tuple[int, bytes | None]:
    """Re-wrap up to `chunk` entries from key `start`; (how many, where to go on or None)."""
    table, entries = store.raw_table("datakeys"), []
    for token, wrapped in table.items(txn, start):
        if len(entries) == chunk:
            return _rewrap(store, txn, entries, kid), bytes(token)
        entries.append((bytes(token), bytes(wrapped)))
    return _rewrap(store, txn, entries, kid), None


def _rewrap(store, txn, entries, kid: str) -> int:
    return sum(store.datakeys.rewrap(txn, token, wrapped, kid) for token, wrapped in entries)
