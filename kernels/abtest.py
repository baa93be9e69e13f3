"""A/B/n statistics for fixed-split campaigns (plain numpy/scipy; no kernel needed).

Every test takes sufficient statistics (counts, sums, sums of squares) so it runs straight on a
`kernels.bandits.BanditState` (``n``, ``s``, ``ss``): two-proportion z-test (Agresti-Caffo
interval), Welch t-test, Bayesian probability to beat control, sample-ratio-mismatch
chi-square, an always-valid mSPRT with a normal mixture prior (peeking-safe) and sample-size
calculators.

scipy is imported by the functions that use it: the campaign writer processes import this module
(through `server.campaigns`) and would otherwise pay for scipy.stats at every start.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "TestResult", "two_proportion_ztest", "welch_ttest", "prob_beat_control", "srm_check",
    "msprt", "SampleSize", "sample_size", "sample_size_proportions", "sample_size_means",
    "ab_analysis",
]


class TestResult(NamedTuple):
    """Treatment minus control: statistic, two-sided p-value, difference and its 95% interval."""

    statistic: float
    pvalue: float
    diff: float
    ci_low: float
    ci_high: float


def _check_n(*ns) -> None:
    for n in ns:
        if not np.all(np.asarray(n) > 0):
            raise ValueError(f"sample sizes must be > 0, got {n}")


def two_proportion_ztest(x_c, n_c, x_t, n_t, level: float = 0.95) -> TestResult:
    """Pooled-variance z-test of p_t - p_c, with the Agresti-Caffo interval (the unpooled Wald
    interval after adding one success and one failure to each group). Wald's own interval is
    [0, 0] when neither group has a success (or both are all successes), and covers ~86% at
    0.5% vs 2% with 100 an arm; this one is never zero-width and keeps its level at small
    counts, and tends to Wald's for large ones. ``diff`` is p_t - p_c. Vectorised over inputs."""
    from scipy import stats as sps
    _check_n(n_c, n_t)
    pc, pt = np.asarray(x_c) / n_c, np.asarray(x_t) / n_t
    pool = (np.asarray(x_c) + x_t) / (np.asarray(n_c) + n_t)
    se0 = np.sqrt(pool * (1 - pool) * (1 / np.asarray(n_c) + 1 / np.asarray(n_t)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se0 > 0, (pt - pc) / se0, 0.0)
    m_c, m_t = np.asarray(n_c) + 2.0, np.asarray(n_t) + 2.0
    ac, at = (np.asarray(x_c) + 1.0) / m_c, (np.asarray(x_t) + 1.0) / m_t
    half = sps.norm.ppf(0.5 + level / 2) * np.sqrt(ac * (1 - ac) / m_c + at * (1 - at) / m_t)
    return TestResult(z, 2 * sps.norm.sf(np.abs(z)), pt - pc, at - ac - half, at - ac + half)


def _mean_var(n, s, ss):
    n, s, ss = (np.asarray(a, dtype=np.float64) for a in (n, s, ss))
    mean = s / n
    var = np.maximum(ss - s * mean, 0.0) / np.maximum(n - 1, 1)
    return mean, var


def welch_ttest(n_c, s_c, ss_c, n_t, s_t, ss_t, level: float = 0.95,
                use_scipy: bool = True) -> TestResult:
    """Welch t-test of mean_t - mean_c from (count, sum, sum of squares) of each group.

    The statistic and p-value come from `scipy.stats.ttest_ind_from_stats` (same numbers as the
    NumPy reference, `use_scipy=False`, to rounding; several times faster). Groups of one
    observation (no variance estimate; scipy answers NaN) and zero-variance pairs (t = 0, p = 1)
    take the reference formulas, as does the interval. Without spread in either group (every
    reward equal within each: all 0 before a revenue test's first purchase) the data give no
    variance to go on: the interval is (-inf, inf), not the zero-width [diff, diff].
    """
    from scipy import stats as sps
    _check_n(n_c, n_t)
    mc, vc = _mean_var(n_c, s_c, ss_c)
    mt, vt = _mean_var(n_t, s_t, ss_t)
    a, b = vc / n_c, vt / n_t
    se = np.sqrt(a + b)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (a + b) ** 2 / (a ** 2 / np.maximum(np.asarray(n_c) - 1, 1)
                             + b ** 2 / np.maximum(np.asarray(n_t) - 1, 1))
        if use_scipy and np.all(np.asarray(n_c) > 1) and np.all(np.asarray(n_t) > 1):
            res = sps.ttest_ind_from_stats(mt, np.sqrt(vt), n_t, mc, np.sqrt(vc), n_c,
                                           equal_var=False)
            t, p = np.where(se > 0, res.statistic, 0.0), np.where(se > 0, res.pvalue, 1.0)
        else:
            t, p = np.where(se > 0, (mt - mc) / se, 0.0), None
    df = np.where(np.isfinite(df), df, 1.0)
    if p is None:
        p = 2 * sps.t.sf(np.abs(t), df)
    half = np.where(se > 0, sps.t.ppf(0.5 + level / 2, df) * se, np.inf)
    return TestResult(t, p, mt - mc, mt - mc - half, mt - mc + half)


def prob_beat_control(x_c, n_c, x_t, n_t, prior=(1.0, 1.0)) -> float:
    """P(p_t > p_c) under independent Beta(prior + successes, prior + failures) posteriors.

    Exact up to quadrature error (~1e-8): integral of pdf_t(p) * cdf_c(p) dp.
    """
    from scipy import integrate
    from scipy import stats as sps
    _check_n(n_c, n_t)
    a0, b0 = prior
    post_c = sps.beta(a0 + x_c, b0 + n_c - x_c)
    post_t = sps.beta(a0 + x_t, b0 + n_t - x_t)
    lo = min(post_c.ppf(1e-12), post_t.ppf(1e-12))
    hi = max(post_c.ppf(1 - 1e-12), post_t.ppf(1 - 1e-12))
    mid = [post_c.mean(), post_t.mean()]
    val, _ = integrate.quad(lambda p: post_t.pdf(p) * post_c.cdf(p), lo, hi, points=mid,
                            limit=200, epsabs=1e-10)
    return float(min(max(val, 0.0), 1.0))


class SrmResult(NamedTuple):
    chi2: float
    pvalue: float
    mismatch: bool


def srm_check(counts, weights, alpha: float = 0.001) -> SrmResult:
    """Chi-square goodness of fit of observed assignment counts to the configured weights."""
    from scipy import stats as sps
    counts = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if counts.shape != w.shape or counts.size < 2 or (w <= 0).any():
        raise ValueError("counts and weights must have the same length >= 2, weights > 0")
    chi2, p = sps.chisquare(counts, w / w.sum() * counts.sum())
    return SrmResult(float(chi2), float(p), bool(p < alpha))


def msprt(diff, var_diff, tau2: float):
    """Always-valid p-value of H0: diff = 0 by mSPRT with a N(0, tau2) mixture (Johari et al.).

    Parameters
    ----------
    diff : array, estimated treatment - control difference at each look (or one look).
    var_diff : array, its variance at each look (e.g. var_c / n_c + var_t / n_t).
    tau2 : float, mixture variance; set to the squared effect size you care about.

    Returns
    -------
    p : array, running minimum of min(1, 1 / Lambda_n) with
        Lambda_n = sqrt(V / (V + tau2)) exp(tau2 diff^2 / (2 V (V + tau2))), V = var_diff.
        Rejecting when p <= alpha at any look keeps the type-I error <= alpha.
    """
    if not tau2 > 0:
        raise ValueError(f"tau2 must be > 0, got {tau2}")
    d, v = np.atleast_1d(diff).astype(float), np.atleast_1d(var_diff).astype(float)
    v = np.maximum(v, 1e-300)
    log_lam = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    p = np.minimum(1.0, np.exp(-log_lam))
    return np.minimum.accumulate(p, axis=-1)


class SampleSize(NamedTuple):
    """Observations per arm (control first), their total, and the two-sided significance
    level of each comparison with the control (alpha / (arms - 1), Bonferroni)."""

    per_arm: tuple[int, ...]
    total: int
    alpha: float


def _n_control_proportions(p_c, p_t, alpha, power, ratio=1.0) -> float:
    """Control n (treatment: ratio * n) of a two-sided two-proportion z-test, pooled null
    variance (Fleiss), not rounded."""
    from scipy import stats as sps
    za, zb = sps.norm.ppf(1 - alpha / 2), sps.norm.ppf(power)
    pbar = (p_c + ratio * p_t) / (1 + ratio)
    num = (za * np.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
           + zb * np.sqrt(p_c * (1 - p_c) + p_t * (1 - p_t) / ratio))
    return num ** 2 / (p_t - p_c) ** 2


def _n_control_means(d, alpha, power, ratio=1.0) -> float:
    """Control n (treatment: ratio * n) of a two-sided two-sample t-test at standardised
    effect d, exact (noncentral t), not rounded."""
    from scipy import optimize
    from scipy import stats as sps

    def shortfall(n):
        df = n * (1 + ratio) - 2
        crit = sps.t.ppf(1 - alpha / 2, df)
        nc = d * np.sqrt(n * ratio / (1 + ratio))
        got = sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)
        if not np.isfinite(got):  # scipy's noncentral t is NaN at some large df: normal limit
            got = sps.norm.sf(crit - nc) + sps.norm.cdf(-crit - nc)
        return got - power

    lo = 4.0 / (1 + ratio)  # two degrees of freedom
    if shortfall(lo) >= 0:
        return lo
    approx = (1 + 1 / ratio) * ((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) / d) ** 2
    if not approx < 1e18:  # t = z to many digits (or no finite size): the normal formula
        return approx
    return optimize.brentq(shortfall, lo, max(2 * lo, 4 * approx + 10))


def sample_size_proportions(p_c: float, p_t: float, alpha: float = 0.05,
                            power: float = 0.8) -> int:
    """Per-group n for a two-sided two-proportion z-test (pooled null variance, Fleiss)."""
    if not (0 < p_c < 1 and 0 < p_t < 1 and p_c != p_t):
        raise ValueError("p_c and p_t must be distinct probabilities in (0, 1)")
    return int(np.ceil(_n_control_proportions(p_c, p_t, alpha, power)))


def sample_size_means(effect: float, sd: float = 1.0, alpha: float = 0.05,
                      power: float = 0.8) -> int:
    """Per-group n for a two-sided two-sample t-test (exact, noncentral t; Cohen's tables)."""
    if not (effect != 0 and sd > 0):
        raise ValueError("effect must be non-zero and sd > 0")
    return int(np.ceil(_n_control_means(abs(effect) / sd, alpha, power)))


def sample_size(effect: float, *, baseline_rate: float | None = None, sd: float | None = None,
                alpha: float = 0.05, power: float = 0.8, arms: int = 2,
                allocation=None) -> SampleSize:
    """Observations per arm for every treatment arm to detect `effect` against arm 0.

    Parameters
    ----------
    effect : float
        Smallest treatment - control difference worth detecting (absolute; a rate difference
        for proportions).
    baseline_rate : float, optional
        Control conversion rate in (0, 1): two-proportion z-test (pooled null variance).
    sd : float, optional
        Standard deviation of the metric (give this or `baseline_rate`): two-sample t-test.
    alpha, power : float
        Two-sided family-wise significance (split over the arms - 1 comparisons) and power.
    arms : int
        Number of arms including the control (>= 2).
    allocation : sequence of float, optional
        Traffic weight per arm, control first (default: equal split).

    Returns
    -------
    SampleSize
        Each arm gets its share of the smallest total with which every comparison reaches
        the power; with two equal arms `per_arm` is `sample_size_proportions` /
        `sample_size_means` for both.
    """
    w = np.ones(arms) if allocation is None else np.asarray(allocation, dtype=np.float64)
    if arms < 2 or w.shape != (arms,) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("allocation: need one finite weight > 0 per arm, arms >= 2")
    if (baseline_rate is None) == (sd is None):
        raise ValueError("give baseline_rate or sd")
    if not (0 < alpha < 1 and 0 < power < 1 and np.isfinite(effect) and effect != 0):
        raise ValueError("alpha and power must be in (0, 1), effect finite and non-zero")
    if baseline_rate is not None and not (0 < baseline_rate < 1 and 0 < baseline_rate + effect < 1):
        raise ValueError("baseline_rate and baseline_rate + effect must be in (0, 1)")
    if sd is not None and not (np.isfinite(sd) and sd > 0):
        raise ValueError("sd must be finite and > 0")
    a = alpha / (arms - 1)
    ratios = np.unique(w[1:] / w[0])
    with np.errstate(divide="ignore", over="ignore"):  # a tiny effect: inf, refused below
        if baseline_rate is not None:  # closed form, every ratio at once
            n_c = np.max(_n_control_proportions(baseline_rate, baseline_rate + effect, a, power,
                                                ratios))
        else:  # power grows with the treatment share: the smallest ratio needs the most
            n_c = _n_control_means(abs(effect) / sd, a, power, ratios[0])
        total = n_c * w.sum() / w[0]
    if not np.isfinite(total):
        raise ValueError("effect: too small for a finite sample size")
    per_arm = tuple(int(n) for n in np.ceil(total * w / w.sum()))
    return SampleSize(per_arm, sum(per_arm), a)


def ab_analysis(n, s, ss, weights, control: int = 0, binary: bool = True,
                tau2: float | None = None, assigned=None) -> list[dict]:
    """Every variant against `control`: test, P(beat control) (binary), mSPRT p, plus SRM.

    ``n, s, ss`` are per-variant counts, reward sums and squared sums (a BanditState's fields,
    undiscounted). ``tau2`` defaults to (10% of the pooled mean of the control and the
    variant)^2: of the control's alone, it was 0 while the control had no conversion, and the
    mSPRT could then never reject (0/1000 against 500/1000: p = 0.99999). ``assigned``: the users
    assigned to each variant, which the sample-ratio check compares with ``weights`` (default
    ``n``; observations lag assignments by however long each reward takes, which differs
    between variants that convert differently).
    """
    n, s, ss = (np.asarray(a, dtype=np.float64) for a in (n, s, ss))
    if n.size < 2:  # one variant (against its holdout, say): nothing to compare or split
        return []
    split = n if assigned is None else np.asarray(assigned, dtype=np.float64)
    srm = srm_check(split, weights) if (split > 0).all() else None
    rows = []
    for arm in range(n.size):
        if arm == control or n[arm] < 2 or n[control] < 2:
            continue
        if binary:
            res = two_proportion_ztest(s[control], n[control], s[arm], n[arm])
            pbc = prob_beat_control(s[control], n[control], s[arm], n[arm])
        else:
            res = welch_ttest(n[control], s[control], ss[control], n[arm], s[arm], ss[arm])
            pbc = None
        mc, vc = _mean_var(n[control], s[control], ss[control])
        mt, vt = _mean_var(n[arm], s[arm], ss[arm])
        pooled = (s[control] + s[arm]) / (n[control] + n[arm])
        t2 = tau2 if tau2 else max((0.1 * abs(pooled)) ** 2, 1e-12)
        p_seq = float(msprt(mt - mc, vc / n[control] + vt / n[arm], t2)[-1])
        rows.append({"arm": arm, "control": control, "diff": float(res.diff),
                     "ci_low": float(res.ci_low), "ci_high": float(res.ci_high),
                     "statistic": float(res.statistic), "pvalue": float(res.pvalue),
                     "prob_beat_control": pbc, "msprt_pvalue": p_seq,
                     "srm_pvalue": srm.pvalue if srm else None,
                     "srm_mismatch": srm.mismatch if srm else None})
    return rows
