"""Campaign bandit policies: state, pure updates, decisions with propensities.

Policies: ``bernoulli_ts``, ``gaussian_ts`` (Normal-inverse-gamma), ``ucb1``, ``egreedy``,
``linucb``, ``lints`` (linear Thompson) and ``fixed`` (A/B/n split by hashing salt + user id).
Every policy can also hold out a fraction of users (they receive `HOLDOUT`, i.e. nothing).

State is flat float64 arrays (`BanditState`), serialisable with `to_bytes` / `from_bytes`, and
changed only by `update(state, arm, reward, x)`, so a server can read-modify-write it inside one
LMDB write transaction (`update_bytes`). Discounting: each update first multiplies every arm's
sufficient statistics by ``gamma`` (1 = stationary), so priors regain weight as data ages.

Each kernel in `kernels._bandits` has a plain-numpy reference here, chosen by ``use_native``;
the native policies draw from `kernels._rng.Rng` (`new_rng`), the references from numpy.
Posterior statistics (intervals, P(best), A/B analysis) are in `kernels.bandit_stats`.
"""
from __future__ import annotations

import dataclasses
import functools
import struct
from typing import NamedTuple

import numpy as np

from kernels import _bandits, _rng

__all__ = [
    "HOLDOUT", "POLICIES", "Params", "BadParam", "BanditState", "Decision", "new_state", "new_rng", "update",
    "update_bytes", "choose", "choose_batch", "BatchDecision", "fixed_arms", "sample_arms", "hash64",
    "hash_unit", "posterior_params",
]

HOLDOUT = -1
POLICIES = ("bernoulli_ts", "gaussian_ts", "ucb1", "egreedy", "linucb", "lints", "fixed")
LINEAR = ("linucb", "lints")
KIND_BETA, KIND_NIG, KIND_NORMAL = 0, 1, 2
_MAGIC = b"TLB1"


@dataclasses.dataclass(frozen=True)
class Params:
    """Policy hyper-parameters (all floats; serialised in this field order)."""

    gamma: float = 1.0
    """Forgetting factor in (0, 1]: statistics are multiplied by it before each update."""
    a0: float = 1.0
    """Beta prior alpha (Bernoulli rewards)."""
    b0: float = 1.0
    """Beta prior beta."""
    c: float = 1.0
    """UCB1 exploration scale: mean + c * sqrt(2 ln t / n)."""
    epsilon: float = 0.1
    """Exploration probability of epsilon-greedy."""
    alpha: float = 1.0
    """LinUCB width: x'theta + alpha * sqrt(x' A^-1 x)."""
    lam: float = 1.0
    """Ridge prior precision of the linear policies (A = lam I + sum x x')."""
    v: float = 1.0
    """Linear Thompson scale: score ~ N(x'theta, v^2 x' A^-1 x)."""
    mu0: float = 0.0
    """Normal-inverse-gamma prior mean (real-valued rewards)."""
    kappa0: float = 1.0
    """Normal-inverse-gamma prior pseudo-count of the mean."""
    na0: float = 1.0
    """Normal-inverse-gamma prior shape of the precision."""
    nb0: float = 1.0
    """Normal-inverse-gamma prior rate of the precision."""
    holdout: float = 0.0
    """Fraction of users (by hash) who receive nothing."""
    reward_model: float = 0.0
    """Model behind `campaign_stats`: 0 Beta-Bernoulli, 1 Normal-inverse-gamma (rewards
    outside [0, 1] are read with 1 whatever this says: `bandit_stats.stats_view`)."""


_NPARAMS = len(dataclasses.fields(Params))
_HEADER = struct.Struct(f"<4sB3xII{_NPARAMS}d")


@dataclasses.dataclass
class BanditState:
    """Sufficient statistics of one campaign (K arms, d context features).

    Attributes
    ----------
    policy : str
    params : Params
    weights : (K,) float64, split weights (``fixed``), normalised to sum 1
    n, s, ss : (K,) float64, discounted pulls, reward sums and sums of squared rewards
    A : (K, d, d) float64, discounted sum of x x' per arm (d = 0 unless linear)
    b : (K, d) float64, discounted sum of reward * x per arm
    """

    policy: str
    params: Params
    weights: np.ndarray
    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    A: np.ndarray
    b: np.ndarray

    @property
    def n_arms(self) -> int:
        return self.n.shape[0]

    @property
    def dim(self) -> int:
        return self.b.shape[1]

    def copy(self) -> BanditState:
        return dataclasses.replace(self, weights=self.weights.copy(), n=self.n.copy(),
                                   s=self.s.copy(), ss=self.ss.copy(), A=self.A.copy(),
                                   b=self.b.copy())

    def to_bytes(self) -> bytes:
        """Little-endian: header (magic, policy code, K, d, params) then weights|n|s|ss|A|b."""
        head = _HEADER.pack(_MAGIC, POLICIES.index(self.policy), self.n_arms, self.dim,
                            *self.params.__dict__.values())
        flat = np.concatenate((self.weights, self.n, self.s, self.ss, self.A.ravel(),
                               self.b.ravel()))
        return head + flat.astype("<f8", copy=False).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> BanditState:
        magic, code, k, d, *params = _HEADER.unpack_from(blob)
        if magic != _MAGIC or code >= len(POLICIES):
            raise ValueError("blob is not a serialised BanditState (bad magic or policy code)")
        flat = np.frombuffer(blob, dtype="<f8", offset=_HEADER.size).astype(np.float64)
        if flat.size != 4 * k + k * d * d + k * d:
            raise ValueError(f"blob has {flat.size} values, expected {4 * k + k * d * (d + 1)}")
        w, n, s, ss = flat[:k], flat[k:2 * k], flat[2 * k:3 * k], flat[3 * k:4 * k]
        A = flat[4 * k:4 * k + k * d * d].reshape(k, d, d)
        b = flat[4 * k + k * d * d:].reshape(k, d)
        return cls(POLICIES[code], _cached_params(tuple(params)), w, n, s, ss, A, b)


@functools.lru_cache(maxsize=4096)
def _cached_params(values: tuple) -> Params:
    """Params are immutable and campaigns few: reuse them across deserialisations."""
    return Params(*values)


class Decision(NamedTuple):
    """`arm` (or HOLDOUT), the probability the policy had of choosing it, all arms' probs."""

    arm: int
    propensity: float
    probs: np.ndarray | None


def new_state(policy: str, n_arms: int, dim: int = 0, *, weights=None, **params) -> BanditState:
    """Fresh state with zero statistics. ``params`` are `Params` fields (e.g. gamma=0.99)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if n_arms < 1:
        raise ValueError(f"n_arms must be >= 1, got {n_arms}")
    if (policy in LINEAR) != (dim > 0):
        raise ValueError(f"dim must be > 0 exactly for linear policies {LINEAR}, got {dim}")
    if policy == "gaussian_ts":
        params.setdefault("reward_model", 1.0)
    p = Params(**params)
    _check_params(p)
    w = np.full(n_arms, 1.0 / n_arms) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n_arms,) or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {n_arms} non-negative numbers with a positive sum")
    z = np.zeros(n_arms)
    return BanditState(policy, p, w / w.sum(), z, z.copy(), z.copy(),
                       np.zeros((n_arms, dim, dim)), np.zeros((n_arms, dim)))


PRIOR_RANGE = (1e-6, 1e12)
"""Where the positive prior parameters (a0, b0, lam, kappa0, na0, nb0) must lie: a ridge `lam`
near 0 leaves ``A + lam*I`` singular in floating point (LinUCB/LinTS then fail on every choice),
and values near the float range overflow the posteriors."""
SCALE_MAX = 1e12
"""Largest exploration scale (c, alpha, v, each >= 0) and prior mean magnitude (mu0)."""


class BadParam(ValueError):
    """A `Params` field out of its range: `name` is the field, `reason` what it must be."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name} {reason}")
        self.name, self.reason = name, reason


def _check_params(p: Params) -> None:
    low, high = PRIOR_RANGE
    ranges = [("gamma", 0.0 < p.gamma <= 1.0, "(0, 1]"),
              ("epsilon", 0.0 <= p.epsilon <= 1.0, "[0, 1]"),
              ("holdout", 0.0 <= p.holdout < 1.0, "[0, 1)"),
              *((name, low <= getattr(p, name) <= high, f"[{low:g}, {high:g}]")
                for name in ("a0", "b0", "lam", "kappa0", "na0", "nb0")),
              *((name, 0.0 <= getattr(p, name) <= SCALE_MAX, f"[0, {SCALE_MAX:g}]")
                for name in ("c", "alpha", "v"))]
    for name, ok, allowed in ranges:
        if not ok:
            raise BadParam(name, f"must be in {allowed}, got {getattr(p, name)}")
    if not abs(p.mu0) <= SCALE_MAX:
        raise BadParam("mu0", f"must be within ±{SCALE_MAX:g}, got {p.mu0}")
    if p.reward_model not in (0.0, 1.0):  # any other value was read as 0
        raise BadParam("reward_model", "must be 0 (Beta-Bernoulli) or 1 (Normal-inverse-gamma), "
                       f"got {p.reward_model}")


def new_rng(seed: int, use_native: bool = True):
    """The generator `choose` expects: `_rng.Rng` (native) or `np.random.Generator`."""
    return _rng.Rng(seed) if use_native else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Updates


def update(state: BanditState, arm: int, reward: float, x=None, *, inplace: bool = False,
           use_native: bool = True) -> BanditState:
    """Discount all arms by gamma, then add (arm, reward[, x]). Returns the new state.

    Pure unless ``inplace=True``. Linear policies need the context ``x`` (d,) used to decide.
    """
    if not 0 <= arm < state.n_arms:
        raise ValueError(f"arm must be in [0, {state.n_arms}), got {arm}")
    st = state if inplace else state.copy()
    g, r = state.params.gamma, float(reward)
    if state.policy in LINEAR:
        xv = _check_x(x, state.dim)
        if use_native:
            _bandits.update_linear(st.A, st.b, st.n, st.s, st.ss, arm, r, xv, g)
            return st
        for a in (st.A, st.b):
            a *= g
        st.A[arm] += np.outer(xv, xv)
        st.b[arm] += r * xv
    elif use_native:
        _bandits.update_stats(st.n, st.s, st.ss, arm, r, g)
        return st
    for a in (st.n, st.s, st.ss):
        a *= g
    st.n[arm] += 1.0
    st.s[arm] += r
    st.ss[arm] += r * r
    return st


def update_bytes(blob: bytes, arm: int, reward: float, x=None) -> bytes:
    """Read-modify-write helper for one LMDB transaction: bytes in, updated bytes out."""
    st = BanditState.from_bytes(blob)
    return update(st, arm, reward, x, inplace=True).to_bytes()


def _check_x(x, dim: int) -> np.ndarray:
    if x is None:
        raise ValueError(f"x (context, {dim} floats) is required by linear policies")
    xv = np.ascontiguousarray(x, dtype=np.float64)
    if xv.shape != (dim,) or not np.isfinite(xv).all():
        raise ValueError(f"x must be {dim} finite floats, got shape {xv.shape}")
    return xv


# ---------------------------------------------------------------------------------------------
# Hashing (fixed split, holdout)


def hash64(data: bytes, use_native: bool = True) -> int:
    """FNV-1a 64 + splitmix64 finaliser; stable across processes, platforms, Python versions."""
    if use_native:
        return int(_bandits.hash64(np.frombuffer(bytes(data), dtype=np.uint8)))
    m = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & m
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & m
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & m
    return h ^ (h >> 31)


def hash_unit(salt: str, user_id: str, tag: str = "split", use_native: bool = True) -> float:
    """Deterministic uniform in [0, 1) from (salt, user_id, tag) (53 bits of hash64)."""
    data = b"\x1f".join(t.encode("utf-8") for t in (salt, tag, str(user_id)))
    return (hash64(data, use_native) >> 11) * 2.0 ** -53


# ---------------------------------------------------------------------------------------------
# Decisions


def posterior_params(state: BanditState, x=None) -> tuple[int, np.ndarray]:
    """(kind, (4, K) parameters) of the per-arm posterior used by Thompson and the stats."""
    p, k = state.params, state.n_arms
    out = np.zeros((4, k))
    if state.policy == "lints":
        mean, var = _linear_moments(state, _check_x(x, state.dim), True)
        out[0], out[1] = mean, p.v * np.sqrt(var)
        return KIND_NORMAL, out
    if state.policy == "gaussian_ts" or (p.reward_model == 1.0 and state.policy != "bernoulli_ts"):
        n, s, ss = state.n, state.s, state.ss
        kn = p.kappa0 + n
        xbar = np.divide(s, n, out=np.zeros(k), where=n > 0)
        sq = np.maximum(ss - s * xbar, 0.0)
        out[0] = (p.kappa0 * p.mu0 + s) / kn
        out[1], out[2] = kn, p.na0 + 0.5 * n
        out[3] = p.nb0 + 0.5 * sq + 0.5 * p.kappa0 * n * (xbar - p.mu0) ** 2 / kn
        return KIND_NIG, out
    out[0] = p.a0 + state.s
    out[1] = p.b0 + np.maximum(state.n - state.s, 0.0)
    return KIND_BETA, out


def choose(state: BanditState, rng, x=None, *, user_id=None, salt: str = "", n_mc: int = 256,
           wins: int = 0, max_samples: int = 0, use_native: bool = True) -> Decision:
    """Pick an arm for one request.

    Parameters
    ----------
    state : BanditState
    rng : `_rng.Rng` (native) or `np.random.Generator` (reference); see `new_rng`.
    x : (d,) float64, context features; required by linucb / lints.
    user_id, salt : str, hashed for ``fixed`` and for the holdout (required if either is used).
    n_mc : int, Monte Carlo draws behind Thompson propensities (0 = skip them: propensity nan).
        Standard error of a propensity p is sqrt(p (1 - p) / n_mc): <= 0.031 at 256 draws.
    wins, max_samples : int, for ``lints`` when `wins` > 0: the propensity by inverse sampling
        instead of `n_mc` draws (`_bandits.ts_choose_inverse`: draws until the chosen arm has
        won `wins` of them, at most `max_samples` arm values), whose inverse is an unbiased
        IPS weight unless the cap is reached.

    Returns
    -------
    Decision(arm, propensity, probs). Holdout users get arm HOLDOUT with propensity = holdout.
    Propensities are exact for ucb1 / egreedy / linucb / fixed, Monte Carlo for Thompson.
    """
    p = state.params
    if p.holdout > 0.0 or state.policy == "fixed":
        if user_id is None:
            raise ValueError("user_id is required by fixed splits and holdouts")
        if p.holdout > 0.0 and hash_unit(salt, user_id, "holdout", use_native) < p.holdout:
            return Decision(HOLDOUT, p.holdout, None)
    if state.policy == "fixed":
        u = hash_unit(salt, user_id, "split", use_native)
        arm = int(fixed_arms(state, u))
        return Decision(arm, float(state.weights[arm]), state.weights.copy())
    probs = np.full(state.n_arms, np.nan)
    if state.policy in ("ucb1", "egreedy", "linucb"):
        arm = (_choose_native if use_native else _choose_numpy)(state, x, rng, probs)
    elif state.policy == "bernoulli_ts" and n_mc == 0 and use_native:
        arm = _bandits.beta_ts_choose(state.n, state.s, p.a0, p.b0, rng)
    else:
        kind, post = posterior_params(state, x)
        if wins > 0 and state.policy == "lints":
            arm = (_bandits.ts_choose_inverse if use_native else _ts_inverse_numpy)(
                kind, post, rng, wins, max_samples, probs)[0]
        elif use_native:
            arm = _bandits.ts_choose(kind, post, rng, n_mc, probs)
        else:
            arm = _ts_numpy(kind, post, rng, n_mc, probs)
    return Decision(int(arm), float(probs[arm]), probs)


class BatchDecision(NamedTuple):
    """One decision per user of a batch: `arms` (int64, HOLDOUT for the holdout) and the
    probability the policy had of choosing each (`propensities`, float64)."""

    arms: np.ndarray
    propensities: np.ndarray


def fixed_arms(state: BanditState, u):
    """The arm(s) a fixed split gives the user hash(es) `u` in [0, 1): the first arm whose
    cumulative weight exceeds `u` (the last arm for rounding at the top)."""
    return np.minimum(np.searchsorted(np.cumsum(state.weights), u, side="right"), state.n_arms - 1)


def sample_arms(probs: np.ndarray, rng, n: int) -> np.ndarray:
    """`n` arms drawn independently from the distribution `probs` (one `rng.random` call)."""
    cum = np.cumsum(probs)
    arms = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
    return np.minimum(arms, probs.size - 1).astype(np.int64)


def choose_batch(state: BanditState, rng, user_ids, X=None, *, salt: str = "", n_mc: int = 256,
                 wins: int = 0, max_samples: int = 0, probs=None,
                 use_native: bool = True) -> BatchDecision:
    """Pick an arm for each user of a batch, as `choose` would for each one alone.

    The arm distribution of the context-free policies (ucb1, egreedy, Thompson) depends only on
    the state, so it is computed once (or taken from `probs`, e.g. a cached Thompson estimate)
    and every arm is drawn from it with one `rng.random(n)` call: the propensity logged is
    exactly the probability of the draw. ``fixed`` and the holdout hash each user id; the linear
    policies depend on each row of ``X`` (n, d) and fall back to `choose` per row.

    Parameters
    ----------
    state, rng, salt, n_mc, wins, max_samples, use_native : as for `choose`.
    user_ids : sequence of str, the batch.
    X : (n, d) float64 contexts; required by linucb / lints.
    probs : (K,) arm probabilities to draw from instead of computing them (context-free only).
    """
    n, p = len(user_ids), state.params
    arms, props = np.empty(n, np.int64), np.empty(n)
    rest = np.ones(n, bool)
    if p.holdout > 0.0:
        rest = np.array([hash_unit(salt, u, "holdout", use_native) >= p.holdout
                         for u in user_ids], bool)
        arms[~rest], props[~rest] = HOLDOUT, p.holdout
        state = dataclasses.replace(state, params=dataclasses.replace(p, holdout=0.0))
    idx = np.flatnonzero(rest)
    if state.policy == "fixed":
        u = np.array([hash_unit(salt, user_ids[i], "split", use_native) for i in idx])
        arms[idx] = fixed_arms(state, u)
        props[idx] = state.weights[arms[idx]]
    elif state.policy in LINEAR:
        for i in idx:
            d = choose(state, rng, X[i], n_mc=n_mc, wins=wins, max_samples=max_samples,
                       use_native=use_native)
            arms[i], props[i] = d.arm, d.propensity
    else:
        if probs is None:
            probs = choose(state, rng, n_mc=max(n_mc, 1), use_native=use_native).probs
        arms[idx] = sample_arms(np.asarray(probs, np.float64), rng, idx.size)
        props[idx] = np.asarray(probs)[arms[idx]]
    return BatchDecision(arms, props)


def _choose_native(state, x, rng, probs) -> int:
    p = state.params
    if state.policy == "ucb1":
        return _bandits.ucb1_choose(state.n, state.s, p.c, rng, probs)
    if state.policy == "egreedy":
        return _bandits.egreedy_choose(state.n, state.s, p.epsilon, rng, probs)
    return _bandits.linucb_choose(state.A, state.b, _check_x(x, state.dim), p.lam, p.alpha,
                                  rng, probs)


def _choose_numpy(state, x, rng, probs) -> int:
    p = state.params
    if state.policy == "linucb":
        mean, var = _linear_moments(state, _check_x(x, state.dim), False)
        score = mean + p.alpha * np.sqrt(var)
    elif state.policy == "ucb1":
        score = ucb1_scores(state, use_native=False)
    else:
        score = np.divide(state.s, state.n, out=np.full(state.n_arms, np.inf), where=state.n > 0)
    ties = np.flatnonzero(score == score.max())
    probs[:] = 0.0
    probs[ties] = 1.0 / ties.size
    arm = int(ties[rng.integers(ties.size)]) if ties.size > 1 else int(ties[0])
    if state.policy == "egreedy":
        probs[:] = (1.0 - p.epsilon) * probs + p.epsilon / state.n_arms
        if rng.random() < p.epsilon:
            arm = int(rng.integers(state.n_arms))
    return arm


def ucb1_scores(state: BanditState, use_native: bool = True) -> np.ndarray:
    """UCB1 index per arm: mean + c sqrt(2 ln(sum n) / n); +inf for untried arms."""
    out = np.empty(state.n_arms)
    if use_native:
        _bandits.ucb1_scores(state.n, state.s, state.params.c, out)
        return out
    n, t = state.n, state.n.sum()
    logt = np.log(t) if t > 1.0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = state.s / n + state.params.c * np.sqrt(2.0 * logt / n)
    out[n <= 0] = np.inf
    return out


def _linear_moments(state, x, use_native) -> tuple[np.ndarray, np.ndarray]:
    """x'theta_a and x'(A_a + lam I)^-1 x for every arm."""
    lam = state.params.lam
    if use_native:
        mean, var = np.empty(state.n_arms), np.empty(state.n_arms)
        _bandits.linear_moments(state.A, state.b, x, lam, mean, var)
        return mean, var
    reg = state.A + lam * np.eye(state.dim)
    theta = np.linalg.solve(reg, state.b[..., None])[..., 0]
    ainv_x = np.linalg.solve(reg, np.broadcast_to(x, state.b.shape)[..., None])[..., 0]
    return theta @ x, ainv_x @ x


def linear_moments(state: BanditState, x, use_native: bool = True):
    """Public view of the linear posterior: (mean, variance) of x'theta per arm."""
    return _linear_moments(state, _check_x(x, state.dim), use_native)


def _draw_numpy(kind, post, rng, size) -> np.ndarray:
    k = post.shape[1]
    if kind == KIND_BETA:
        return rng.beta(post[0], post[1], size=(size, k))
    if kind == KIND_NIG:
        tau = rng.gamma(post[2], 1.0 / post[3], size=(size, k))
        return post[0] + rng.standard_normal((size, k)) / np.sqrt(post[1] * tau)
    return post[0] + post[1] * rng.standard_normal((size, k))


def _ts_inverse_numpy(kind, post, rng, wins, max_samples, probs) -> tuple[int, int]:
    """NumPy reference of `_bandits.ts_choose_inverse` (the same estimate; draws in blocks)."""
    if wins < 1:
        raise ValueError("wins must be at least 1")
    k = post.shape[1]
    cap = max(max_samples // k, _bandits.INVERSE_MIN_DRAWS)
    arm = int(np.argmax(_draw_numpy(kind, post, rng, 1)[0]))
    counts, n = np.zeros(k), 0
    while counts[arm] < wins and n < cap:
        best = np.argmax(_draw_numpy(kind, post, rng, min(max(2 * wins, n), cap - n)), axis=1)
        won = np.cumsum(best == arm) + counts[arm]
        stop = int(np.searchsorted(won, wins)) + 1 if won[-1] >= wins else best.size
        counts += np.bincount(best[:stop], minlength=k)
        n += stop
    if counts[arm] >= wins:
        probs[:] = counts / n
    else:
        counts[arm] += 1.0
        probs[:] = counts / (n + 1.0)
    return arm, n


def _ts_numpy(kind, post, rng, n_mc, probs) -> int:
    arm = int(np.argmax(_draw_numpy(kind, post, rng, 1)[0]))
    if n_mc > 0:
        wins = np.bincount(np.argmax(_draw_numpy(kind, post, rng, n_mc), axis=1),
                           minlength=post.shape[1]).astype(np.float64)
        wins[arm] += 1.0
        probs[:] = wins / (n_mc + 1.0)
    return arm
