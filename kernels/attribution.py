"""Multi-touch attribution: heuristics, exact Markov removal effects and Shapley values.

Paths are held encoded (`Paths`): a channel vocabulary, a CSR of int32 channel ids, and per-path
float64 conversions / value / nulls (plus optional per-touch timestamps, in seconds). Every model
has a plain numpy / pure-Python reference here and a Cython kernel in `_attribution.pyx`, picked
with ``use_native``. `attribute` validates and dispatches; it raises `ValueError` naming the
argument and the problem.

Models
------
first, last, last_non_direct, linear, position, time_decay
    Rule-based; raw touches count (repeats included). Credits of a path sum to its conversions.
markov
    Order-k absorbing chain (k = 1..4) solved exactly, with ChannelAttribution's conventions:
    a state is a window of k touches (a shorter path is one shorter state), consecutive identical
    states are merged, each path's transitions are weighted by conversions + nulls, its last
    state goes to conversion / null with those counts. Removing a channel sends every
    transition into a state holding it to null. Credits = total * RE_c / sum(RE).
shapley
    ``counts``: coalition value = conversions of the paths whose channel set lies in the
    coalition, which reduces to an equal split over each path's distinct channels (exact, any
    number of channels). ``ordered``: the same credit broken down by the rank of the channel's
    first touch (Zhao et al. 2018, "ordered Shapley"). ``rate``: coalition value = conversion
    rate of the paths inside it, exact over all 2**n coalitions up to ``max_exact_channels``,
    credits normalised to total conversions (they can be negative); past the limit, permutation
    sampling with a reported standard error if ``samples`` is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "MODELS", "HEURISTICS", "Paths", "Attribution", "attribute", "parse_channelattribution",
    "markov_reference_states",
]

HEURISTICS = {"first": 0, "last": 1, "last_non_direct": 2, "linear": 3, "position": 4,
              "time_decay": 5}
MODELS = (*HEURISTICS, "markov", "shapley")
SHAPLEY_FORMS = ("counts", "rate", "ordered")
MAX_ORDER = 4
MAX_EXACT_LIMIT = 24
DAY = 86400.0
_DENSE_SOLVE_MAX = 64  # beyond this, OpenBLAS threads thrash on a busy machine
_TABLE_MAX = 1 << 22
_DENSE_COUNTS_MAX = 1 << 22


def _native():
    from . import _attribution
    return _attribution


# ------------------------------------------------------------------------------------------------
# Encoded paths and parsing


@dataclass(frozen=True)
class Paths:
    """Aggregated paths: channel vocabulary + CSR of channel ids + per-path counts.

    Attributes
    ----------
    channels : tuple of str
        Channel names; ``indices`` refer to positions in it.
    indptr : int64 array, n_paths + 1
    indices : int32 array, nnz
    conversions, value, nulls : float64 arrays, n_paths
    timestamps : float64 array, nnz, or None
        Touch times in seconds (time-decay only).
    """

    channels: tuple
    indptr: np.ndarray
    indices: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    nulls: np.ndarray
    timestamps: np.ndarray | None = None

    @property
    def n_paths(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def path(self, i: int) -> list[str]:
        return [self.channels[c] for c in self.indices[self.indptr[i]:self.indptr[i + 1]]]

    @classmethod
    def from_sequences(cls, paths: Sequence[Sequence[str] | str], conversions=None, value=None,
                       nulls=None, timestamps=None, channels: Sequence[str] | None = None,
                       sep: str = ">") -> "Paths":
        """Encode channel sequences (lists of names or ``"a > b > c"`` strings).

        ``conversions`` defaults to 1 per path, ``value`` and ``nulls`` to 0. ``timestamps`` is
        one sequence of numbers per path, aligned with its touches.
        """
        n = len(paths)
        if all(isinstance(p, str) for p in paths):  # one split over all paths: fast parsing
            lengths = np.fromiter((p.count(sep) + 1 for p in paths), dtype=np.int64, count=n)
            tokens = list(map(str.strip, sep.join(paths).split(sep))) if n else []
        else:
            seqs = [p.split(sep) if isinstance(p, str) else list(p) for p in paths]
            lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
            tokens = [str(t).strip() for s in seqs for t in s]
        names = dict.fromkeys(channels or ())
        names.update(dict.fromkeys(tokens))  # first-seen order, at C speed
        vocab = {c: i for i, c in enumerate(names)}
        ids = np.fromiter(map(vocab.__getitem__, tokens), dtype=np.int32, count=len(tokens))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        ts = None
        if timestamps is not None:
            ts = np.asarray([float(t) for s in timestamps for t in s], dtype=np.float64)
            if len(timestamps) != n or len(ts) != len(tokens):
                raise ValueError("timestamps: need one timestamp per touch of every path")
        return cls(tuple(vocab), indptr, ids, _per_path(conversions, n, 1.0, "conversions"),
                   _per_path(value, n, 0.0, "value"), _per_path(nulls, n, 0.0, "nulls"), ts)

    def subset(self, rows: np.ndarray) -> "Paths":
        """The paths at ``rows`` (same vocabulary)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        touch = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        ts = None if self.timestamps is None else self.timestamps[touch]
        return Paths(self.channels, indptr, self.indices[touch], self.conversions[rows],
                     self.value[rows], self.nulls[rows], ts)


def _per_path(x, n: int, default: float, name: str) -> np.ndarray:
    if x is None:
        return np.full(n, default, dtype=np.float64)
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} values (one per path), got shape {arr.shape}")
    return arr


def parse_channelattribution(lines: Iterable[str], sep: str = ";") -> Paths:
    """Parse ChannelAttribution's aggregated format.

    Each line is ``path;total_conversions;total_conversion_value;total_null`` with ``" > "``
    between channels; value and null columns may be absent. A header line is skipped.
    """
    rows = [line.strip().split(sep) for line in lines]
    numbered = [(i, r) for i, r in enumerate(rows, 1) if r != [""]]
    if numbered and numbered[0][0] == 1 and not _numeric(numbered[0][1][1:2]):
        numbered = numbered[1:]  # header
    try:  # fast path: every row has the same numeric columns
        arr = np.array([r[1:4] for _, r in numbered], dtype=np.float64).reshape(len(numbered), -1)
    except ValueError:
        arr = None
    if arr is None or not 1 <= arr.shape[1] <= 3:
        arr = _parse_rows_slowly(numbered, sep)
    arr = np.hstack([arr, np.zeros((len(arr), 3 - arr.shape[1]))])
    paths = [r[0] for _, r in numbered]
    return Paths.from_sequences(paths, arr[:, 0], arr[:, 1], arr[:, 2])


def _numeric(fields: list[str]) -> bool:
    try:
        return len(fields) > 0 and all(float(f) == float(f) for f in fields)
    except ValueError:
        return False


def _parse_rows_slowly(numbered, sep) -> np.ndarray:
    """Row by row, so that a bad line is reported with its number."""
    out = np.zeros((len(numbered), 3))
    for k, (lineno, parts) in enumerate(numbered):
        if len(parts) < 2:
            raise ValueError(f"line {lineno}: expected path{sep}conversions[{sep}value{sep}nulls]")
        try:
            nums = [float(x) for x in parts[1:4]]
        except ValueError:
            line = sep.join(parts)
            raise ValueError(f"line {lineno}: counts must be numbers: {line!r}") from None
        out[k, :len(nums)] = nums
    return out


# ------------------------------------------------------------------------------------------------
# Validation


def _check_paths(paths: Paths) -> None:
    if not isinstance(paths, Paths):
        raise ValueError(f"paths: expected a Paths, got {type(paths).__name__}")
    if paths.n_paths == 0:
        raise ValueError("paths: no paths given")
    empty = np.flatnonzero(paths.lengths <= 0)
    if len(empty):
        raise ValueError(f"paths: path {int(empty[0])} is empty (every path needs a touch)")
    if paths.n_channels == 0 or len(paths.indices) and (
            paths.indices.min() < 0 or paths.indices.max() >= paths.n_channels):
        raise ValueError("paths: channel ids must index the channel vocabulary")
    for name in ("conversions", "value", "nulls"):
        arr = getattr(paths, name)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite")
        bad = np.flatnonzero(arr < 0)
        if len(bad):
            raise ValueError(f"{name}: must be non-negative (path {int(bad[0])} has {arr[bad[0]]})")
    if paths.timestamps is not None and (len(paths.timestamps) != len(paths.indices)
                                         or not np.all(np.isfinite(paths.timestamps))):
        raise ValueError("timestamps: need one finite timestamp per touch")


def _check_options(model, order, position_shares, half_life, shapley_form, max_exact_channels):
    if model not in MODELS:
        raise ValueError(f"model: unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not (
            1 <= order <= MAX_ORDER):
        raise ValueError(f"order: must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    first, last = position_shares
    if first < 0 or last < 0 or first + last > 1 or first + last <= 0:
        raise ValueError("position_shares: need first, last >= 0 with 0 < first + last <= 1, "
                         f"got {position_shares!r}")
    if not half_life > 0:
        raise ValueError(f"half_life: must be > 0 seconds, got {half_life!r}")
    if not 1 <= max_exact_channels <= MAX_EXACT_LIMIT:
        raise ValueError(f"max_exact_channels: must be 1..{MAX_EXACT_LIMIT} (2**n coalitions), "
                         f"got {max_exact_channels!r}")
    if shapley_form not in SHAPLEY_FORMS:
        raise ValueError(f"shapley_form: expected one of {', '.join(SHAPLEY_FORMS)}, "
                         f"got {shapley_form!r}")


# ------------------------------------------------------------------------------------------------
# Results and dispatch


@dataclass
class Attribution:
    """Per-channel credits.

    Attributes
    ----------
    model : str
    channels : tuple of str
    conversions, value : float64 arrays, n_channels
        Credited conversions and conversion value per channel.
    touch_share : float64 array, nnz, or None
        On request: the fraction of its path's conversions credited to each touch.
    details : dict
        Model extras (removal effects, transition matrix, ranks, standard errors...).
    """

    model: str
    channels: tuple
    conversions: np.ndarray
    value: np.ndarray
    touch_share: np.ndarray | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {c: {"conversions": float(self.conversions[i]), "value": float(self.value[i])}
                for i, c in enumerate(self.channels)}


def attribute(paths: Paths, model: str, *, order: int = 1,
              position_shares: tuple[float, float] = (0.4, 0.4), half_life: float = 7 * DAY,
              direct: str = "direct", shapley_form: str = "counts",
              max_exact_channels: int = 20, samples: int | None = None, seed: int = 0,
              transition_matrix: bool = False, path_credits: bool = False,
              use_native: bool = True) -> Attribution:
    """Attribute the conversions (and value) of ``paths`` to channels with ``model``.

    Parameters
    ----------
    paths : Paths
    model : str
        One of `MODELS`.
    order : int
        Markov order, 1..4.
    position_shares : (float, float)
        First and last touch shares of the position-based model; the rest goes to the middle.
    half_life : float
        Time-decay half-life in seconds (timestamps are in seconds); default 7 days.
    direct : str
        Channel skipped by ``last_non_direct`` unless a path holds nothing else.
    shapley_form : {"counts", "rate", "ordered"}
    max_exact_channels : int
        Largest channel count for the exact ``rate`` Shapley (2**n coalitions).
    samples : int, optional
        Permutations for sampled ``rate`` Shapley past ``max_exact_channels``.
    transition_matrix : bool
        Markov: also return the state labels and the transition probability matrix.
    path_credits : bool
        Also return ``touch_share``.
    use_native : bool
        Cython kernel (default) or the numpy / pure-Python reference.

    Returns
    -------
    Attribution
    """
    _check_paths(paths)
    _check_options(model, order, position_shares, half_life, shapley_form, max_exact_channels)
    if model in HEURISTICS:
        if model == "time_decay" and paths.timestamps is None:
            raise ValueError("timestamps: the time_decay model needs touch timestamps")
        fn = _heuristic_native if use_native else _heuristic_reference
        conv, val, share = fn(paths, HEURISTICS[model], position_shares, half_life,
                              _channel_id(paths, direct))
        return Attribution(model, paths.channels, conv, val, share if path_credits else None)
    if model == "markov":
        fn = _markov_native if use_native else _markov_reference
        res = fn(paths, int(order), transition_matrix)
    else:
        res = _shapley(paths, shapley_form, max_exact_channels, samples, seed, use_native)
    if path_credits:
        res.touch_share = _apportion(paths, res.details.get("weights", res.conversions))
    return res


def _channel_id(paths: Paths, name: str) -> int:
    try:
        return paths.channels.index(name)
    except ValueError:
        return -1


def _apportion(paths: Paths, weight: np.ndarray) -> np.ndarray:
    """Split each path over its distinct channels by ``weight``, evenly over repeated touches."""
    n = paths.n_paths
    row = np.repeat(np.arange(n), paths.lengths)
    key = row * paths.n_channels + paths.indices
    uniq, inv, reps = np.unique(key, return_inverse=True, return_counts=True)
    w = np.clip(weight, 0, None)[uniq % paths.n_channels]
    total = np.bincount(uniq // paths.n_channels, weights=w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (w / total[uniq // paths.n_channels] / reps)[inv]
    return np.nan_to_num(share)


# ------------------------------------------------------------------------------------------------
# Heuristics


def _heuristic_native(paths, code, shares, half_life, direct):
    k = _native()
    conv = np.zeros(paths.n_channels)
    val = np.zeros(paths.n_channels)
    share = np.empty(len(paths.indices))
    ts = paths.timestamps if paths.timestamps is not None else np.empty(0)
    k.heuristic(paths.indptr, paths.indices, ts, paths.conversions, paths.value, code,
                float(shares[0]), float(shares[1]), float(half_life), direct, share, conv, val)
    return conv, val, share


def _heuristic_reference(paths, code, shares, half_life, direct):
    conv = np.zeros(paths.n_channels)
    val = np.zeros(paths.n_channels)
    share = np.zeros(len(paths.indices))
    ind, ptr = paths.indices.tolist(), paths.indptr.tolist()
    for p in range(paths.n_paths):
        a, b = ptr[p], ptr[p + 1]
        w = _path_shares(code, ind[a:b], paths.timestamps, a, shares, half_life, direct)
        for j, s in enumerate(w):
            share[a + j] = s
            conv[ind[a + j]] += s * paths.conversions[p]
            val[ind[a + j]] += s * paths.value[p]
    return conv, val, share


def _path_shares(code, ch, timestamps, offset, shares, half_life, direct):
    n = len(ch)
    w = [0.0] * n
    if code == 0:
        w[0] = 1.0
    elif code == 1:
        w[-1] = 1.0
    elif code == 2:
        non_direct = [j for j in range(n) if ch[j] != direct]
        w[non_direct[-1] if non_direct else n - 1] = 1.0
    elif code == 3:
        w = [1.0 / n] * n
    elif code == 4:
        first, last = shares
        if n == 1:
            w = [1.0]
        elif n == 2:
            w = [first / (first + last), last / (first + last)]
        else:
            w = [first] + [(1.0 - first - last) / (n - 2)] * (n - 2) + [last]
    else:
        ts = timestamps[offset:offset + n]
        raw = np.exp2((ts - ts.max()) / half_life)
        w = list(raw / raw.sum())
    return w


# ------------------------------------------------------------------------------------------------
# Markov chain removal effects


@dataclass
class _Chain:
    """Order-k chain: state codes, start/transition counts and per-state sinks."""

    codes: np.ndarray           # (S,) int64, sorted
    counts: object              # (S + 1, S) dense ndarray or scipy CSR; row S is the start
    sink_conv: np.ndarray
    sink_null: np.ndarray
    sink_value: np.ndarray


def _markov_native(paths: Paths, order: int, want_matrix: bool) -> Attribution:
    k = _native()
    base = paths.n_channels + 1
    weight = paths.conversions + paths.nulls
    codes = np.empty(len(paths.indices), dtype=np.int64)
    sindptr = np.empty(paths.n_paths + 1, dtype=np.int64)
    m = k.markov_encode(paths.indptr, paths.indices, weight, order, base, codes, sindptr)
    codes = codes[:m]
    if base ** order <= _TABLE_MAX:
        seen = np.bincount(codes, minlength=base ** order) > 0
        uniq = np.flatnonzero(seen)
        states = (np.cumsum(seen, dtype=np.int32) - 1)[codes]
    else:
        uniq, states = np.unique(codes, return_inverse=True)
        states = states.astype(np.int32)
    n_states = len(uniq)
    sinks = np.zeros((3, n_states))
    if (n_states + 1) * n_states <= _DENSE_COUNTS_MAX:
        counts = np.zeros((n_states + 1, n_states))
        k.markov_counts(sindptr, states, paths.conversions, paths.nulls, paths.value, counts,
                        sinks[0], sinks[1], sinks[2])
    else:
        src = np.empty(m, dtype=np.int32)
        edge_w = np.empty(m)
        k.markov_edges(sindptr, states, paths.conversions, paths.nulls, paths.value, n_states,
                       src, edge_w, sinks[0], sinks[1], sinks[2])
        from scipy import sparse
        counts = sparse.csr_matrix((edge_w, (src, states)), shape=(n_states + 1, n_states))
    chain = _Chain(uniq, counts, sinks[0], sinks[1], sinks[2])
    return _markov_solve(paths, chain, order, want_matrix)


def markov_reference_states(path: Sequence[int], order: int, base: int) -> list[int]:
    """Pure-Python order-k states of one path (codes as in the kernel), merged runs removed."""
    w = min(order, len(path))
    out: list[int] = []
    for j in range(len(path) - w + 1):
        code = 0
        for c in reversed(path[j:j + w]):
            code = code * base + c + 1
        if not out or out[-1] != code:
            out.append(code)
    return out


def _markov_reference(paths: Paths, order: int, want_matrix: bool) -> Attribution:
    base = paths.n_channels + 1
    ind, ptr = paths.indices.tolist(), paths.indptr.tolist()
    trans: dict[tuple[int, int], float] = {}
    sinks: dict[int, list[float]] = {}
    for p in range(paths.n_paths):
        w = paths.conversions[p] + paths.nulls[p]
        if w <= 0:
            continue
        prev = -1
        for code in markov_reference_states(ind[ptr[p]:ptr[p + 1]], order, base):
            trans[prev, code] = trans.get((prev, code), 0.0) + w
            prev = code
        sink = sinks.setdefault(prev, [0.0, 0.0, 0.0])
        sink[0] += paths.conversions[p]
        sink[1] += paths.nulls[p]
        sink[2] += paths.value[p]
    codes = np.array(sorted(sinks.keys() | {b for _, b in trans}), dtype=np.int64)
    pos = {int(c): i for i, c in enumerate(codes)}
    n_states = len(codes)
    counts = np.zeros((n_states + 1, n_states))
    for (a, b), w in trans.items():
        counts[pos[a] if a >= 0 else n_states, pos[b]] += w
    sink = np.zeros((3, n_states))
    for c, vals in sinks.items():
        sink[:, pos[c]] = vals
    chain = _Chain(codes, counts, sink[0], sink[1], sink[2])
    return _markov_solve(paths, chain, order, want_matrix, direct=True)


def _state_channels(codes: np.ndarray, n_channels: int) -> np.ndarray:
    """Boolean (S, n_channels): does state s hold channel c."""
    base = n_channels + 1
    member = np.zeros((len(codes), base), dtype=bool)
    rest = codes.copy()
    while np.any(rest):
        member[np.arange(len(codes)), rest % base] = True
        rest //= base
    return member[:, 1:]


def _markov_solve(paths: Paths, chain: _Chain, order: int, want_matrix: bool,
                  direct: bool = False) -> Attribution:
    """Absorption probabilities (and expected value) with each channel removed, in turn.

    Up to ``_DENSE_SOLVE_MAX`` states: one dense LAPACK solve per removal. Larger chains use the
    certified all-removals iteration (`_iterative_removals`) unless ``direct``, then one sparse
    LU (SuperLU) per removal, as the reference always does.
    """
    n_states = len(chain.codes)
    counts = chain.counts
    out = np.asarray(counts[:n_states].sum(axis=1)).ravel() + chain.sink_conv + chain.sink_null
    start = np.asarray(counts[n_states].todense() if hasattr(counts, "todense")
                       else counts[n_states]).ravel()
    start = start / start.sum()
    rhs = np.stack([chain.sink_conv / out, chain.sink_value / out], axis=1)
    member = _state_channels(chain.codes, paths.n_channels)
    absorbed = None
    if not direct and n_states > _DENSE_SOLVE_MAX:
        absorbed = _iterative_removals(counts[:n_states], out, rhs, member, start, chain)
    if absorbed is None:
        solve = _dense_solver if n_states <= _DENSE_SOLVE_MAX else _sparse_solver
        step = solve(counts[:n_states], out)
        absorbed = np.empty((paths.n_channels + 1, 2))
        absorbed[0] = start @ step(np.ones(n_states, dtype=bool), rhs)
        for c in range(paths.n_channels):
            keep = ~member[:, c]
            absorbed[c + 1] = (start[keep] @ step(keep, rhs[keep]) if member[:, c].any()
                               else absorbed[0])
    base_pv, removed = absorbed[0], absorbed[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(base_pv > 0, 1.0 - removed / base_pv, 0.0)
    effect = np.clip(effect, 0.0, None)  # round-off only: removal never raises absorption
    totals = np.array([paths.conversions.sum(), paths.value.sum()])
    norm = effect.sum(axis=0)
    credit = np.where(norm > 0, effect * totals / np.where(norm > 0, norm, 1.0), 0.0)
    details = {"removal_effects": effect[:, 0], "value_removal_effects": effect[:, 1],
               "conversion_probability": float(base_pv[0]), "n_states": n_states,
               "order": order}
    if want_matrix:
        details.update(_transition_details(paths, chain, out))
    return Attribution("markov", paths.channels, credit[:, 0], credit[:, 1], details=details)


def _iterative_removals(q_counts, out, rhs, member, start, chain, tol=1e-13,
                        max_iter=3000):
    """Start-weighted absorption (conversion, value) for the full chain and each removal.

    Solves x = K * (Q x + r) for every column at once by monotone fixed-point iteration from
    x = 0 and certifies the result: the error at the start state is at most
    ``start @ Q_KK**k @ 1`` times a bound on x (1 for probabilities, the largest mean value per
    conversion for value), iterated alongside. Stops when that bound is below ``tol`` relative
    to the base figures; returns None (callers fall back to a direct solve) if it is not
    reached within ``max_iter`` sweeps. Cost O(iterations * nnz(Q) * n_channels).
    """
    q = _scaled_rows(q_counts, out)
    n_states, n_ch = member.shape
    keep = np.concatenate([np.ones((n_states, 1)), ~member], axis=1)
    mask = np.hstack([keep, keep, keep])
    fixed = np.hstack([keep * rhs[:, :1], keep * rhs[:, 1:], np.zeros_like(keep)])
    z = np.hstack([np.zeros((n_states, 2 * (n_ch + 1))), keep])
    has_conv = chain.sink_conv > 0
    if not has_conv.any():
        return np.zeros((n_ch + 1, 2))
    vmax = float(np.max(chain.sink_value[has_conv] / chain.sink_conv[has_conv], initial=0.0))
    for sweep in range(1, max_iter + 1):
        z = mask * (q @ z) + fixed
        if sweep % 4:
            continue
        at_start = start @ z
        conv, value, slack = np.split(at_start, 3)
        need = tol * conv[0]
        if value[0] > 0:
            need = min(need, tol * value[0] / vmax)
        if slack.max() <= need:
            return np.stack([conv, value], axis=1)
    return None


def _scaled_rows(q_counts, out):
    from scipy import sparse
    return (sparse.diags(1.0 / out) @ sparse.csr_matrix(q_counts)).tocsr()


def _dense_solver(q_counts, out):
    q = np.asarray(q_counts.todense() if hasattr(q_counts, "todense") else q_counts) / out[:, None]

    def step(keep, rhs):
        sub = -q[np.ix_(keep, keep)]
        sub[np.diag_indices_from(sub)] += 1.0
        return np.linalg.solve(sub, rhs) if len(sub) else np.zeros_like(rhs)
    return step


def _sparse_solver(q_counts, out):
    from scipy import sparse
    from scipy.sparse.linalg import splu
    q = _scaled_rows(q_counts, out)

    def step(keep, rhs):
        idx = np.flatnonzero(keep)
        if not len(idx):
            return np.zeros_like(rhs)
        a = (sparse.identity(len(idx), format="csc") - q[idx][:, idx]).tocsc()
        return splu(a).solve(np.ascontiguousarray(rhs))
    return step


def _transition_details(paths: Paths, chain: _Chain, out: np.ndarray) -> dict:
    from scipy import sparse
    n_states = len(chain.codes)
    base = paths.n_channels + 1
    labels = []
    for code in chain.codes.tolist():
        names = []
        while code:
            names.append(paths.channels[code % base - 1])
            code //= base
        labels.append(" > ".join(names))
    c = sparse.csr_matrix(chain.counts)
    start, body = c[n_states], c[:n_states]
    absorb = sparse.csr_matrix(np.stack([chain.sink_conv, chain.sink_null], axis=1))
    top = sparse.hstack([sparse.csr_matrix((1, 1)), start / start.sum(),
                         sparse.csr_matrix((1, 2))])
    mid = sparse.hstack([sparse.csr_matrix((n_states, 1)),
                         sparse.diags(1.0 / out) @ sparse.hstack([body, absorb])])
    bottom = sparse.csr_matrix(([1.0, 1.0], ([0, 1], [n_states + 1, n_states + 2])),
                               shape=(2, n_states + 3))
    matrix = sparse.vstack([top, mid, bottom]).tocsr()
    return {"states": ["(start)", *labels, "(conversion)", "(null)"],
            "transition_matrix": matrix}


# ------------------------------------------------------------------------------------------------
# Shapley


def _shapley(paths, form, max_exact, samples, seed, use_native) -> Attribution:
    if form in ("counts", "ordered"):
        fn = _shapley_counts_native if use_native else _shapley_counts_reference
        conv, val, share, rank_conv, rank_val = fn(paths, form == "ordered")
        details = {"form": form}
        if form == "ordered":
            details.update(rank_conversions=rank_conv, rank_value=rank_val)
        return Attribution("shapley", paths.channels, conv, val, share, details)
    if paths.n_channels > max_exact:
        if samples is None:
            raise ValueError(f"paths: {paths.n_channels} channels exceed the exact Shapley limit "
                             f"of {max_exact}; pass samples for sampled Shapley or use the "
                             "counts form")
        if not isinstance(samples, (int, np.integer)) or samples < 2:
            raise ValueError(f"samples: must be an integer >= 2, got {samples!r}")
        return _shapley_rate_sampled(paths, int(samples), seed, use_native)
    fn = _shapley_rate_native if use_native else _shapley_rate_reference
    phi = fn(paths)
    return _rate_result(paths, phi, {"form": "rate", "exact": True})


def _rate_result(paths, phi, details):
    totals = np.array([paths.conversions.sum(), paths.value.sum()])
    norm = phi.sum(axis=1, keepdims=True)
    credit = np.where(norm != 0, phi * totals[:, None] / np.where(norm != 0, norm, 1.0), 0.0)
    details["raw_values"] = phi[0]
    details["weights"] = credit[0]
    details["scale"] = np.where(norm[:, 0] != 0, totals / np.where(norm[:, 0] != 0, norm[:, 0], 1),
                                0.0)
    return Attribution("shapley", paths.channels, credit[0], credit[1], details=details)


def _shapley_counts_native(paths, ordered):
    k = _native()
    n = paths.n_channels
    conv, val = np.zeros(n), np.zeros(n)
    share = np.empty(len(paths.indices))
    shape = (n, n) if ordered else (0, 0)
    rank_conv, rank_val = np.zeros(shape), np.zeros(shape)
    k.shapley_counts(paths.indptr, paths.indices, paths.conversions, paths.value, n, share,
                     conv, val, rank_conv, rank_val)
    return conv, val, share, rank_conv, rank_val


def _shapley_counts_reference(paths, ordered):
    n = paths.n_channels
    conv, val = np.zeros(n), np.zeros(n)
    share = np.zeros(len(paths.indices))
    rank_conv, rank_val = np.zeros((n, n)), np.zeros((n, n))
    ind, ptr = paths.indices.tolist(), paths.indptr.tolist()
    for p in range(paths.n_paths):
        ch = ind[ptr[p]:ptr[p + 1]]
        distinct = list(dict.fromkeys(ch))
        k = len(distinct)
        for j, c in enumerate(ch):
            share[ptr[p] + j] = 1.0 / (k * ch.count(c))
        for r, c in enumerate(distinct):
            conv[c] += paths.conversions[p] / k
            val[c] += paths.value[p] / k
            rank_conv[c, r] += paths.conversions[p] / k
            rank_val[c, r] += paths.value[p] / k
    return conv, val, share, rank_conv, rank_val


def _shapley_weights(n: int) -> np.ndarray:
    return np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                     for s in range(n)])


def _rate_table(paths, masks) -> np.ndarray:
    """(2, 2**n) coalition values: conversion rate and value per journey."""
    size = 1 << paths.n_channels
    sums = np.stack([np.bincount(masks, weights=w, minlength=size) for w in
                     (paths.conversions, paths.value, paths.conversions + paths.nulls)])
    return sums


def _ratios(sums):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[2] > 0, sums[:2] / np.where(sums[2] > 0, sums[2], 1.0), 0.0)


def _shapley_rate_native(paths) -> np.ndarray:
    k = _native()
    n = paths.n_channels
    masks = np.empty(paths.n_paths, dtype=np.uint64)
    k.path_masks(paths.indptr, paths.indices, masks)
    sums = np.ascontiguousarray(_rate_table(paths, masks.astype(np.int64)))
    k.subset_sums(sums, n)
    v = _ratios(sums)
    w = _shapley_weights(n)
    phi = np.zeros((2, n))
    for r in range(2):
        k.shapley_exact(np.ascontiguousarray(v[r]), n, w, phi[r])
    return phi


def _shapley_rate_reference(paths) -> np.ndarray:
    n = paths.n_channels
    ind, ptr = paths.indices.tolist(), paths.indptr.tolist()
    masks = np.array([sum(1 << c for c in set(ind[ptr[p]:ptr[p + 1]]))
                      for p in range(paths.n_paths)], dtype=np.int64)
    sums = _rate_table(paths, masks)
    for bit in range(n):  # zeta transform, one channel at a time
        view = sums.reshape(3, -1, 2, 1 << bit)
        view[:, :, 1, :] += view[:, :, 0, :]
    v = _ratios(sums)
    w = _shapley_weights(n)
    coalitions = np.arange(1 << n)
    pop = np.array([bin(s).count("1") for s in range(1 << n)])
    phi = np.zeros((2, n))
    for i in range(n):
        without = coalitions[(coalitions >> i) & 1 == 0]
        phi[:, i] = ((v[:, without | (1 << i)] - v[:, without]) * w[pop[without]]).sum(axis=1)
    return phi


def _shapley_rate_sampled(paths, samples, seed, use_native) -> Attribution:
    n = paths.n_channels
    row = np.repeat(np.arange(paths.n_paths), paths.lengths)
    key = np.unique(row * n + paths.indices)  # distinct (path, channel)
    p_of, ch_of = key // n, (key % n).astype(np.int32)
    sets = {}
    gid = np.empty(paths.n_paths, dtype=np.int64)
    bounds = np.searchsorted(p_of, np.arange(paths.n_paths + 1))
    for p in range(paths.n_paths):
        gid[p] = sets.setdefault(ch_of[bounds[p]:bounds[p + 1]].tobytes(), len(sets))
    groups = [np.frombuffer(b, dtype=np.int32) for b in sets]
    g_ptr = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(g) for g in groups], out=g_ptr[1:])
    g_ch = np.concatenate(groups).astype(np.int32)
    stats = np.stack([np.bincount(gid, weights=w, minlength=len(groups)) for w in
                      (paths.conversions, paths.value, paths.conversions + paths.nulls)])
    order = np.argsort(g_ch, kind="stable")
    c_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(g_ch, minlength=n), out=c_ptr[1:])
    c_grp = np.repeat(np.arange(len(groups)), np.diff(g_ptr))[order].astype(np.int32)
    s1, s2 = np.zeros((2, n)), np.zeros((2, n))
    rng_seed = int(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0])
    if use_native:
        _native().shapley_sampled(g_ptr, g_ch, c_ptr, c_grp, np.ascontiguousarray(stats), n,
                                  samples, rng_seed, s1, s2)
    else:
        _sampled_reference(g_ptr, g_ch, stats, n, samples, np.random.default_rng(rng_seed), s1, s2)
    phi = s1 / samples
    stderr = np.sqrt(np.maximum(s2 / samples - phi ** 2, 0) / (samples - 1))
    res = _rate_result(paths, phi, {"form": "rate", "exact": False, "samples": samples})
    res.details["stderr"] = stderr[0] * res.details["scale"][0]
    res.details["value_stderr"] = stderr[1] * res.details["scale"][1]
    res.details["error_bound"] = "credits +- 1.96 * stderr (95%, normal approximation)"
    return res


def _sampled_reference(g_ptr, g_ch, stats, n, samples, rng, s1, s2):
    members = [set(g_ch[g_ptr[g]:g_ptr[g + 1]].tolist()) for g in range(len(g_ptr) - 1)]
    for _ in range(samples):
        inside: set[int] = set()
        prev = np.zeros(2)
        for c in rng.permutation(n):
            inside.add(int(c))
            sel = [g for g, m in enumerate(members) if m <= inside]
            tot = stats[2, sel].sum()
            cur = stats[:2, sel].sum(axis=1) / tot if tot > 0 else np.zeros(2)
            s1[:, c] += cur - prev
            s2[:, c] += (cur - prev) ** 2
            prev = cur
