"""A simulated impression log of the demo tastes world, in the format of ``training export
--impressions`` (``training demo-data --context-tastes S --impressions-per-user R``).

Without a live server, this is what a context-blind model in front of the world would log:

- requests: per user, Poisson(``R`` x activity / mean activity) of them, at times drawn like the
  world's sessions (weekends busier, two daily peaks), on the channel the world gives that user
  on that UTC day (`training.demo_tastes.session_channel`: web or app);
- shown: `K_SHOWN` distinct items per request, picked like the world's own views but *without*
  the context tilt (the user's category mix, `EXPLORE` exploration, best of popular candidates
  by taste and price), ordered by the user's true affinity: a stand-in for a good recommender
  that ignores the context (neither popularity nor a trained bundle, so the log needs no training
  first and the exposure does not depend on channel or hour);
- taken: each shown item is clicked with probability
  ``sigmoid(-2.2 + 2.5 affinity + S (A[channel, c] + D[daypart, c]))``, the world's true tilts
  (`training.demo_tastes.ContextTastes`) on the logit of the funnel's click step
  (`training.demo._funnel`);
- each click is also an event (``click``, that channel, 5 to 120 s after the request) appended
  to the world's ``interactions.csv``, as ExportEvents would hold it; the impressions carry it as
  the server's join would (``clicked`` at its position, ``first_click``, ``clicks``).

Its own random stream (``[seed, 8, chunk]``): the world's other rows are drawn as without it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from kernels.context import CHANNELS, daypart
from training.demo_tastes import ContextTastes, session_channel

__all__ = ["K_SHOWN", "EXPLORE", "LogWriter", "simulate", "write_lines", "with_clicks"]

K_SHOWN = 10
EXPLORE = 0.3
MODEL_VERSION = "demo-context-blind"
_CLICK = 1  # training.events.EVENTS.index("click")


def _distinct(picks: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` distinct values of each row (-1 where a row has fewer)."""
    order = np.argsort(picks, axis=1, kind="stable")
    srt = np.take_along_axis(picks, order, axis=1)
    first = np.ones(picks.shape, bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    keep = np.zeros(picks.shape, bool)
    np.put_along_axis(keep, order, first, axis=1)
    keep &= np.cumsum(keep, axis=1) <= k
    pos = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(keep, pos, axis=1),
                    np.take_along_axis(picks, pos, axis=1), -1)


def simulate(cfg, world, users: dict, first: int, tastes: ContextTastes, per_user: float,
             chunk: int) -> dict:
    """Requests of the chunk's users (global ids from ``first``): arrays ``user`` [R] (global),
    ``ts``, ``channel`` [R], ``items``, ``score`` and ``clicked`` [R, K_SHOWN] (-1: no item)."""
    from training.demo import ACTIVITY_MEAN, _pick_items, _session_times, _sigmoid

    rng = np.random.default_rng([cfg.seed, 8, chunk])
    n_req = rng.poisson(per_user * users["activity"] / ACTIVITY_MEAN)
    who = np.repeat(np.arange(n_req.shape[0]), n_req)
    ts = _session_times(rng, cfg, who.shape[0])
    channel = session_channel(who + first, ts, cfg.seed)
    picks = _pick_items(rng, world, cfg, users, np.repeat(who, 2 * K_SHOWN), explore=EXPLORE)
    items = _distinct(picks.reshape(-1, 2 * K_SHOWN), K_SHOWN)
    aff = np.einsum("nd,nkd->nk", users["taste"][who], world.item_vec[np.maximum(items, 0)])
    aff = np.where(items >= 0, aff, -np.inf)
    order = np.argsort(-aff, axis=1, kind="stable")
    items, aff = np.take_along_axis(items, order, 1), np.take_along_axis(aff, order, 1)
    cat = world.category[np.maximum(items, 0)]
    tilt = tastes.channel[channel[:, None], cat] + tastes.part[daypart(ts)[:, None], cat]
    p = _sigmoid(-2.2 + 2.5 * np.where(items >= 0, aff, 0.0) + tastes.strength * tilt)
    clicked = (rng.random(items.shape) < p) & (items >= 0)
    return {"user": who.astype(np.int64) + first, "ts": ts.astype(np.int64), "channel": channel,
            "items": items, "score": np.where(items >= 0, aff, 0.0), "clicked": clicked,
            "click_ts": ts[:, None] + rng.integers(5, 120, items.shape)}


def _record(sim: dict, r: int, seed: int) -> dict:
    uid = str(int(sim["user"][r]))
    shown = [{"item_id": str(int(i)), "position": p + 1, "score": round(float(s), 6),
              "clicked": bool(c), "carted": False, "purchased": False}
             for p, (i, s, c) in enumerate(zip(sim["items"][r], sim["score"][r], sim["clicked"][r]))
             if i >= 0]
    clicks = [s["position"] for s in shown if s["clicked"]]
    return {"request_id": f"demo-{seed}-{uid}-{int(sim['ts'][r])}-{r}",
            "user_ref": "demo:" + hashlib.blake2b(uid.encode(), digest_size=16).hexdigest(),
            "user_id": uid, "timestamp": float(sim["ts"][r]), "model_version": MODEL_VERSION,
            "channel": CHANNELS[int(sim["channel"][r])], "context": {}, "cold_start": False,
            "items": shown, "first_click": min(clicks, default=0), "clicks": len(clicks),
            "add_to_carts": 0, "purchases": 0, "revenue": 0.0}


def write_lines(fh, sim: dict, seed: int) -> int:
    """Write the requests of ``sim`` as impressions.jsonl lines; returns how many."""
    for r in range(sim["user"].shape[0]):
        fh.write(json.dumps(_record(sim, r, seed), separators=(",", ":")))
        fh.write("\n")
    return int(sim["user"].shape[0])


def with_clicks(events: dict, sim: dict) -> dict:
    """The chunk's event columns (`training.demo.user_events`) with the clicks of ``sim``
    appended as ``click`` rows on the request's channel, sorted again by (user, ts, event)."""
    hit = sim["clicked"]
    add = {"user_id": np.broadcast_to(sim["user"][:, None], hit.shape)[hit],
           "item_id": sim["items"][hit], "timestamp": sim["click_ts"][hit].astype(np.int64),
           "event": np.full(int(hit.sum()), _CLICK, np.int8), "value": np.zeros(int(hit.sum())),
           "channel": np.broadcast_to(sim["channel"][:, None], hit.shape)[hit]}
    cols = {k: np.concatenate([events[k], add[k].astype(events[k].dtype)]) for k in events}
    order = np.lexsort((cols["event"], cols["timestamp"], cols["user_id"]))
    return {k: v[order] for k, v in cols.items()}


class LogWriter:
    """The world's impressions.jsonl (`simulate`), written chunk by chunk; a no-op when off."""

    def __init__(self, out: Path, cfg, world, strength: float, per_user: float):
        self.cfg, self.world, self.per_user, self.n = cfg, world, per_user, 0
        self.path = out / "impressions.jsonl"
        self.fh = open(self.path, "w") if per_user > 0 else None
        self.tastes = (ContextTastes(cfg.seed, world.centroids.shape[0], strength)
                       if per_user > 0 else None)

    def chunk(self, users: dict, events: dict, chunk: int) -> dict:
        if self.fh is None:
            return events
        sim = simulate(self.cfg, self.world, users, chunk * self.cfg.chunk_users, self.tastes,
                       self.per_user, chunk)
        self.n += write_lines(self.fh, sim, self.cfg.seed)
        return with_clicks(events, sim)

    def close(self) -> dict:
        if self.fh is None:
            return {}
        self.fh.close()
        return {"impressions": str(self.path), "n_impressions": self.n}
