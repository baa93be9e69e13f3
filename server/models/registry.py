"""Which bundle version serves: atomic swaps, rollback, and agreement between worker processes.

The active version is a pointer in the store's `meta` table, so every worker process of one
server (they share the data dir) follows it: the worker that receives a push or rollback
validates and swaps first, then moves the pointer; the others poll it and swap within
`bundle_poll_seconds`. A swap is one reference assignment: a batch that already took the old
bundle finishes on it, the next batch takes the new one.

A canary (`canary.CanarySplit`) is a second slot agreed the same way: its record in `meta`
names the version and the share of users it serves; every worker loads that bundle and splits
users by the canary's keyed hash. Promoting moves the active pointer to the canary and ends it
in one write transaction; aborting ends it; a new active version (push, rollback) ends it too.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .. import durable, metrics
from ..background import Background
from ..config import Settings
from ..contexts import carried
from ..errors import FailedPrecondition, NotFound
from ..files import private_tree
from ..processes import owner_alive, process_started
from ..store import Store
from ..store.keys import (
    BUNDLE_ACTIVE,
    BUNDLE_FALLBACK,
    BUNDLE_HISTORY,
    WORKER_PREFIX,
    worker_key,
    worker_pid,
)
from ..store.lock import locked_dir
from ..validation import check_version
from .backoff import LoadBackoff
from .bundle import Bundle, bundle_dirs, load_bundle
from .canary import Canary, CanarySplit
from .canary_records import CanaryRecords
from .pseudonyms import RawIds, hash_bundle, hash_stored
from .staging import checked_manifest, claimed, leftover_name, remove_unclaimed, sweep_leftovers

__all__ = ["ModelRegistry"]

logger = logging.getLogger("tailor.models.registry")


class ModelRegistry:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.bundles_dir = settings.bundles_dir
        durable.make_dirs(self.bundles_dir)
        self._active: Bundle | None = None
        self._canary: Canary | None = None
        self.canaries = CanaryRecords(store)
        self._swap_lock = asyncio.Lock()
        self._prunes: set[asyncio.Future] = set()
        """The prunes running in threads, which `stop` waits for (they read the store)."""
        self._background = Background()
        """The active pointer's poll (`_follow_pointer`); `stop` waits for a load under way."""
        self._backoff = LoadBackoff()
        self._canary_backoff = LoadBackoff()
        """Attempts at loading the running canary's bundle (by canary id) that failed."""
        self._falling_back_from = ""
        """The active version `start` could not load, while it records another instead
        (`_record_txn` then keeps `BUNDLE_FALLBACK`)."""
        self._checks: list[Callable[[Bundle], None]] = []
        self._amenders: list[Callable[[Bundle], Bundle]] = []
        self._id_checks: list[RawIds] = []

    # -- reading -------------------------------------------------------------------------
    def current(self) -> Bundle:
        bundle = self._active
        if bundle is None:
            raise FailedPrecondition("no model bundle is loaded: push one with "
                                     "`python -m training push BUNDLE --server HOST:PORT`")
        return bundle

    @property
    def active(self) -> Bundle | None:
        return self._active

    @property
    def canary(self) -> Canary | None:
        """The canary this worker serves (None when none runs)."""
        return self._canary

    def canary_record(self) -> CanarySplit | None:
        """The running canary as the store says (every worker follows it)."""
        return self.canaries.running()

    def history(self) -> list[str]:
        raw = self.store.get("meta", BUNDLE_HISTORY)
        return json.loads(raw) if raw else []

    def pointer(self) -> str:
        """The version the active pointer names ("" before any): what every worker serves once
        it has followed it, which this worker may not have yet (`bundle_poll_seconds`, a load)."""
        raw = self.store.get("meta", BUNDLE_ACTIVE)
        return raw.decode() if raw else ""

    def previous_version(self) -> str:
        """The plain rollback's target: the latest version served before the one the active
        pointer names (this worker's own while none does) that is still stored (`bundles_kept`
        prunes older ones); "" when none is. Not before this worker's active version: a worker
        still loading a push, or failing to, would name the version pushed."""
        active = self.pointer() or (self._active.version if self._active else None)
        stored = set(self.available_versions())
        for version in reversed(self.history()):
            if version != active and version in stored:
                return version
        return ""

    def available_versions(self) -> list[str]:
        return [path.name for path in reversed(bundle_dirs(self.bundles_dir))]

    def add_check(self, check: Callable[[Bundle], None]) -> None:
        """`check(bundle)` runs on every bundle this process loads (pushed, activated, followed)
        before it serves: it raises FailedPrecondition to refuse the bundle (erasure: a bundle
        that still holds erased users, `server.interfaces.BundleGate`)."""
        self._checks.append(check)

    def add_ids_check(self, check: RawIds) -> None:
        """`check(manifest, user_ids)` sees the raw ids of every stored bundle (one imported
        with `--bundle`) that the start rewrites to keyed hashes (`pseudonyms.hash_stored`),
        before they are gone: erasure queues the erased users it holds for the scrub."""
        self._id_checks.append(check)

    def _ids_seen(self, manifest, user_ids: list[str]) -> None:
        for check in self._id_checks:
            check(manifest, user_ids)

    def add_amender(self, amend: Callable[[Bundle], Bundle]) -> None:
        """`amend(bundle)` returns the bundle to serve in its place (blocking; run in an
        executor before every swap): catalog updates between trainings, `server.catalog`."""
        self._amenders.append(amend)

    def load(self, path: Path, threads: int | None = None) -> Bundle:
        """`load_bundle`, every check, then user ids replaced by keyed hashes on disk, where
        they are not already (`pseudonyms`; blocking: run it in an executor)."""
        with locked_dir(self.bundles_dir, shared=True):  # no scrub rewrites it meanwhile
            bundle = load_bundle(path, self.settings.compute_threads if threads is None else threads,
                                 limits=self.settings.limits)
        for check in self._checks:
            check(bundle)
        return hash_bundle(bundle, self.bundles_dir)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Load `--bundle` (or refuse to start), else what the store points at, else the
        versions served before it (latest first), else the newest valid stored bundle."""
        sweep_leftovers(self.bundles_dir)
        # a tally under this pid is a dead worker's (a restarted container gives pids again):
        # retired, it stays summed instead of being overwritten when this worker adopts
        self.canaries.retire(os.getpid())
        if self.settings.bundle is not None:
            await self._start_with(Path(self.settings.bundle))
            return
        first, stored = self.pointer(), self.available_versions()
        # the versions served before it, latest first (a version rolled back from left the
        # history: it comes after them), then the other stored ones, newest first
        others = dict.fromkeys(v for v in [*self.history()[::-1], *stored]
                               if v in stored and v != first)
        candidates = ([(first, False)] if first else []) + [(v, True) for v in others]
        await asyncio.to_thread(hash_stored, self.bundles_dir, self._ids_seen)
        for version, record in candidates:
            self._falling_back_from = first if record else ""
            try:
                await self.activate(version, record=record)
                break
            except (FailedPrecondition, NotFound) as err:  # refused, or its directory is gone
                if record:
                    logger.warning("cannot serve stored bundle %s: %s", version, err)
                else:  # the active one (an upgrade's stricter checks, a lowered id limit)
                    logger.error("cannot serve the active bundle %s: %s; serving the latest "
                                 "version served before it that passes instead, else the "
                                 "newest stored one (push or roll back to choose)", version, err)
            finally:
                self._falling_back_from = ""
        if self._active is None:
            logger.warning("no valid bundle under %s: Recommend answers FAILED_PRECONDITION "
                           "until one is pushed", self.bundles_dir)
        else:
            await self._follow_canary_logged()
        self._poll()

    def fell_back(self) -> dict | None:
        """The start's fallback the store records ({from, to, at}: it could not load the active
        version `from` and serves `to` instead), until a version is recorded again (a push,
        rollback, promotion, --bundle); else None. Only while the pointer still names `to`: an
        older release, which knows no such record, moves the pointer and leaves it there."""
        meta = self.store.table("meta")
        with self.store.read() as txn:
            raw, pointer = meta.get(txn, BUNDLE_FALLBACK), meta.get(txn, BUNDLE_ACTIVE)
        record = json.loads(raw) if raw else None
        return record if record and pointer == record["to"].encode() else None

    def _report_failing(self) -> None:
        """`tailor_bundle_load_failing` (this worker's loads) and `tailor_bundle_fallback` (the
        store's record: a start that fell back moved the pointer, so no load fails after it)."""
        metrics.report_load_failing(self._backoff.failing, self._canary_backoff.failing,
                                    self.fell_back() is not None)

    def _poll(self) -> None:
        # the gauge from the start (0: nothing fails yet), not from the first pass half a second
        # later: a scrape meanwhile, a dashboard or an alert rule, found no such series
        self._report_failing()
        self._background.every(self.settings.bundle_poll_seconds, self._follow_pointer,
                               "could not follow the active bundle pointer", first=False,
                               log=logger)

    async def stop(self) -> None:
        await self._background.stop()
        if self._prunes:  # one whose swap's call was cancelled goes on in its thread
            await asyncio.wait(self._prunes)
        self.store.delete("meta", worker_key(os.getpid()))
        self.canaries.retire(os.getpid())  # its counts stay summed (`CanaryMonitor.publish`)

    async def _start_with(self, src: Path) -> None:
        """Serve `--bundle` or refuse to start (FailedPrecondition naming it): a server told
        which bundle to serve does not serve none instead. A copy imported for it goes."""
        try:
            dest, imported = self._import_dir(src)
        except FailedPrecondition as err:  # its manifest, or a version no directory may have
            raise FailedPrecondition(f"--bundle {src}: {err}") from None
        await asyncio.to_thread(hash_stored, self.bundles_dir, self._ids_seen)
        try:
            await self.activate(dest.name, record=True)
        except (FailedPrecondition, NotFound) as err:
            if imported:
                shutil.rmtree(dest, ignore_errors=True)
            raise FailedPrecondition(f"--bundle {src}: {err}") from None
        await self._follow_canary_logged()
        self._poll()

    def _import_dir(self, src: Path) -> tuple[Path, bool]:
        """The stored copy of bundle `src` (made unless there is one); True if made here."""
        manifest = checked_manifest(src, self.settings.limits)
        dest = self.bundles_dir / manifest.version
        if src.resolve() != dest.resolve() and not dest.exists():
            tmp = self.bundles_dir / leftover_name("import", manifest.version)
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            private_tree(tmp)  # the operator's copy's modes, 0644: ours are 0600 (server.files)
            durable.fsync_tree(tmp)  # on disk before it is named, as a push's (`staging`)
            try:
                os.replace(tmp, dest)
            except OSError:  # another worker imported the same version first
                shutil.rmtree(tmp, ignore_errors=True)
                if not dest.is_dir():
                    raise
            else:
                durable.fsync_path(self.bundles_dir)  # the name, before the pointer names it
                return dest, True
        return dest, False

    # -- changing the active version -------------------------------------------------------
    async def activate(self, version: str, record: bool = True, back: bool = False) -> Bundle:
        """Validate and load `version` from disk, swap it in, and (if `record`) move the pointer
        (`back`: as a rollback, `_record_txn`); the version is held (`staging.claimed`) until
        then, so another worker's prune cannot remove what the pointer is about to name."""
        path = self.bundles_dir / version
        if not path.is_dir():
            raise NotFound("bundle version", version)
        if self._active is not None and self._active.version == version:
            return await self.install(self._active, record, back)
        canary = self._canary
        if canary is not None and canary.bundle.version == version:  # promoted elsewhere
            return await self.install(canary.bundle, record, back)
        held = await asyncio.to_thread(claimed, path)  # no prune removes it meanwhile
        if held is None:
            raise NotFound("bundle version", version)
        try:
            bundle = await asyncio.to_thread(self.load, path)
            return await self.install(bundle, record, back)
        finally:
            os.close(held)

    async def _amended(self, bundle: Bundle) -> Bundle:
        """`bundle` as every amender would serve it (catalog updates; in an executor)."""
        for amend in self._amenders:
            bundle = await asyncio.to_thread(amend, bundle)
        return bundle

    async def install(self, bundle: Bundle, record: bool = True, back: bool = False) -> Bundle:
        """Swap an already validated bundle in (one reference assignment), amended under the
        swap lock: an update applied meanwhile to the bundle it replaces (`swap`) is either
        swapped in before the amend reads the store, or refused after the install (and applied
        again to the new bundle, `Catalog.refresh`); none is lost with the old bundle."""
        async with self._swap_lock:
            bundle = await self._amended(bundle)
            ended = record and self._record(bundle.version, back)  # a failed write swaps nothing
            previous, self._active = self._active, bundle
            metrics.report_model(bundle.version, _format(bundle),
                                 previous and previous.version, previous and _format(previous))
            if ended:
                self._adopt(None)  # a new active version ended the canary
            self._report_loaded(bundle.version)
        if record:  # a recorded version set or cleared the fallback: said at once, not at a poll
            self._report_failing()
        logger.info("serving bundle %s", bundle.version)
        await self._pruned()
        return bundle

    def unpublish(self, version: str) -> None:
        """Remove stored `version`, which a push stored and then failed to serve, unless the
        store or this worker serves it meanwhile (a rollback to it by its name): the versions
        listed (`available_versions`: rollback targets, the newest valid at start) are ones a
        push or `--bundle` served or staged."""
        split = self.canary_record()
        served = {self.pointer(), split.version if split else "",
                  self._active.version if self._active else ""}
        if version not in served:
            shutil.rmtree(self.bundles_dir / version, ignore_errors=True)
            logger.info("bundle %s removed: its push failed", version)

    async def swap(self, served: Bundle, amended: Bundle) -> bool:
        """Serve `amended` (the same version) instead of `served`, unless another bundle took
        its place meanwhile; True when it did."""
        async with self._swap_lock:
            if self._active is not served:
                return False
            self._active = amended
        return True

    async def swap_canary(self, served: Bundle, amended: Bundle) -> bool:
        """Serve `amended` (the same version) as the canary instead of `served`, unless the
        canary changed meanwhile; True when it did."""
        async with self._swap_lock:
            canary = self._canary
            if canary is None or canary.bundle is not served:
                return False
            self._canary = Canary(canary.split, amended)
        return True

    async def rollback(self, version: str = "") -> Bundle:
        """Serve `version` again (default: the previous one). Only a version this server itself
        published (a bundle directory it lists) is accepted: never a path."""
        if version:
            check_version("version", version, self.settings.limits.bundle_version_chars)
            if version not in self.available_versions():
                raise NotFound("bundle version", version)
        target = version or self.previous_version()
        if not target:
            raise FailedPrecondition("no previous bundle version to roll back to")
        bundle = await self.activate(target, back=True)
        await self._wait_logged(bundle.version)
        return bundle

    async def _wait_logged(self, version: str) -> None:
        """`wait_for_workers`, as a push does: say so in the log when some worker lags."""
        if not await self.wait_for_workers(version):
            logger.warning("not every worker reported bundle %s in time", version)

    def _record(self, version: str, back: bool = False) -> bool:
        return self.store.write(lambda txn: self._record_txn(txn, version, back))

    def _record_txn(self, txn, version: str, back: bool = False) -> bool:
        """Point at `version` and append it to the history (`back`, a rollback to a version
        the history holds: drop the versions after it, those rolled back from, so the next
        rollback goes further back); a new active version (not the same one recorded again,
        as a restarted worker does) ends a running canary: True if so. A start falling back
        from the active version it could not load records that (`BUNDLE_FALLBACK`, which
        `tailor_bundle_fallback` reports); any other recording is a choice and clears it."""
        meta = self.store.table("meta")
        if self._falling_back_from:
            meta.put(txn, BUNDLE_FALLBACK, json.dumps({
                "from": self._falling_back_from, "to": version, "at": time.time()}).encode())
        else:
            meta.delete(txn, BUNDLE_FALLBACK)
        raw = meta.get(txn, BUNDLE_HISTORY)
        history = json.loads(raw) if raw else []
        if back and version in history:
            del history[history.index(version):]
        history = [v for v in history if v != version]
        history.append(version)
        meta.put(txn, BUNDLE_HISTORY, json.dumps(history[-50:]).encode())
        changed = meta.get(txn, BUNDLE_ACTIVE) != version.encode()
        meta.put(txn, BUNDLE_ACTIVE, version.encode())
        return changed and self.canaries.end_in(txn)

    # -- the canary slot --------------------------------------------------------------------
    async def start_canary(self, bundle: Bundle, share: float,
                           outcomes: Callable[[str], tuple[int, int]] | None = None) -> CanarySplit:
        """Serve the validated `bundle` to `share` (0..1) of users besides the active version;
        `outcomes(version)` (the impression log's totals) is the baseline the guardrails
        count the two versions' outcomes from. The canary runs beside the version active
        once it holds the swap lock (a push or rollback installing meanwhile goes first), and
        only while the store points at it (another worker may have moved the pointer)."""
        async with self._swap_lock:  # amended as `install` amends
            stable = self.current()
            if bundle.version == stable.version:
                raise FailedPrecondition(f"bundle {bundle.version!r} is already the active version")
            bundle = await self._amended(bundle)  # the catalog's removals hold for its users too
            baseline = {} if outcomes is None else {
                v: tuple(outcomes(v)) for v in (stable.version, bundle.version)}
            split = CanarySplit.new(bundle.version, stable.version, share, baseline)
            self.canaries.start(split)
            self._adopt(Canary(split, bundle))
        await self._pruned()
        return split

    async def end_canary(self, promote: bool, version: str = "", canary_id: str = "",
                         wait: bool = False) -> CanarySplit:
        """Promote or abort the running canary (the one of `version` / `canary_id`, when given):
        one write transaction that refuses when none runs, so it never ends twice. `wait`: it
        returns once every worker serves the canary's version (promoted) or no longer serves
        the canary (aborted), as the RPCs do."""
        bundle = await self._promoted(version, canary_id) if promote else None

        def moved(txn, split: CanarySplit) -> None:
            if bundle is None or bundle.version != split.version:
                raise FailedPrecondition(f"canary {split.version!r} started meanwhile: "
                                         "promote it again")
            self._record_txn(txn, split.version)
        split = self.canaries.end(version, canary_id, moved if promote else None)
        if bundle is not None:
            await self.install(bundle, record=False)
        self._adopt(None)
        if wait and not await self.wait_for_workers(self.current().version, dropped=split.id):
            logger.warning("not every worker left canary %s in time", split.version)
        logger.info("canary %s %s", split.version, "promoted" if promote else "aborted")
        await self._pruned()  # an aborted canary is one more stored version
        return split

    async def _promoted(self, version: str, canary_id: str) -> Bundle | None:
        """The running canary's bundle (the one of `version` / `canary_id`), this worker's or
        loaded from disk, before a promotion writes anything: a worker that cannot load it
        refuses the promotion instead of pointing every worker at it. None when no such canary
        runs (`CanaryRecords.end` says so)."""
        split, local = self.canary_record(), self._canary
        if split is None or (version and version != split.version) \
                or (canary_id and canary_id != split.id):
            return None
        if local is not None and local.split.id == split.id:
            return local.bundle
        return await asyncio.to_thread(self.load, self.bundles_dir / split.version)

    def _adopt(self, canary: Canary | None) -> None:
        """Serve `canary` (None: none) and say so in the store (`wait_for_workers`)."""
        dropped, self._canary = self._canary, canary
        if dropped is not None and canary is None:
            self.canaries.retire()  # its tally stays summed; `has` says it is left
        if canary is not None:
            self.canaries.adopted(canary.split.id)
            logger.info("serving canary %s to %.1f%% of users", canary.split.version,
                        100 * canary.split.share)

    async def _follow_canary(self) -> None:
        split, local = self.canary_record(), self._canary
        if split is None or self._active is None or split.stable != self._active.version:
            self._canary_backoff.loaded()  # no canary of this worker's active version to load
            if local is not None:
                self._adopt(None)
            return
        if (local is None or local.split.id != split.id) \
                and self._canary_backoff.due(split.id, time.monotonic()):
            await self._attempt(split.id, self._canary_backoff, lambda: self._load_canary(split),
                                f"bundle {split.version} of the running canary",
                                f"the active {self._active.version} to all its users")

    async def _load_canary(self, split: CanarySplit) -> None:
        bundle = await asyncio.to_thread(self.load, self.bundles_dir / split.version)
        async with self._swap_lock:  # amended as `install` amends
            self._adopt(Canary(split, await self._amended(bundle)))

    async def _follow_canary_logged(self) -> None:
        try:
            await self._follow_canary()
        except asyncio.CancelledError:
            raise
        except Exception:  # serve the active version to everyone; say why
            logger.exception("could not follow the running canary")

    def _report_loaded(self, version: str) -> None:
        self.store.put("meta", worker_key(os.getpid()), worker_report(version))

    async def wait_for_workers(self, version: str, timeout: float = 60.0,
                               canary_id: str = "", dropped: str = "") -> bool:
        """Wait until every live worker process of this data dir reports serving `version`
        (and, given `canary_id`, that canary; given `dropped`, no longer that one). A plain
        wait for `version` ends in FailedPrecondition when the active pointer moves to another
        version meanwhile (a push or rollback elsewhere): no worker would ever serve it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (canary_id or dropped):
                self._check_still_active(version)
            lagging = []
            for key, value in self.store.scan("meta", WORKER_PREFIX):
                pid = worker_pid(key)
                served, started = read_worker_report(value)
                if not owner_alive(pid, started):  # a dead worker's, or its pid went to another
                    self.store.delete("meta", key)
                elif (served != version
                      or (canary_id and not self.canaries.has(pid, canary_id))
                      or (dropped and self.canaries.has(pid, dropped))):
                    lagging.append(pid)
            if not lagging:
                return True
            await asyncio.sleep(0.05)
        return False

    def _check_still_active(self, version: str) -> None:
        pointer = self.pointer()
        if pointer and pointer != version:
            raise FailedPrecondition(
                f"bundle {version} was superseded by {pointer} (pushed or rolled back "
                f"meanwhile) before every worker served it; {version} is stored: roll back to "
                "it to serve it")

    async def _follow_pointer(self) -> None:
        """Serve the version the active pointer names, and the canary the store records (a
        pass every `bundle_poll_seconds`; one that fails keeps the old bundle)."""
        version = self.pointer()
        if self._active is not None and version == self._active.version:
            self._backoff.loaded()  # a version that failed before is tried at once if named again
        elif version and self._backoff.due(version, time.monotonic()):
            await self._follow(version, self._backoff)
        await self._follow_canary()
        self._report_failing()

    async def _follow(self, version: str, backoff: LoadBackoff) -> None:
        """Activate the pointer's `version`; a failure keeps the old bundle (`_attempt`)."""
        await self._attempt(version, backoff, lambda: self.activate(version, record=False),
                            f"bundle {version}, which the active pointer names",
                            self._active.version if self._active else "no bundle")

    @staticmethod
    async def _attempt(key: str, backoff: LoadBackoff, load: Callable[[], Awaitable[object]],
                       what: str, meanwhile: str) -> None:
        """`load()` (of `what`, the attempt `key` of `backoff`); a failure is logged in full
        once, then in one line per attempt, each later than the last (`LoadBackoff`), while
        `meanwhile` serves."""
        try:
            await load()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if backoff.failed(key, time.monotonic()):
                logger.exception("could not load %s; serving %s meanwhile", what, meanwhile)
            else:
                logger.warning("still cannot load %s (%s: %s); next try in %.0f s",
                               what, type(err).__name__, err, backoff.delay)
        else:
            backoff.loaded()

    async def _pruned(self) -> None:
        """`_prune` in a thread: removing a version of gigabytes takes the disk a while, which
        every call of this worker would wait for on the event loop. A call cancelled meanwhile
        leaves it running: `stop` waits for it before the store closes."""
        future = asyncio.get_running_loop().run_in_executor(None, carried(self._prune))
        self._prunes.add(future)
        future.add_done_callback(self._prunes.discard)
        await asyncio.shield(future)

    def _prune(self) -> None:
        """Keep `bundles_kept` versions on disk: always the active (this worker's and the
        pointer's), the previous one (the rollback target), a running canary's and those a push
        holds (stored, not yet served: `remove_unclaimed`), then the newest others. Each is
        asked again as it is removed: a rollback to it may have been recorded since."""
        keep = self._kept()
        others = [v for v in self.available_versions() if v not in keep]
        for version in others[max(self.settings.bundles_kept - len(keep), 0):]:
            remove_unclaimed(self.bundles_dir / version, lambda v=version: v in self._kept())

    def _kept(self) -> set[str]:
        """The versions a prune always keeps (`_prune`)."""
        split = self.canary_record()
        return {self._active.version if self._active else "", self.pointer(),
                self.previous_version(), split.version if split else ""} - {""}



def worker_report(version: str) -> bytes:
    """This worker's registry entry (`worker␟<pid>`): the version it serves and, after a
    space, when the process started (`processes.process_started`; left out without /proc)."""
    started = process_started(os.getpid())
    return (version if started is None else f"{version} {started}").encode()


def read_worker_report(raw: bytes) -> tuple[str, int | None]:
    """(version served, when the worker started, or None) of a `worker_report` (layout 1, the
    version alone, has no start time: its pid alone says whether it runs)."""
    version, _, started = raw.decode().partition(" ")
    return version, int(started) if started.isdigit() else None


def _format(bundle: Bundle) -> str:
    return str(bundle.manifest.raw.get("format", ""))

