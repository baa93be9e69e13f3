"""Two trees' decision writers compared commit by commit: what `bench_decision_log --paired`
prints.

Separate runs of the same writer code spread +-15% in CPU a transaction on a shared machine
(docs/performance.md, stop 61), more than the few percent a change to the writer moves it. Here
the two trees' writers run at once, each in a child process of its own (PYTHONPATH=that tree:
two `server` packages cannot share one process), each on a new store warmed alike
(`bench_decision_log.paired_child`), and take one transaction each in turn, one process at a
time (A B B A ..., so neither always follows the other). Each child reports its transaction's
thread CPU (`CLOCK_THREAD_CPUTIME_ID`): a noisy stretch of the machine lands on both commits of
a pair, and the difference of means over pairs, with its interval from resampling pairs
(`scipy.stats.bootstrap`, paired, percentile), resolves a few percent.

That interval holds what varies from pair to pair, not what stays the same for a run's two
processes and stores (their memory layout, hash seeds, where LMDB put their pages): runs of a
tree against itself gave -0.4 to +1.5% (one of four intervals left 0 out), and two rounds of
the same two trees +4.3% and +1.5% with intervals apart. Each round starts new children on
new stores, so `across_rounds` gives the difference over rounds with a t interval: the figure
to quote.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

__all__ = ["PairedCost", "paired_cost", "commit_pairs", "report", "across_rounds"]

BENCH = Path(__file__).with_name("bench_decision_log.py")
"""The child's code, this tree's, run with the other tree's `server` (that tree may not have
this bench, or an older one)."""
CHILD = ("import runpy, sys; runpy.run_path(sys.argv[1])['paired_child']"
         "(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))")


@dataclass(frozen=True)
class PairedCost:
    """CPU a transaction (us) of B and A, and B - A with its interval, over `pairs` pairs."""

    pairs: int
    mean_us: tuple[float, float]
    median_us: tuple[float, float]
    cheaper: tuple[float, float]
    """The share of pairs where B's transaction took less CPU than A's, and where A's did."""
    diff_us: float
    """mean(B) - mean(A)."""
    ci_us: tuple[float, float]
    relative: float
    """mean(B) / mean(A) - 1."""
    ci_relative: tuple[float, float]
    se_relative: float
    """The bootstrap's standard error of `relative`: for `across_rounds`."""
    confidence: float


def _interval(statistic, b: np.ndarray, a: np.ndarray, confidence: float, resamples: int,
              seed: int) -> tuple[float, float, float]:
    """(low, high, standard error) of `statistic` resampled over pairs."""
    res = stats.bootstrap((b, a), statistic, paired=True, vectorized=True, method="percentile",
                          n_resamples=resamples, confidence_level=confidence,
                          random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high),
            float(res.standard_error))


def paired_cost(b: np.ndarray, a: np.ndarray, *, confidence: float = 0.95,
                resamples: int = 9999, seed: int = 0) -> PairedCost:
    """B against A from the CPU (us) of their transactions, b[i] and a[i] the two of pair i."""
    b, a = np.asarray(b, dtype=float), np.asarray(a, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two or more pairs of equal count, got {len(b)} and {len(a)}")
    diff = lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis)  # noqa: E731
    ratio = lambda x, y, axis: np.mean(x, axis=axis) / np.mean(y, axis=axis) - 1  # noqa: E731
    us, rel = (_interval(f, b, a, confidence, resamples, seed) for f in (diff, ratio))
    return PairedCost(
        len(a), (float(b.mean()), float(a.mean())), (float(np.median(b)), float(np.median(a))),
        (float(np.mean(b < a)), float(np.mean(a < b))), float(b.mean() - a.mean()), us[:2],
        float(b.mean() / a.mean() - 1), rel[:2], rel[2], confidence)


def _child(src: Path, mode: str, batch: int, warm: int) -> subprocess.Popen:
    src = Path(src).resolve()
    return subprocess.Popen([sys.executable, "-c", CHILD, str(BENCH), mode, str(batch), str(warm)],
                            cwd=src, env={**os.environ, "PYTHONPATH": str(src)}, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _reply(child: subprocess.Popen, src: Path) -> str:
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"the writer of {src} ended (exit status {child.wait()}); its "
                           "error is above")
    return line.strip()


def commit_pairs(b_src: Path, a_src: Path, mode: str, batch: int, pairs: int, warm: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The thread CPU (us) of `pairs` transactions of `batch` decisions each of the writers
    of trees B and A, taken in turn (`bench_decision_log.paired_child`, after `warm`
    transactions each); both children are stopped and their stores removed however it ends."""
    srcs = (b_src, a_src)
    children = [_child(src, mode, batch, warm) for src in srcs]
    try:
        for child, src in zip(children, srcs):
            if _reply(child, src) != "ready":
                raise RuntimeError(f"the writer of {src} did not start")
        cpu = np.zeros((2, pairs))
        for k in range(pairs):
            for j in ((0, 1) if k % 2 else (1, 0)):
                children[j].stdin.write("go\n")
                children[j].stdin.flush()
                cpu[j, k] = _ns(_reply(children[j], srcs[j]), srcs[j]) / 1e3
        return cpu[0], cpu[1]
    finally:
        for child in children:
            _stop(child)


def _ns(line: str, src: Path) -> int:
    try:
        return int(line)
    except ValueError:
        raise RuntimeError(f"the writer of {src} wrote {line[:200]!r}, not a transaction's "
                           "CPU") from None


def _stop(child: subprocess.Popen) -> None:
    """End of stdin: the child closes its store and removes it."""
    try:
        child.stdin.close()
    except OSError:  # it had already ended
        pass
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    child.stdout.close()


def report(cost: PairedCost, labels: tuple[str, str]) -> list[str]:
    """The lines `bench_decision_log --paired` prints for B and A (`labels`)."""
    width = max(map(len, labels))
    rows = [f"  {label:{width}s}: mean {mean:7.1f} us CPU a transaction, median {median:7.1f}; "
            f"cheaper in {100 * share:5.1f}% of pairs"
            for label, mean, median, share in zip(labels, cost.mean_us, cost.median_us,
                                                  cost.cheaper)]
    (low, high), (rel_low, rel_high) = cost.ci_us, cost.ci_relative
    return rows + [f"  {labels[0]} - {labels[1]}: {cost.diff_us:+.1f} us [{low:+.1f}, {high:+.1f}],"
                   f" {100 * cost.relative:+.1f}% [{100 * rel_low:+.1f}, {100 * rel_high:+.1f}]"
                   f" ({100 * cost.confidence:g}% bootstrap interval over {cost.pairs} pairs)"]


def across_rounds(relatives: list[float], errors: list[float], confidence: float = 0.95
                  ) -> tuple[float, tuple[float, float]]:
    """The mean of rounds' relative differences (`PairedCost.relative`) and its t interval
    over rounds: each round's children and stores are new, so their spread holds what a
    round's own interval leaves out (see the module's docstring). The rounds' variance is
    taken as at least the mean of their own squared standard errors (`errors`,
    `PairedCost.se_relative`): a few rounds that agree by chance (two of 30 pairs at -2.6 and
    -2.8%, each interval holding 0) gave an interval far from 0. Two rounds or more."""
    x, se = np.asarray(relatives, dtype=float), np.asarray(errors, dtype=float)
    if len(x) < 2 or len(se) != len(x):
        raise ValueError(f"need two or more rounds with an error each, got {len(x)} and {len(se)}")
    mean = float(x.mean())
    scale = float(np.sqrt(max(x.var(ddof=1), np.mean(se ** 2)) / len(x)))
    if scale == 0:
        return mean, (mean, mean)
    low, high = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=scale)
    return mean, (float(low), float(high))
