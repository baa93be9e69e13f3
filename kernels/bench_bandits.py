"""Bandit kernel benchmarks: time per decision / update against MABWiser and plain numpy, and
cumulative regret on simulated Bernoulli campaigns.

    python -m kernels.bench_bandits [--quick]

Times are the best of 5 repeats of a loop, per call, in microseconds, all measured in one run.
"kernel" = the Cython call on the state arrays; "choose()" = the public `kernels.bandits.choose`
(validation, posterior parameters, propensity vector); "numpy" = a plain vectorised numpy step.
Regret = sum over rounds of (best mean - chosen arm's mean); every policy sees the same
campaigns and the same reward draws (common random numbers); mean +- standard error over seeds.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from kernels import _bandits, _rng
from kernels import bandits as B


def _per_call(fn, calls: int, repeats: int = 5) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6


def _mab(k: int, policy, dim: int = 0, seed: int = 0):
    from mabwiser.mab import MAB

    rng = np.random.default_rng(seed)
    n = 20 * k
    mab = MAB(list(range(k)), policy, seed=seed)
    dec, rew = rng.integers(k, size=n), rng.integers(2, size=n)
    if dim:
        mab.fit(dec, rew, rng.normal(size=(n, dim)))
    else:
        mab.fit(dec, rew)
    return mab, dec, rew


def _played(policy, k, dim=0):
    rng = np.random.default_rng(0)
    st = B.new_state(policy, k, dim)
    for _ in range(20 * k):
        x = rng.normal(size=dim) if dim else None
        B.update(st, int(rng.integers(k)), float(rng.integers(2)), x, inplace=True)
    return st


def decision_times(k: int, calls: int, dim: int = 10) -> list[tuple]:
    from mabwiser.mab import LearningPolicy as LP

    rows = []
    rng, gen, probs = _rng.Rng(1), np.random.default_rng(1), np.empty(k)
    st = _played("bernoulli_ts", k)
    a, b = 1.0 + st.s, 1.0 + st.n - st.s
    mab, _, _ = _mab(k, LP.ThompsonSampling())
    rows.append(("thompson", k, {
        "kernel": _per_call(lambda: _bandits.beta_ts_choose(st.n, st.s, 1.0, 1.0, rng), calls),
        "choose() n_mc=0": _per_call(lambda: B.choose(st, rng, n_mc=0), calls),
        "choose() n_mc=256": _per_call(lambda: B.choose(st, rng, n_mc=256), max(calls // 20, 20)),
        "numpy": _per_call(lambda: int(np.argmax(gen.beta(a, b))), calls),
        "mabwiser": _per_call(mab.predict, max(calls // 10, 20))}))
    st = _played("ucb1", k)
    mab, _, _ = _mab(k, LP.UCB1(alpha=1.0))
    rows.append(("ucb1", k, {
        "kernel": _per_call(lambda: _bandits.ucb1_choose(st.n, st.s, 1.0, rng, probs), calls),
        "choose()": _per_call(lambda: B.choose(st, rng), calls),
        "numpy": _per_call(lambda: int(np.argmax(B.ucb1_scores(st, use_native=False))), calls),
        "mabwiser": _per_call(mab.predict, calls)}))
    st = _played("linucb", k, dim)
    x = np.random.default_rng(2).normal(size=dim)
    mab, _, _ = _mab(k, LP.LinUCB(alpha=1.0, l2_lambda=1.0), dim)
    xm = x[None, :]
    rows.append((f"linucb d={dim}", k, {
        "kernel": _per_call(lambda: _bandits.linucb_choose(st.A, st.b, x, 1.0, 1.0, rng, probs),
                            calls // 5),
        "choose()": _per_call(lambda: B.choose(st, rng, x), calls // 5),
        "numpy": _per_call(lambda: int(np.argmax(_lin_numpy(st, x))), calls // 20),
        "mabwiser": _per_call(lambda: mab.predict(xm), calls // 20)}))
    return rows


def _lin_numpy(st, x):
    mean, var = B.linear_moments(st, x, use_native=False)
    return mean + np.sqrt(var)


def update_times(k: int, calls: int, dim: int = 10) -> list[tuple]:
    from mabwiser.mab import LearningPolicy as LP

    rows = []
    st = _played("bernoulli_ts", k)
    blob = st.to_bytes()
    mab, _, _ = _mab(k, LP.ThompsonSampling())
    rows.append(("thompson/ucb1 counts", k, {
        "kernel": _per_call(lambda: _bandits.update_stats(st.n, st.s, st.ss, 1, 1.0, 1.0), calls),
        "update(inplace)": _per_call(lambda: B.update(st, 1, 1.0, inplace=True), calls),
        "update_bytes": _per_call(lambda: B.update_bytes(blob, 1, 1.0), calls),
        "mabwiser": _per_call(lambda: mab.partial_fit([1], [1]), max(calls // 50, 20))}))
    st = _played("linucb", k, dim)
    x = np.random.default_rng(2).normal(size=dim)
    mab, _, _ = _mab(k, LP.LinUCB(alpha=1.0, l2_lambda=1.0), dim)
    rows.append((f"linucb d={dim}", k, {
        "kernel": _per_call(lambda: _bandits.update_linear(st.A, st.b, st.n, st.s, st.ss, 1, 1.0,
                                                           x, 1.0), calls),
        "update(inplace)": _per_call(lambda: B.update(st, 1, 1.0, x, inplace=True), calls),
        "mabwiser": _per_call(lambda: mab.partial_fit([1], [1], x[None, :]),
                              max(calls // 50, 20))}))
    return rows


def _regret_ours(policy, mu, outcomes, seed):
    st = B.new_state(policy, mu.size)
    rng = B.new_rng(seed)
    regret = 0.0
    for t in range(outcomes.shape[0]):
        if policy == "bernoulli_ts":
            arm = _bandits.beta_ts_choose(st.n, st.s, 1.0, 1.0, rng)
        else:
            arm = B.choose(st, rng).arm
        regret += mu.max() - mu[arm]
        _bandits.update_stats(st.n, st.s, st.ss, arm, outcomes[t, arm], 1.0)
    return regret


def _regret_mab(policy, mu, outcomes, seed):
    from mabwiser.mab import MAB
    from mabwiser.mab import LearningPolicy as LP

    lp = LP.ThompsonSampling() if policy == "bernoulli_ts" else LP.UCB1(alpha=1.0)
    k = mu.size
    mab = MAB(list(range(k)), lp, seed=seed)
    warm = np.arange(k)  # MABWiser must be fitted before predicting: one pull per arm
    mab.fit(warm, outcomes[0, warm])
    regret = float((mu.max() - mu).sum())
    for t in range(k, outcomes.shape[0]):
        arm = mab.predict()
        regret += mu.max() - mu[arm]
        mab.partial_fit([arm], [outcomes[t, arm]])
    return regret


def regret_table(arms=(5, 20, 100), seeds: int = 20, horizon: int = 2000) -> list[tuple]:
    rows = []
    for k in arms:
        res = {}
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            mu = rng.uniform(0.0, 0.3, size=k)
            outcomes = (rng.random((horizon, k)) < mu).astype(float)
            for pol in ("bernoulli_ts", "ucb1"):
                res.setdefault(("tailor", pol), []).append(_regret_ours(pol, mu, outcomes, seed))
                res.setdefault(("mabwiser", pol), []).append(_regret_mab(pol, mu, outcomes, seed))
        rows.append((k, {key: np.array(v) for key, v in res.items()}))
    return rows


def _fmt_times(title, rows):
    print(f"\n{title} (microseconds per call)")
    for name, k, cols in rows:
        mab = cols.get("mabwiser")
        cells = "  ".join(f"{c}={v:9.2f}" for c, v in cols.items())
        speed = f"  kernel speed-up vs mabwiser x{mab / cols['kernel']:.1f}" if mab else ""
        print(f"  {name:<22} K={k:<4} {cells}{speed}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench_bandits", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, horizon 1000")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--no-regret", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    calls = 2000 if args.quick else 20000
    _fmt_times("Decision", [r for k in (10, 100) for r in decision_times(k, calls)])
    _fmt_times("Reward update", [r for k in (10, 100) for r in update_times(k, calls)])
    if args.no_regret:
        return 0
    horizon = args.horizon or (1000 if args.quick else 3000)
    print(f"\nCumulative regret, Bernoulli arms mu ~ U(0, 0.3), horizon {horizon}, "
          f"{args.seeds} seeds (mean +- stderr; paired diff = tailor - mabwiser)")
    for k, res in regret_table(seeds=args.seeds, horizon=horizon):
        for pol in ("bernoulli_ts", "ucb1"):
            ours, theirs = res[("tailor", pol)], res[("mabwiser", pol)]
            diff = ours - theirs
            se = lambda v: v.std(ddof=1) / np.sqrt(v.size)  # noqa: E731
            print(f"  K={k:<4} {pol:<13} tailor {ours.mean():8.1f} +- {se(ours):6.1f}   "
                  f"mabwiser {theirs.mean():8.1f} +- {se(theirs):6.1f}   "
                  f"diff {diff.mean():+8.1f} +- {se(diff):6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
