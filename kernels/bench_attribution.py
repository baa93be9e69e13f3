"""Attribution benchmark: every model, Cython kernel vs numpy/pure-Python reference, one run.

    python -m kernels.bench_attribution [--paths 1000000] [--ref-paths 100000] [--seed 0]

Part 1 generates ``--paths`` aggregated paths over 10 channels (deterministic in ``--seed``),
times each model natively (best of 3) and the reference (once) on all of them, checking they
agree; ``--ref-paths N`` times the reference on the first N paths only, scaled linearly.
Part 2 times exact Markov orders 1-3 on a 10,000-row, 12-channel ChannelAttribution-format
text, parsing included. The reference Markov solves each removal directly (dense LAPACK up to
64 states, SuperLU beyond), so at order 4 its time is mostly factorisation.
Part 3 times exact Markov with thousands of channels (1,000 at order 1 over 20,000 paths, 2,000
at orders 2 and 3 over 10,000) against the server's time budget for one attribution call
(``--budget``, default 5 s: `Limits.attribution_seconds`' default), which the tests cannot hold
on a loaded machine: they check the route these cases take and the result, this prints the time.
"""
from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from .attribution import DAY, Paths, attribute, parse_channelattribution

CASES = [("first", {}), ("last", {}), ("last_non_direct", {}), ("linear", {}),
         ("position", {}), ("time_decay", {}),
         ("markov", {"order": 1}), ("markov", {"order": 2}), ("markov", {"order": 3}),
         ("markov", {"order": 4}),
         ("shapley", {"shapley_form": "counts"}), ("shapley", {"shapley_form": "ordered"}),
         ("shapley", {"shapley_form": "rate"})]


def generate_paths(n: int, n_channels: int = 10, seed: int = 0, max_len: int = 12) -> Paths:
    """Deterministic synthetic aggregated paths: skewed channel mix, short geometric lengths."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.35, size=n), max_len).astype(np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    popularity = 1.0 / np.arange(1, n_channels + 1) ** 0.8
    channels = rng.choice(n_channels, size=int(indptr[-1]), p=popularity / popularity.sum())
    conv = rng.poisson(0.4 + 0.15 * lengths).astype(np.float64)
    nulls = rng.poisson(2.0, size=n).astype(np.float64)
    value = conv * rng.lognormal(3.0, 0.5, size=n)
    gaps = rng.exponential(DAY, size=int(indptr[-1]))
    ts = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[indptr[:-1]], lengths)
    names = tuple(f"channel_{c}" for c in range(n_channels))
    return Paths(names, indptr, channels.astype(np.int32), conv, value, nulls, ts)


def channelattribution_text(n: int = 10_000, seed: int = 1) -> str:
    """A ChannelAttribution-shaped data set: ``n`` rows over 12 Greek-letter channels."""
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa", "lambda", "mu"]
    p = generate_paths(n, n_channels=12, seed=seed, max_len=20)
    rows = ["path;total_conversions;total_conversion_value;total_null"]
    for i in range(n):
        seq = " > ".join(names[c] for c in p.indices[p.indptr[i]:p.indptr[i + 1]])
        rows.append(f"{seq};{p.conversions[i]:g};{p.value[i]:.2f};{p.nulls[i]:g}")
    return "\n".join(rows)


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def label(model: str, opts: dict) -> str:
    if "order" in opts:
        return f"{model} (order {opts['order']})"
    return f"{model} ({opts['shapley_form']})" if "shapley_form" in opts else model


def bench_models(paths: Paths, ref_paths: int) -> None:
    sub = paths if ref_paths >= paths.n_paths else paths.subset(np.arange(ref_paths))
    scale = paths.n_paths / sub.n_paths
    note = "" if scale == 1 else f" (timed on {sub.n_paths:,} paths, x{scale:g})"
    print(f"{paths.n_paths:,} paths, {paths.n_channels} channels, {len(paths.indices):,} touches")
    print(f"{'model':<22} {'native s':>10} {'reference s':>12} {'speed-up':>9}")
    for model, opts in CASES:
        native, res = timed(partial(attribute, paths, model, **opts), repeat=3)
        ref, ref_res = timed(partial(attribute, sub, model, use_native=False, **opts))
        ref *= scale
        if sub is paths:
            assert np.allclose(res.conversions, ref_res.conversions, rtol=1e-7), label(model, opts)
        print(f"{label(model, opts):<22} {native:>10.3f} {ref:>12.3f} {ref / native:>8.1f}x")
    if note:
        print(f"reference times{note}; Markov solves do not shrink with the sample, so its "
              "scaled reference times are upper-bound-ish")
    else:
        print("native and reference credits agree (rtol 1e-7) for every model")


def bench_channelattribution(rows: int) -> None:
    text = channelattribution_text(rows)
    lines = text.splitlines()
    parse, _ = timed(lambda: parse_channelattribution(lines), repeat=3)
    print(f"\nChannelAttribution-shaped data: {rows:,} rows, 12 channels "
          f"(parse alone {parse:.3f} s)")
    print(f"{'model':<22} {'parse+fit s':>12} {'states':>7}")
    for order in (1, 2, 3):
        def run(order=order):
            return attribute(parse_channelattribution(lines), "markov", order=order)
        secs, res = timed(run, repeat=3)
        print(f"{f'markov (order {order})':<22} {secs:>12.3f} {res.details['n_states']:>7}")


MANY_CHANNELS = [(1000, 20_000, 1), (2000, 10_000, 2), (2000, 10_000, 3)]
"""(channels, paths, order) of part 3: the cases the all-removals iteration took 11 s to a
minute on before the single-inverse and level routes (tests/kernels/test_attribution.py)."""


def bench_many_channels(budget: float, seed: int) -> None:
    print(f"\nthousands of channels, against a budget of {budget:g} s a call")
    print(f"{'case':<38} {'seconds':>8} {'states':>7}  within budget")
    for n_channels, n, order in MANY_CHANNELS:
        paths = generate_paths(n, n_channels=n_channels, seed=seed, max_len=6)
        secs, res = timed(partial(attribute, paths, "markov", order=order))
        case = f"{n_channels:,} channels, {n:,} paths, order {order}"
        print(f"{case:<38} {secs:>8.3f} {res.details['n_states']:>7}  "
              f"{'yes' if secs <= budget else 'NO'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench_attribution",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=1_000_000,
                        help="simulated customer paths (default %(default)s)")
    parser.add_argument("--ref-paths", type=int, default=None,
                        help="run the reference on the first N paths only and scale its time "
                             "linearly (default: all paths, no scaling)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--ca-rows", type=int, default=10_000,
                        help="rows of ChannelAttribution-shaped data to parse and attribute "
                             "(default %(default)s)")
    parser.add_argument("--budget", type=float, default=5.0,
                        help="seconds one attribution call may take on the server (part 3)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    paths = generate_paths(args.paths, seed=args.seed)
    print(f"generated in {time.perf_counter() - t0:.2f} s")
    bench_models(paths, args.ref_paths or args.paths)
    bench_channelattribution(args.ca_rows)
    bench_many_channels(args.budget, args.seed)


if __name__ == "__main__":
    main()
