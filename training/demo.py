"""Deterministic demo world: catalog, users with latent tastes, 60 days of shop and email events.

Everything is vectorised numpy and generated in user chunks, each chunk with its own generator
spawned from the seed, so output bytes depend only on the arguments (not on timing or threads) and
memory stays bounded at 1,000,000 users x 1,000,000 items.

Model of the world
------------------
Items belong to one of 16 categories (Zipf-skewed sizes); an item's latent vector is its category
centroid plus noise, its price is lognormal per category and its popularity is Zipf over a random
rank. A user mixes 1-3 categories, has a taste vector (mix of centroids plus noise) and a price
sensitivity. Sessions fall on days (weekends busier) at hours drawn from a two-peak daily profile.
Each viewed item is picked by choosing a category from the user's mix (10% exploration), drawing
candidates by popularity inside it and keeping the best by taste, price and Gumbel noise. Views
lead to click -> add_to_cart -> purchase with probabilities rising with affinity; weekly email
campaigns produce email_sent -> email_open -> email_click -> view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.demo_tastes import ContextTastes
from training.events import Catalog, Interactions

__all__ = ["DemoConfig", "World", "in_memory", "make_world", "start_for_end", "user_events"]

CATEGORIES = (
    "electronics", "books", "fashion", "home", "garden", "toys", "sports", "beauty",
    "grocery", "automotive", "music", "pets", "office", "health", "jewelry", "games",
)
EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "event", "value")
_HOURS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 9, 11, 10, 8, 7, 7, 8, 10, 12, 13, 11, 7, 3],
                  dtype=np.float64)
ACTIVITY_MEAN = float(np.exp(0.7 ** 2 / 2))   # mean of the lognormal activity multiplier
ROWS_PER_SESSION = 6.4
"""Measured rows per session (views and their funnel) at the default world's settings."""
EMAIL_ROWS_PER_CAMPAIGN = 0.57
"""Measured email rows (sent, open, click and their funnel) per user and weekly campaign."""


@dataclass(frozen=True)
class DemoConfig:
    """Size and shape of the demo world (defaults meet the documented minimums)."""

    n_users: int = 50_000
    n_items: int = 5_000
    n_days: int = 60
    seed: int = 0
    dim: int = 16
    start: int = 1_700_006_400  # 2023-11-15T00:00:00Z
    chunk_users: int = 25_000
    sessions_mean: float = 6.0
    views_per_session: float = 3.0
    candidates: int = 12
    taste_sharpness: float = 4.0
    events_per_user: float | None = None
    """Mean rows per user; None keeps ``sessions_mean`` (about 60 rows per user over 60 days)."""

    def session_rate(self, activity: np.ndarray) -> np.ndarray:
        """Poisson mean of each user's extra sessions over ``n_days`` (one more is always added)."""
        if self.events_per_user is None:
            return self.sessions_mean * activity * self.n_days / 60.0
        emails = EMAIL_ROWS_PER_CAMPAIGN * len(range(2, self.n_days, 7))
        shop = max(self.events_per_user - emails, 1.0)
        return max(shop / ROWS_PER_SESSION - 1.0, 0.0) / ACTIVITY_MEAN * activity


def start_for_end(end: int, n_days: int) -> int:
    """The ``start`` of a world whose days end at ``end`` (unix seconds, floored to a day)."""
    return int(end // 86_400 * 86_400) - n_days * 86_400


@dataclass
class World:
    """Ground truth shared by every user chunk."""

    category: np.ndarray      # int32 [n_items]
    item_vec: np.ndarray      # float32 [n_items, dim]
    price: np.ndarray         # float32 [n_items]
    popularity: np.ndarray    # float64 [n_items] sampling weight
    centroids: np.ndarray     # float32 [n_cats, dim]
    cat_order: np.ndarray     # int64 item codes sorted by category
    cat_start: np.ndarray     # int64 [n_cats+1] offsets into cat_order
    cat_cum: np.ndarray       # float64 cumulative popularity along cat_order


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def make_world(cfg: DemoConfig) -> World:
    """Draw the catalog side of the world from ``seed``."""
    rng = np.random.default_rng([cfg.seed, 0])
    n_cats = len(CATEGORIES)
    sizes = 1.0 / np.arange(1, n_cats + 1) ** 0.6
    category = rng.choice(n_cats, size=cfg.n_items, p=sizes / sizes.sum()).astype(np.int32)
    centroids = _unit(rng.standard_normal((n_cats, cfg.dim))).astype(np.float32)
    noise = rng.standard_normal((cfg.n_items, cfg.dim)) / np.sqrt(cfg.dim)
    item_vec = _unit(centroids[category] + 0.7 * noise).astype(np.float32)
    mu = rng.uniform(2.0, 5.5, size=n_cats)
    price = np.round(np.exp(rng.normal(mu[category], 0.5)), 2).astype(np.float32)
    popularity = 1.0 / (rng.permutation(cfg.n_items) + 1.0) ** 0.9
    cat_order = np.argsort(category, kind="stable")
    cat_start = np.searchsorted(category[cat_order], np.arange(n_cats + 1))
    cat_cum = np.cumsum(popularity[cat_order])
    return World(category, item_vec, price, popularity, centroids, cat_order, cat_start, cat_cum)


def _users(rng: np.random.Generator, n: int, world: World, cfg: DemoConfig) -> dict:
    n_cats = world.centroids.shape[0]
    n_mix = rng.choice(3, size=n, p=[0.5, 0.3, 0.2]) + 1
    keys = rng.gumbel(size=(n, n_cats)) + np.log(np.bincount(world.category, minlength=n_cats) + 1)
    top = np.argsort(-keys, axis=1)[:, :3]
    w = rng.dirichlet(np.ones(3), size=n) * (np.arange(3)[None, :] < n_mix[:, None])
    mix = np.zeros((n, n_cats))
    np.put_along_axis(mix, top, w / w.sum(axis=1, keepdims=True), axis=1)
    noise = rng.standard_normal((n, cfg.dim)) / np.sqrt(cfg.dim)
    taste = _unit(mix @ world.centroids + 0.4 * noise).astype(np.float32)
    return {"mix": mix.astype(np.float32), "taste": taste,
            "price_sens": np.exp(rng.normal(np.log(0.5), 0.5, size=n)).astype(np.float32),
            "activity": np.exp(rng.normal(0.0, 0.7, size=n))}


def _pick_items(rng, world: World, cfg: DemoConfig, users: dict, who: np.ndarray,
                explore: float, tilt: np.ndarray | None = None) -> np.ndarray:
    """One item per entry of ``who``: category from the user's mix (times ``tilt`` [n, C], the
    context tastes, when given), best of popular candidates."""
    n, n_cats = who.shape[0], world.centroids.shape[0]
    mix = users["mix"][who]
    cum = np.cumsum(mix if tilt is None else mix * tilt, axis=1)
    cat = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1).clip(0, n_cats - 1)
    wander = rng.random(n) < explore
    cat[wander] = world.category[rng.integers(0, world.category.shape[0], wander.sum())]
    lo = np.where(world.cat_start[cat] > 0, world.cat_cum[world.cat_start[cat] - 1], 0.0)
    hi = world.cat_cum[world.cat_start[cat + 1] - 1]
    u = lo[:, None] + rng.random((n, cfg.candidates)) * (hi - lo)[:, None]
    pos = np.searchsorted(world.cat_cum, u).clip(world.cat_start[cat, None],
                                                  world.cat_start[cat + 1, None] - 1)
    cand = world.cat_order[pos]
    affinity = np.einsum("nd,nkd->nk", users["taste"][who], world.item_vec[cand])
    utility = (cfg.taste_sharpness * affinity
               - users["price_sens"][who, None] * np.log(world.price[cand])
               + rng.gumbel(size=cand.shape))
    return cand[np.arange(n), utility.argmax(axis=1)]


def _affinity(world: World, users: dict, who: np.ndarray, item: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", users["taste"][who], world.item_vec[item])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _funnel(rng, world: World, users: dict, who, item, ts) -> list[tuple]:
    """Views and what follows them: click, add_to_cart, purchase (value = order amount)."""
    out = [(who, item, ts, np.zeros(who.shape[0], np.int8), np.zeros(who.shape[0]))]
    aff = _affinity(world, users, who, item)
    logp = np.log(world.price[item])
    steps = [(-2.2 + 2.5 * aff, 1), (-1.8 + 2.0 * aff, 2),
             (-0.4 - users["price_sens"][who] * (logp - 3.5), 3)]
    keep = np.ones(who.shape[0], bool)
    for logit, code in steps:
        keep &= rng.random(who.shape[0]) < _sigmoid(logit)
        ts = ts + rng.integers(5, 600, who.shape[0])
        qty = rng.integers(1, 3, keep.sum()) if code == 3 else 0
        value = np.round(world.price[item[keep]] * qty, 2) if code == 3 else np.zeros(keep.sum())
        out.append((who[keep], item[keep], ts[keep], np.full(keep.sum(), code, np.int8), value))
    return out


def _session_times(rng, cfg: DemoConfig, n: int) -> np.ndarray:
    day_w = np.where(np.arange(cfg.n_days) % 7 >= 5, 1.4, 1.0)
    day = rng.choice(cfg.n_days, size=n, p=day_w / day_w.sum())
    hour = rng.choice(24, size=n, p=_HOURS / _HOURS.sum())
    return cfg.start + day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)


def _emails(rng, world: World, cfg: DemoConfig, users: dict, n_users: int) -> list[tuple]:
    """Weekly campaigns to 40% of users featuring an item from their taste."""
    out = []
    for day in range(2, cfg.n_days, 7):
        who = np.flatnonzero(rng.random(n_users) < 0.4)
        item = _pick_items(rng, world, cfg, users, who, explore=0.0)
        ts = cfg.start + day * 86_400 + 9 * 3_600 + rng.integers(0, 600, who.shape[0])
        out.append((who, item, ts, np.full(who.shape[0], 4, np.int8), np.zeros(who.shape[0])))
        opened = rng.random(who.shape[0]) < 0.25
        ts = ts + rng.integers(600, 36_000, who.shape[0])
        who, item, ts = who[opened], item[opened], ts[opened]
        out.append((who, item, ts, np.full(who.shape[0], 5, np.int8), np.zeros(who.shape[0])))
        aff = _affinity(world, users, who, item)
        clicked = rng.random(who.shape[0]) < _sigmoid(-2.0 + 2.0 * aff)
        ts = ts + rng.integers(5, 120, who.shape[0])
        who, item, ts = who[clicked], item[clicked], ts[clicked]
        out.append((who, item, ts, np.full(who.shape[0], 6, np.int8), np.zeros(who.shape[0])))
        out += _funnel(rng, world, users, who, item, ts + 10)
    return out


def user_events(cfg: DemoConfig, world: World, chunk: int,
                context_tastes: float = 0.0) -> tuple[dict, dict]:
    """Users ``[chunk*chunk_users, ...)``: their ground truth and events sorted by (user, ts).

    ``context_tastes > 0`` tilts shop views by channel and daypart (`training.demo_tastes`) and
    adds a ``channel`` column (`kernels.context.CHANNELS` codes); 0 is the default world.
    """
    first = chunk * cfg.chunk_users
    n = min(cfg.chunk_users, cfg.n_users - first)
    rng = np.random.default_rng([cfg.seed, 1, chunk])
    users = _users(rng, n, world, cfg)
    n_sess = rng.poisson(cfg.session_rate(users["activity"])) + 1
    sess_user = np.repeat(np.arange(n), n_sess)
    n_views = rng.poisson(cfg.views_per_session, sess_user.shape[0]) + 1
    who = np.repeat(sess_user, n_views)
    start = np.repeat(_session_times(rng, cfg, sess_user.shape[0]), n_views)
    offset = np.arange(who.shape[0]) - np.repeat(np.cumsum(n_views) - n_views, n_views)
    ts = start + offset * 90 + rng.integers(0, 60, who.shape[0])
    tastes = (ContextTastes(cfg.seed, world.centroids.shape[0], context_tastes)
              if context_tastes > 0 else None)
    tilt = None if tastes is None else tastes.tilt(who + first, start)
    item = _pick_items(rng, world, cfg, users, who, explore=0.1, tilt=tilt)
    parts = _funnel(rng, world, users, who, item, ts) + _emails(rng, world, cfg, users, n)
    cols = [np.concatenate([p[k] for p in parts]) for k in range(5)]
    order = np.lexsort((cols[3], cols[2], cols[0]))
    events = {name: col[order] for name, col in zip(EVENT_COLUMNS, cols)}
    events["user_id"] = events["user_id"].astype(np.int64) + first
    events["timestamp"] = events["timestamp"].astype(np.int64)
    if tastes is not None:
        events["channel"] = tastes.channels(events["user_id"], events["timestamp"],
                                            events["event"])
    return users, events


def in_memory(cfg: DemoConfig, world: World, ev: dict) -> tuple[Interactions, Catalog]:
    """The world's events (`user_events` columns, chunks concatenated) as training's rows and
    catalog, without the CSV round trip (ids are the codes as strings; the offline experiments)."""
    ids = np.arange(cfg.n_items).astype(str)
    inter = Interactions(np.arange(cfg.n_users).astype(str), ids, ev["user_id"].astype(np.int32),
                         ev["item_id"].astype(np.int32), ev["timestamp"], ev["event"],
                         ev["value"].astype(np.float32))
    catalog = Catalog(ids, ids, ids, world.category.astype(np.int32), np.array(CATEGORIES),
                      world.price.astype(np.float32))
    return inter, catalog
