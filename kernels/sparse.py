"""Sparse byte records for float64 state rows (profile features are mostly zeros).

Record: ``b"S1" | uint16 n | uint16 index[n] | float64 value[n]`` (little-endian), exact: values
are copied bit for bit. `encode_rows`/`decode_rows` run the Cython kernel (`kernels._sparse`)
unless ``use_native=False``, which runs the numpy reference of the same format.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAGIC", "encode_rows", "decode_rows"]

MAGIC = b"S1"
MAX_SIZE = 65535


def _check_states(states: np.ndarray, writable: bool) -> None:
    if not (isinstance(states, np.ndarray) and states.ndim == 2 and states.dtype == np.float64
            and states.flags.c_contiguous and (states.flags.writeable or not writable)):
        raise ValueError("states: must be a C-contiguous 2-d float64 array"
                         + (" (writable)" if writable else ""))
    if states.shape[1] > MAX_SIZE:
        raise ValueError(f"states: rows of {states.shape[1]} slots, at most {MAX_SIZE}")


def encode_rows(states: np.ndarray, use_native: bool = True) -> list[bytes]:
    """One record per row of `states`."""
    _check_states(states, writable=False)
    if not use_native:
        out = []
        for row in states:
            idx = np.flatnonzero(row)
            out.append(MAGIC + len(idx).to_bytes(2, "little") + idx.astype("<u2").tobytes()
                       + row[idx].astype("<f8").tobytes())
        return out
    from . import _sparse
    return _sparse.encode(states)


def decode_rows(records: Sequence[bytes | None], states: np.ndarray, use_native: bool = True) -> np.ndarray:
    """Overwrite row i of `states` with record i; None or b"" leaves row i as it is."""
    _check_states(states, writable=True)
    if len(records) != states.shape[0]:
        raise ValueError(f"records: {len(records)} for {states.shape[0]} rows")
    if not use_native:
        size = states.shape[1]
        for i, rec in enumerate(records):
            if not rec:
                continue
            n = int.from_bytes(rec[2:4], "little") if len(rec) >= 4 else -1
            if rec[:2] != MAGIC or n > size or len(rec) != 4 + 10 * n:
                raise ValueError(f"records[{i}]: not a sparse record for rows of {size} slots")
            idx = np.frombuffer(rec, "<u2", n, 4).astype(np.intp)
            if n and idx.max() >= size:
                raise ValueError(f"records[{i}]: index {idx.max()} outside rows of {size} slots")
            states[i] = 0.0
            states[i, idx] = np.frombuffer(rec, "<f8", n, 4 + 2 * n)
        return states
    from . import _sparse
    bad = _sparse.decode(records if isinstance(records, list) else list(records), states)
    if bad >= 0:
        raise ValueError(f"records[{bad}]: not a sparse record for rows of {states.shape[1]} slots")
    return states
