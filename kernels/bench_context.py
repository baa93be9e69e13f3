"""Cost of the context columns on the ranker's hot path: `python -m kernels.bench_context`.

Per call, in process: `kernels.ranking.features` (the 9 history/candidate features, native
kernel) and, on the same candidates, `kernels.context.context_features` plus the category gather
and the concatenation the server would add. 5,000 items, 16 categories, histories of 50,
100 candidates; batch sizes 1 and 64. Prints median microseconds per call and the ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .context import CHANNELS, N_DAYPARTS, ContextTable, context_features
from .ranking import ItemTable, features


def _time(fn, repeat: int) -> float:
    """Median microseconds per call (the median, not the mean: the machine is shared)."""
    fn()
    laps = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        laps[i] = time.perf_counter() - t0
    return float(np.median(laps)) * 1e6


def _case(rng, table: ItemTable, ctx: ContextTable, b: int, n: int, hist: int, k: int) -> str:
    h_items = rng.integers(0, n, (b, hist))
    h_w = rng.random((b, hist)).astype(np.float32)
    cand = rng.integers(0, n, (b, k))
    scores = -np.sort(-rng.random((b, k)).astype(np.float32), axis=1)
    ch, part = rng.integers(0, 3, b), rng.integers(0, N_DAYPARTS, b)
    repeat = 2000 if b == 1 else 200

    def with_context():
        f = features(h_items, h_w, cand, scores, table)
        extra = context_features(ctx, table.category[cand], ch, part)
        return np.concatenate([f, extra], axis=2)

    base = _time(lambda: features(h_items, h_w, cand, scores, table), repeat)
    both = _time(with_context, repeat)
    return (f"B={b:>3} K={k}: features {base:8.1f} us, + context {both:8.1f} us "
            f"(+{both - base:.1f} us, x{both / base:.2f})")


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m kernels.bench_context",
                            description=__doc__).parse_args(argv)
    rng = np.random.default_rng(0)
    n, n_cat = 5000, 16
    table = ItemTable.from_arrays(rng.integers(0, n_cat, n), rng.lognormal(2, 1, n),
                                  rng.integers(0, 100, n), rng.random(n) * 30, n_categories=n_cat)
    ctx = ContextTable(rng.normal(size=(len(CHANNELS), n_cat)).astype(np.float32),
                       rng.normal(size=(N_DAYPARTS, n_cat)).astype(np.float32))
    for b in (1, 64):
        print(_case(rng, table, ctx, b, n, 50, 100))


if __name__ == "__main__":
    main()
