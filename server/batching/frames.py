"""The frames between a writer process and its child: `<Q length><pickle>`.

Server to child: `(seq, function, queries)`. Child to server: `(seq, results)`, one result or
exception per query; seq 0 (`READY`) says the child has opened the store.
"""
from __future__ import annotations

import os
import pickle
import struct

__all__ = ["HEADER", "READY", "PipeReader", "frame", "take_frames"]

READY = 0
HEADER = struct.Struct("<Q")
CHUNK = 1 << 20
"""The most one read takes from the pipe."""


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


class PipeReader:
    """Reads a pipe's bytes onto `buf` through one buffer kept for the reader's life.

    `os.read(fd, CHUNK)` makes a new CHUNK-sized bytes object per read, which glibc maps and
    unmaps each time (mmap, mremap, munmap, and a page fault per page filled: 983 of each in
    983 reads of a campaigns writer under ChooseVariant load), on both ends of every batch.
    """

    __slots__ = ("fd", "buf", "_chunk", "_view")

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self._chunk = bytearray(CHUNK)
        self._view = memoryview(self._chunk)

    def fill(self) -> int:
        """Read what the pipe holds (up to CHUNK) onto `buf`; the count, 0 at end of file.
        Raises BlockingIOError as `os.read` does on a non-blocking pipe with nothing in it."""
        n = os.readv(self.fd, [self._chunk])
        self.buf += self._view[:n]
        return n
