"""Remapping the LMDB map only while no other thread of the process has a transaction open.

py-lmdb's `Environment.set_mapsize` replaces the process's memory map and invalidates every
transaction and cursor the process has open: their next use raises "Attempt to operate on
closed/deleted/dropped object"; with another thread's write transaction open it raises itself,
and a `begin` or `info` during it fails ("Invalid argument"). A store remaps from whichever
thread finds the map full (it grows it) or grown by another process (it adopts it), while other
threads of the same process read and write (RPC threads, the ingest thread, sweeps). So every
transaction of a `Store` holds the gate (`enter`/`leave`) and a remap runs in `remap(fn)`,
which holds back new transactions and waits until no other thread has one open.

A thread may nest transactions (a read inside a write): while a remap waits, a thread that
already holds the gate enters again, so it never waits for a remap that waits for it. A remap
asked for by a thread holding the gate (its own transactions are then invalidated, as before)
could still wait for one that waits for it; after `WAIT_SECONDS` a remap runs anyway. A remap
asked for while another runs is not run: the asking thread waits for it without counting its own
holds, then tries again (`remap` returns None).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["MapGate"]

T = TypeVar("T")


class MapGate:
    """Transactions of one process hold it shared; a remap holds it alone."""

    WAIT_SECONDS = 10.0

    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._open = 0
        """Transactions (and map reads) open in this process."""
        self._remapping = False
        self._mine = threading.local()

    def enter(self) -> list[int]:
        """Hold the gate (waits while a remap runs, unless this thread holds it already);
        returns the token to pass to `leave`: this thread's count of holds (a list, so that a
        `leave` run by another thread, a generator resumed elsewhere, takes back this one)."""
        try:
            held = self._mine.held
        except AttributeError:
            held = self._mine.held = [0]
        with self._lock:
            if self._remapping and not held[0]:
                self._cond.wait_for(lambda: not self._remapping)
            self._open += 1
        held[0] += 1
        return held

    def leave(self, held: list[int]) -> None:
        held[0] -= 1
        with self._lock:
            self._open -= 1
            if self._remapping:
                self._cond.notify_all()

    def remap(self, fn: Callable[[], T]) -> T | None:
        """`fn()` (a remap) once no other thread holds the gate, none entering meanwhile; None,
        without running it, when another thread's remap was running: this thread stops
        counting its holds until that one is done (two threads that both found the map grown
        would otherwise wait for each other), and the caller tries again, as that remap may
        have done what it needed."""
        held = getattr(self._mine, "held", [0])[0]
        cond = self._cond
        with cond:
            if self._remapping:
                self._open -= held
                cond.notify_all()
                cond.wait_for(lambda: not self._remapping)
                self._open += held
                return None
            self._remapping = True
            cond.wait_for(lambda: self._open <= held, self.WAIT_SECONDS)
        try:
            return fn()
        finally:
            with cond:
                self._remapping = False
                cond.notify_all()
