"""Transport-agnostic profile operations; the Recommend path reads live histories from here."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf

from ..batching import AdaptiveBatcher
from ..errors import InvalidArgument, NotFound
from ..store import Store
from .events import EventRules, TrackedEvent, check_event
from .records import EventRecords
from .repository import IngestResult, ProfileRepository
from .schema import CHANNELS, PII_KEYS, ProfileSchema, item_code

__all__ = ["Profiles", "TrackResult", "ProfileView"]

logger = logging.getLogger("tailor.profiles")


@dataclass
class TrackResult:
    accepted_ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class ProfileView:
    user_id: str
    attributes: dict
    consent: dict
    features: dict | None
    recent_items: list[tuple[str, float, float]]
    events: list[bytes]
    pii_masked: bool
    created_at: float
    updated_at: float
    category_names: dict[int, str] = field(default_factory=dict)
    """Name of each category code in `features["category_affinity"]`."""


def mask(value: str) -> str:
    if "@" in value:
        name, _, domain = value.partition("@")
        return f"{name[:1]}***@{domain}"
    return value[:1] + "***" if len(value) > 1 else "***"


class Profiles:
    def __init__(self, store: Store, registry, schema: ProfileSchema = ProfileSchema(),
                 rules: EventRules = EventRules(), history_half_life_days: float = 30.0):
        self.layout = schema.layout()
        self.repo = ProfileRepository(store, self.layout)
        self.registry = registry
        self.rules = rules
        self.half_life_s = history_half_life_days * fl.DAY
        # Concurrent TrackEvents calls share one write transaction (one fsync).
        self._writer = AdaptiveBatcher(self._ingest_many, max_size=64, max_wait=0.0, concurrency=1,
                                       name="ingest")
        self._code_rows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._category_names: dict[int, str] = {}  # codes never change once assigned
        self.listeners: list[Callable[[list[TrackedEvent]], Awaitable[None]]] = []
        """Called with the newly accepted events of each call (e.g. campaign rewards)."""

    # -- ingestion -------------------------------------------------------------------------
    def _categories(self, events: Sequence[TrackedEvent]) -> list[str | None]:
        """Each event's item category in the active bundle (None: no bundle, item or category)."""
        bundle = self.registry.active
        if bundle is None:
            return [None] * len(events)
        rows = [bundle.item_row.get(ev.item_id, -1) if ev.item_id else -1 for ev in events]
        if all(r < 0 for r in rows):
            return [None] * len(events)
        names = bundle.items["category_names"][bundle.item_category[rows]].tolist()
        return [str(name) if r >= 0 else None for name, r in zip(names, rows)]

    def _ingest_many(self, batches: Sequence[EventRecords]) -> list[IngestResult]:
        result = self.repo.write_events(EventRecords.concat(batches))
        if not result.duplicates:
            return [IngestResult(list(range(len(b))), []) for b in batches]
        out, start, acc, dup = [], 0, set(result.accepted), set(result.duplicates)
        for batch in batches:
            idx = range(start, start + len(batch))
            out.append(IngestResult([i - start for i in idx if i in acc], [i - start for i in idx if i in dup]))
            start += len(batch)
        return out

    async def track(self, events: Sequence[TrackedEvent], offset: int = 0) -> TrackResult:
        now = time.time()
        result, valid = TrackResult(), []
        for i, ev in enumerate(events):
            problem = check_event(ev, self.rules, now)
            if problem:
                result.rejected.append((offset + i, ev.event_id, problem))
            else:
                valid.append(ev)
        if valid:
            records = EventRecords.build(valid, self._categories(valid))
            stored = await self._writer.submit(records)
            result.accepted_ids = [valid[i].event_id for i in stored.accepted]
            result.duplicates = len(stored.duplicates)
            accepted = [valid[i] for i in stored.accepted]
            for ev in accepted:
                if ev.type == "unsubscribe":
                    await self.set_consent(ev.user_id, ev.channel, False, "unsubscribe event", ev.timestamp)
            for listener in self.listeners:
                await listener(accepted)
        return result

    # -- attributes, consent, erasure ----------------------------------------------------------
    async def upsert_attributes(self, user_id: str, attributes: dict[str, str]) -> None:
        _check_user(user_id)
        if len(attributes) > 64 or any(len(k) > 64 or len(v) > 1024 for k, v in attributes.items()):
            raise InvalidArgument("attributes", "at most 64 keys, keys <= 64 and values <= 1024 chars")

        def change(meta):
            for k, v in attributes.items():
                if v:
                    meta["attributes"][k] = v
                else:
                    meta["attributes"].pop(k, None)
        await asyncio.to_thread(self.repo.update_meta, user_id, change)

    async def set_consent(self, user_id: str, channel: str, opted_in: bool, source: str,
                          timestamp: float = 0.0) -> None:
        _check_user(user_id)
        if channel not in CHANNELS:
            raise InvalidArgument("channel", f"{channel!r} is unknown (known: {', '.join(CHANNELS)})")
        ts = timestamp or time.time()

        def change(meta):
            meta["consent"][channel] = {"opted_in": bool(opted_in), "source": source, "timestamp": ts}
        await asyncio.to_thread(self.repo.update_meta, user_id, change)

    async def delete(self, user_id: str) -> int:
        _check_user(user_id)
        return await asyncio.to_thread(self.repo.delete_user, user_id)

    async def drop_expired_events(self) -> int:
        return await asyncio.to_thread(self.repo.drop_events_before, time.time() - self.rules.retention_s)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, user_id: str, max_events: int = 0, can_read_pii: bool = False) -> ProfileView:
        _check_user(user_id)
        state, meta, events = self.repo.read(user_id, max_events)  # µs: an LMDB read snapshot
        if state is None and meta is None:
            raise NotFound("profile", user_id)
        meta = meta or {"attributes": {}, "consent": {}, "created_at": 0.0, "updated_at": 0.0}
        attrs = dict(meta["attributes"])
        masked = not can_read_pii and any(k in PII_KEYS for k in attrs)
        if masked:
            attrs = {k: mask(v) if k in PII_KEYS else v for k, v in attrs.items()}
        feats, recent, names = None, [], {}
        if state is not None:
            feats = kf.read_features(self.layout, state, time.time())
            recent = self._recent_ids(state, feats["recent_ts"])
            names = self._names_of(np.flatnonzero(feats["category_affinity"].any(axis=0)).tolist())
        first = feats["first_ts"] if feats and np.isfinite(feats["first_ts"]) else 0.0
        return ProfileView(user_id, attrs, meta["consent"], feats, recent, events, masked,
                           meta.get("created_at") or first, meta.get("updated_at", 0.0), names)

    def _names_of(self, codes: list[int]) -> dict[int, str]:
        """Category names of stored codes (re-read when another worker assigned new codes)."""
        if any(c not in self._category_names for c in codes):
            self._category_names = self.repo.category_names()
        return {c: self._category_names.get(c, f"code:{c}") for c in codes}

    def _recent_ids(self, state, ts) -> list[tuple[str, float, float]]:
        """Recent items oldest first (the order of `ts`, as read_features gives it)."""
        codes, weights = kf.recent_items(self.layout, state, self.half_life_s)
        bundle = self.registry.active
        rows = self._code_row(bundle) if bundle is not None else {}
        ids = bundle.items["item_ids"] if bundle is not None else None
        out = []
        for code, w, t in zip(codes.tolist(), weights.tolist(), ts.tolist()):
            row = rows.get(code)
            out.append((str(ids[row]) if row is not None else f"code:{code}", w, t))
        return out

    def _code_row(self, bundle) -> dict[int, int]:
        table = self._code_rows.get(bundle)
        if table is None:
            table = {item_code(i): r for r, i in enumerate(bundle.items["item_ids"].tolist())}
            self._code_rows[bundle] = table
        return table

    def history_of(self, bundle, user_ids: Sequence[str]):
        """Encoder input per user: live profile items merged after the bundle's training history.

        Training-time history counts as of the bundle's data cutoff and decays from there, so a
        user's recent live behaviour dominates as it should.
        """
        states = self.repo.states(user_ids)
        rows_of = self._code_row(bundle) if any(s is not None for s in states) else {}
        cutoff = float(bundle.manifest.get("data", {}).get("cutoff", 0.0))
        out = []
        for uid, state in zip(user_ids, states):
            trained = bundle.history(uid)
            if state is None:
                out.append(trained)
                continue
            codes, w = kf.recent_items(self.layout, state, self.half_life_s, bundle.history_len)
            keep = [(rows_of[c], x) for c, x in zip(codes.tolist(), w.tolist()) if c in rows_of]
            live_rows = np.array([r for r, _ in keep], np.int64)
            live_w = np.array([x for _, x in keep], np.float32)
            if trained is not None and len(trained[0]):
                last = float(state[fl.REF_TS])
                fade = np.float32(2.0 ** (-max(last - cutoff, 0.0) / self.half_life_s))
                live_rows, live_w = _merge_items(np.concatenate([trained[0], live_rows]),
                                                 np.concatenate([trained[1] * fade, live_w]))
            out.append((live_rows[-bundle.history_len:], live_w[-bundle.history_len:]))
        return out

    def export(self, start: float = 0.0, end: float = 0.0):
        return self.repo.export(start, end)

    async def close(self) -> None:
        await self._writer.close()


def _merge_items(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One entry per item (weights summed), ordered by each item's latest position — the
    encoder's fold-in expects each item once (docs/bundle.md)."""
    uniq, inv = np.unique(rows, return_inverse=True)
    summed = np.bincount(inv, weights=weights).astype(np.float32)
    latest = np.zeros(len(uniq), np.int64)
    np.maximum.at(latest, inv, np.arange(len(rows)))
    order = np.argsort(latest, kind="stable")
    return uniq[order], summed[order]


def _check_user(user_id: str) -> None:
    if not user_id or len(user_id.encode()) > 128 or "\x1f" in user_id:
        raise InvalidArgument("user_id", "must be 1..128 bytes without control character 0x1F")
