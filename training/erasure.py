"""Training without erased users: drop every row of a tombstoned user from before their erasure.

`training export` writes the server's tombstones (keyed hashes and times, `contract.erasure`)
beside the interactions; `train` reads them (``--tombstones``, by default ``tombstones.csv``
beside ``--interactions``) and hashes its own user ids with the `erasure` keyring, which it
reads with `contract.keyring` (``--secrets-dir`` or ``TAILOR_SECRET_ERASURE``), so
no raw id of an erased user travels. Rows after the erasure are the user's new activity and stay.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.erasure import erased_at, keys_in_use
from contract.keyring import read_keys

__all__ = ["drop_erased", "erasure_keys", "tombstones_for"]

logger = logging.getLogger("tailor.training.erasure")


def tombstones_for(interactions: Path, given: Path | None) -> Path | None:
    """The tombstone file to apply: `given`, else ``tombstones.csv`` beside the interactions."""
    if given is not None:
        return given
    beside = Path(interactions).with_name("tombstones.csv")
    return beside if beside.exists() else None


def erasure_keys(secrets_dir: Path | None) -> tuple[tuple[str, bytes], ...]:
    """Every key of the `erasure` keyring (environment first, then `secrets_dir`); ValueError
    names what to provide when it is missing."""
    return read_keys("erasure", secrets_dir)


def drop_erased(rows: dict, tombstones: Mapping[tuple[str, str], float],
                keys: Sequence[tuple[str, bytes]]) -> tuple[dict, int]:
    """`rows` (`training.readers.read_interactions`) without the rows of erased users from
    before their erasure; returns (rows, how many were dropped). One HMAC per distinct user.

    A tombstone written under a key id that ``keys`` lacks is a ``ValueError``: its user could
    not be recognised, and would be trained on (a keyring of another deployment, or an old one)."""
    missing = sorted({kid for kid, _ in tombstones} - {kid for kid, _ in keys})
    if missing:
        n = sum(1 for kid, _ in tombstones if kid in missing)
        raise ValueError(f"{n} tombstones were written under erasure key id(s) "
                         f"{', '.join(map(repr, missing))}, which the erasure keyring read "
                         f"(key ids {', '.join(repr(k) for k, _ in keys) or 'none'}) lacks: their "
                         "users cannot be recognised; give the server's keyring (--secrets-dir "
                         "or TAILOR_SECRET_ERASURE)")
    users = pc.unique(rows["user_id"]).to_pylist()
    at = erased_at(users, tombstones, keys_in_use(tombstones, keys))
    erased = {u: t for u, t in zip(users, at) if t is not None}
    if not erased:
        return rows, 0
    pos = pc.index_in(rows["user_id"], value_set=pa.array(list(erased), pa.string()))
    pos = pos.fill_null(-1).to_numpy(zero_copy_only=False)
    limit = np.append(np.array(list(erased.values()), np.float64), -np.inf)[pos]
    keep = ~(np.asarray(rows["timestamp"], np.float64) < limit)
    dropped = int(len(keep) - keep.sum())
    logger.info("dropped %d rows of %d erased users (tombstones)", dropped, len(erased))
    mask = pa.array(keep)
    return {k: (v.filter(mask) if isinstance(v, (pa.Array, pa.ChunkedArray)) else v[keep])
            for k, v in rows.items()}, dropped
