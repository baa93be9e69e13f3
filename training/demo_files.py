"""Writing the demo world (`training.demo`) to files: ``items.csv``, ``interactions.csv``,
``ground_truth.npz`` and, on request, the contact truth and an impression log.

The world's model and its event generator live in `training.demo`; this module only turns them
into the files `python -m training demo-data` and `training bootstrap` write, chunk by chunk, so
memory stays bounded at 1,000,000 users x 1,000,000 items.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from kernels.context import CHANNELS
from training.demo import CATEGORIES, EVENT_COLUMNS, DemoConfig, World, make_world, user_events
from training.demo_impressions import LogWriter
from training.progress import progress

__all__ = ["write_demo"]

logger = logging.getLogger("tailor.training.demo")

_NOUNS = ("set", "kit", "pack", "classic", "pro", "mini", "deluxe", "basic")
_ADJECTIVES = ("red", "blue", "smart", "eco", "vintage", "compact", "premium", "daily")


def _items_table(world: World, cfg: DemoConfig) -> pa.Table:
    rng = np.random.default_rng([cfg.seed, 2])
    ids = np.arange(cfg.n_items)
    cats = np.array(CATEGORIES)[world.category]
    adj = np.array(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), cfg.n_items)]
    noun = np.array(_NOUNS)[rng.integers(0, len(_NOUNS), cfg.n_items)]
    titles = [f"{a} {c} {n} {i}" for a, c, n, i in zip(adj, cats, noun, ids)]
    urls = [f"https://shop.example/p/{i}" for i in ids]
    images = [f"https://shop.example/img/{i}.jpg" for i in ids]
    return pa.table({"id": ids, "title": titles, "category": cats,
                     "price": np.round(world.price.astype(np.float64), 2), "url": urls,
                     "image": images})


def _events_table(events: dict) -> pa.Table:
    from training.events import EVENTS

    names = pa.array(list(EVENTS)).take(pa.array(events["event"].astype(np.int32)))
    cols = {"user_id": events["user_id"], "item_id": events["item_id"].astype(np.int64),
            "timestamp": events["timestamp"], "event": names,
            "value": np.round(events["value"].astype(np.float64), 2)}
    if "channel" in events:
        cols["channel"] = pa.array(list(CHANNELS)).take(pa.array(events["channel"].astype(np.int32)))
    return pa.table(cols)


def write_demo(out: str | Path, cfg: DemoConfig = DemoConfig(), contact: bool = False,
               context_tastes: float = 0.0, impressions_per_user: float = 0.0) -> dict:
    """Write ``interactions.csv``, ``items.csv`` and ``ground_truth.npz`` into ``out``.

    The files are written into a hidden directory inside ``out`` and moved into place at the
    end, ``interactions.csv`` last: a run stopped midway leaves no partial world behind.

    Parameters
    ----------
    out : path
        Directory, created if missing.
    cfg : DemoConfig
    contact : bool
        Also write ``contact_truth.npz``: time zones, preferred hours and channels per user
        (`training.demo_contact`, its own random stream: the other files do not change).
    context_tastes : float
        > 0: channel- and daypart-dependent tastes of this strength (`training.demo_tastes`) and
        a ``channel`` column in ``interactions.csv``; 0 (default) is the default world.
    impressions_per_user : float
        > 0 (needs ``context_tastes`` > 0): also ``impressions.jsonl``, a context-blind model's
        log of this many requests per user on average with clicks from the world's context
        tastes (`training.demo_impressions`); the clicks are added to ``interactions.csv``.

    Returns
    -------
    dict
        Paths written and row counts.
    """
    t0 = time.perf_counter()
    if impressions_per_user > 0 and context_tastes <= 0:
        raise ValueError("an impression log needs context tastes (context_tastes > 0)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".demo-", dir=out))
    try:
        written = _write_files(stage, cfg, contact, context_tastes, impressions_per_user)
        # interactions.csv last: a run stopped before it leaves none (`bootstrap` regenerates)
        names = sorted(p.name for p in stage.iterdir() if p.name != "interactions.csv")
        for name in [*names, "interactions.csv"]:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("demo world written to %s in %.1fs", out, time.perf_counter() - t0)
    return {k: str(out / Path(v).name) if isinstance(v, str) else v for k, v in written.items()}


def _write_files(out: Path, cfg: DemoConfig, contact: bool, context_tastes: float,
                 impressions_per_user: float) -> dict:
    """`write_demo`'s files, written into the staging directory ``out``."""
    world = make_world(cfg)
    log = LogWriter(out, cfg, world, context_tastes, impressions_per_user)
    pacsv.write_csv(_items_table(world, cfg), out / "items.csv")
    taste, mix, sens = [], [], []
    n_rows = 0
    n_chunks = -(-cfg.n_users // cfg.chunk_users)
    columns = EVENT_COLUMNS + (("channel",) if context_tastes > 0 else ())
    with pacsv.CSVWriter(out / "interactions.csv", _events_table(
            {k: np.zeros(0, np.int64) for k in columns}).schema) as writer:
        for chunk in progress(range(n_chunks), desc="demo-data", unit=" chunks"):
            users, events = user_events(cfg, world, chunk, context_tastes)
            events = log.chunk(users, events, chunk)
            writer.write_table(_events_table(events))
            n_rows += events["user_id"].shape[0]
            taste.append(users["taste"]), mix.append(users["mix"]), sens.append(users["price_sens"])
            logger.info("demo chunk %d/%d: %d rows", chunk + 1, n_chunks, n_rows)
    np.savez(out / "ground_truth.npz", item_vec=world.item_vec, item_category=world.category,
             category_names=np.array(CATEGORIES), centroids=world.centroids,
             item_popularity=world.popularity, price=world.price,
             user_taste=np.concatenate(taste), user_mix=np.concatenate(mix),
             user_price_sensitivity=np.concatenate(sens),
             config=np.array(repr(asdict(cfg))))
    written = {"interactions": str(out / "interactions.csv"), "items": str(out / "items.csv"),
               "ground_truth": str(out / "ground_truth.npz"), "n_rows": n_rows,
               **log.close()}
    if contact:
        from training.demo_contact import contact_truth

        np.savez(out / "contact_truth.npz", **contact_truth(cfg.n_users, cfg.seed).arrays())
        written["contact_truth"] = str(out / "contact_truth.npz")
    return written
