"""Random ids (request ids, decision ids) without a system call for each one."""
from __future__ import annotations

import os
import threading

__all__ = ["RandomIds"]


class RandomIds:
    """Hex ids of `nbytes` random bytes each, cut from one `os.urandom` call per `batch` ids.

    `os.urandom` releases the GIL: on the event loop under load, each call can wait up to a
    switch interval to win it back from a batch thread. Worker processes are spawned, never
    forked, so no two processes share a buffer.
    """

    def __init__(self, nbytes: int, batch: int = 256):
        self._width = 2 * nbytes
        self._draw = nbytes * batch
        self._lock = threading.Lock()
        self._buf = ""
        self._pos = 0

    def __call__(self) -> str:
        with self._lock:
            if self._pos >= len(self._buf):
                self._buf, self._pos = os.urandom(self._draw).hex(), 0
            start = self._pos
            self._pos += self._width
            return self._buf[start:self._pos]
