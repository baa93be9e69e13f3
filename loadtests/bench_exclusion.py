"""CPU cost of seen-item exclusion on the Recommend hot path, in process (issue 21).

    python -m loadtests.bench_exclusion --bundle B [--seen 200] [--batch 64] [--rounds 30]

Loads bundle B, gives it synthetic seen arrays (`--seen` items per user, when it has none)
and each batch user a live seen-set of `--seen` items, then times per batch of `--batch`
bundle users, interleaved round by round:

- `exclude`: building the excluded rows (`recommend.exclusion.excluded_rows`), alone;
- `recommend`: the whole `recommend_batch` (encoder, FAISS, ranker) with the policy;
- `recommend, no policy`: the same without seen exclusion (request exclusions only).

Process CPU time per call (all threads) and wall p50/p99 per batch are printed. Run it from a
checkout whose `recommend_batch` takes `exclude_history` instead (before issue 21) and only
`recommend` is timed, with the history-window exclusion it had.
"""
from __future__ import annotations

import argparse
import inspect
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np

from server.models.bundle import load_bundle
from server.recommend.handler import bundle_histories
from server.recommend.pipeline import RecQuery, recommend_batch

from .measure import positive

NEW = "policy" in inspect.signature(recommend_batch).parameters


def _synthetic_seen(bundle, per_user: int, rng) -> None:
    from server.profiles.schema import EVENT_TYPES
    n_users, n_items = len(bundle.users["user_ids"]), bundle.n_items
    items = np.sort(np.stack([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)]), axis=1)
    bundle.users["seen_indptr"] = np.arange(n_users + 1, dtype=np.int64) * per_user
    bundle.users["seen_items"] = items.reshape(-1).astype(np.int32)
    bundle.users["seen_mask"] = (1 << rng.integers(0, 5, n_users * per_user)).astype(np.uint32)
    cutoff = float(bundle.manifest["data"]["cutoff"])
    bundle.users["seen_last_ts"] = (cutoff - rng.uniform(0, 60, n_users * per_user) * 86400).astype(np.int64)
    bundle.manifest["history"]["seen_event_types"] = list(EVENT_TYPES[:5])


def _live(bundle, n_users: int, per_user: int, now: float, rng):
    from contract.items import item_code
    from server.profiles import seen
    ids = bundle.items["item_ids"]
    out = []
    for _ in range(n_users):
        rows = rng.choice(bundle.n_items, per_user, replace=False)
        codes = np.array([item_code(str(ids[r])) for r in rows])
        out.append(seen.merge(seen.EMPTY, codes, (1 << rng.integers(0, 5, per_user)).astype(np.uint32),
                              now - rng.uniform(0, 60, per_user) * 86400))
    return out


def _same(live, _user_ids):
    return live


def _timed(fn, rounds_out: dict, name: str) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    rounds_out.setdefault(name, []).append((time.process_time() - cpu, time.perf_counter() - wall))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_exclusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--seen", type=int, default=200)
    p.add_argument("--batch", type=positive(int), default=64)
    p.add_argument("--rounds", type=positive(int), default=30)
    p.add_argument("--overfetch", type=int, default=None,
                   help="seen_overfetch_max (default: the Settings default)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    faiss.omp_set_num_threads(1)  # as the server's batch thread does (compute_threads=1)
    bundle = load_bundle(args.bundle)
    users = bundle.users["user_ids"].tolist()
    now = float(bundle.manifest["data"]["cutoff"])
    timings: dict[str, list[tuple[float, float]]] = {}
    if NEW:
        from server.config import Settings
        from server.recommend.exclusion import SeenPolicy, excluded_rows
        if "seen_indptr" not in bundle.users:
            _synthetic_seen(bundle, args.seen, rng)
        policy = SeenPolicy.from_settings(Settings())
        overfetch = Settings().seen_overfetch_max if args.overfetch is None else args.overfetch
    for r in range(args.rounds + 2):  # two warm-up rounds
        batch = [str(u) for u in rng.choice(users, args.batch, replace=False)]
        queries = [RecQuery(u, 10) for u in batch]
        out = timings if r >= 2 else {}
        if not NEW:
            _timed(partial(recommend_batch, bundle, queries, bundle_histories, exclude_history=True),
                   out, "recommend (history window)")
            continue
        live = _live(bundle, args.batch, args.seen, now, rng)
        none = [np.zeros(0, np.int64)] * args.batch
        _timed(partial(excluded_rows, policy, bundle, batch, live, none, now), out, "exclude")
        _timed(partial(recommend_batch, bundle, queries, bundle_histories, policy=policy,
                       seen_of=partial(_same, live), now=now, overfetch_max=overfetch),
               out, "recommend")
        _timed(partial(recommend_batch, bundle, queries, bundle_histories, now=now), out,
               "recommend, no policy")
    print(f"{bundle.n_items} items, batch {args.batch}, {args.seen} bundle + {args.seen} live seen "
          f"items per user, {args.rounds} rounds" + (f", over-fetch at most {overfetch}" if NEW else ""))
    for name, rows in timings.items():
        cpu, wall = np.array(rows).T * 1e6
        print(f"{name:>28}: CPU {cpu.mean() / args.batch:8.1f} µs/call   wall per batch "
              f"p50 {np.percentile(wall, 50) / 1e3:7.2f} ms  p99 {np.percentile(wall, 99) / 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
