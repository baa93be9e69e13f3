"""The frames between a writer process and its child: `<Q length><pickle>`.

Server to child: `(seq, function, queries)`. Child to server: `(seq, results)`, one result or
exception per query; seq 0 (`READY`) says the child has opened the store.
"""
from __future__ import annotations

import pickle
import struct

__all__ = ["HEADER", "READY", "frame", "take_frames"]

READY = 0
HEADER = struct.Struct("<Q")


def frame(obj) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def take_frames(buf: bytearray) -> list:
    """Unpickle and remove the complete frames at the start of `buf`."""
    out, at = [], 0
    while len(buf) - at >= HEADER.size:
        (n,) = HEADER.unpack_from(buf, at)
        if len(buf) - at - HEADER.size < n:
            break
        out.append(pickle.loads(buf[at + HEADER.size:at + HEADER.size + n]))
        at += HEADER.size + n
    del buf[:at]
    return out
