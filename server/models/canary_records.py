"""The canary's records in the store's `meta` table: the running canary and each worker's tally.

    bundle/canary   JSON of the running `CanarySplit` (absent: none runs)
    canary␟<pid>    JSON {id, versions}: a worker's Recommend tally for canary `id`; written
                    (empty) when the worker adopts the canary, so a push can wait for every
                    worker, then every guardrail check
    canary␟<pid>.<random>   the same, of a worker that stopped (`retire`), or that died and
                    whose pid a starting worker took (`ModelRegistry.start`): still summed

Transaction rules: starting refuses a running canary and clears the last one's tallies in the
same write transaction that stores the new record; ending reads, checks and deletes the record
in one write transaction (the caller may add its own writes, promotion's pointer move, to it),
so a canary is started once and ended once however many workers race.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

from ..errors import FailedPrecondition
from ..store import Store
from ..store.keys import BUNDLE_ACTIVE, BUNDLE_CANARY, CANARY_REPORT_PREFIX, canary_report_key
from .canary import CanarySplit

__all__ = ["CanaryRecords"]


class CanaryRecords:
    def __init__(self, store: Store):
        self.store = store
        self.meta = store.table("meta")

    def running(self) -> CanarySplit | None:
        raw = self.store.get("meta", BUNDLE_CANARY)
        return CanarySplit.decode(raw) if raw else None

    def start(self, split: CanarySplit) -> None:
        """Store `split` as the running canary; FailedPrecondition if one runs, or if the
        active pointer no longer names `split.stable` (a push or rollback in another worker:
        no worker would serve the canary, whose record would refuse every later one)."""
        def txn_fn(txn):
            running = self.meta.get(txn, BUNDLE_CANARY)
            if running is not None:
                raise FailedPrecondition(f"canary {CanarySplit.decode(running).version!r} is "
                                         "running: promote or abort it first")
            active = self.meta.get(txn, BUNDLE_ACTIVE)
            if active is not None and active != split.stable.encode():
                raise FailedPrecondition(
                    f"the active version moved from {split.stable!r} to {active.decode()!r} "
                    "(pushed or rolled back meanwhile) as the canary started: push it again")
            for key, _ in self.meta.scan_prefix(txn, CANARY_REPORT_PREFIX):  # the last tallies
                self.meta.delete(txn, key)
            self.meta.put(txn, BUNDLE_CANARY, split.encode())
        self.store.write(txn_fn)

    def end(self, version: str = "", canary_id: str = "",
            also: Callable[[object, CanarySplit], object] | None = None) -> CanarySplit:
        """End the running canary (the one of `version` / `canary_id`, when given) and run
        `also(txn, split)` in the same transaction; FailedPrecondition if none or another runs."""
        def txn_fn(txn):
            raw = self.meta.get(txn, BUNDLE_CANARY)
            if raw is None:
                raise FailedPrecondition("no canary is running")
            split = CanarySplit.decode(raw)
            if (version and version != split.version) or (canary_id and canary_id != split.id):
                raise FailedPrecondition(f"the running canary is {split.version!r} "
                                         f"({split.id}), not {version or canary_id!r}")
            self.meta.delete(txn, BUNDLE_CANARY)
            if also is not None:
                also(txn, split)
            return split
        return self.store.write(txn_fn)

    def end_in(self, txn) -> bool:
        """End any running canary inside the caller's write transaction; True if one ran."""
        return self.meta.delete(txn, BUNDLE_CANARY)

    # -- tallies ---------------------------------------------------------------------------
    def report(self, encoded: bytes, pid: int | None = None) -> None:
        self.store.put("meta", canary_report_key(os.getpid() if pid is None else pid), encoded)

    def adopted(self, canary_id: str) -> None:
        """This worker serves canary `canary_id` (an empty tally)."""
        self.report(json.dumps({"id": canary_id, "versions": {}}).encode())

    def has(self, pid: int, canary_id: str) -> bool:
        """Whether worker `pid` reported serving canary `canary_id`."""
        raw = self.store.get("meta", canary_report_key(pid))
        return raw is not None and json.loads(raw).get("id") == canary_id

    def tallies(self, skip_pid: int | None = None) -> list[bytes]:
        """Every worker's encoded tally (but `skip_pid`'s)."""
        skip = canary_report_key(skip_pid) if skip_pid is not None else None
        return [raw for key, raw in self.store.scan("meta", CANARY_REPORT_PREFIX) if key != skip]

    def retire(self, pid: int | None = None) -> None:
        """A stopping worker's last tally moves to a key of its own (`canary␟<pid>.<random>`,
        summed by `tallies` until the next canary starts) and frees `canary␟<pid>`: the counts
        of a restarted server stay counted, and a worker that starts later with the same pid
        (a container's) counts apart."""
        key = canary_report_key(os.getpid() if pid is None else pid)

        def txn_fn(txn):
            raw = self.meta.get(txn, key)
            if raw is None:
                return
            self.meta.delete(txn, key)
            if json.loads(raw).get("versions"):
                self.meta.put(txn, key + b"." + uuid.uuid4().hex.encode(), raw)
        self.store.write(txn_fn)
