"""Multi-touch attribution: heuristics, exact Markov removal effects and Shapley values.

Paths are held encoded (`Paths`): a channel vocabulary, a CSR of int32 channel ids, and per-path
float64 conversions / value / nulls (plus optional per-touch timestamps, in seconds). Every model
has a plain numpy / pure-Python reference next to its wrapper (heuristics here, Markov in
`kernels.markov`, Shapley in `kernels.shapley`) and a Cython kernel in `_attribution.pyx`, picked
with ``use_native``. `attribute` validates and dispatches; it raises `ValueError` naming the
argument and the problem. `Paths`, its parsers and `Attribution` live in
`kernels.attribution_types` and are re-exported here.

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
    first touch (Zhao et al. 2018, "ordered Shapley"), ranks 0 .. the most distinct channels
    of any path - 1. ``rate``: coalition value = conversion
    rate of the paths inside it, exact over all 2**n coalitions up to ``max_exact_channels``,
    credits normalised to total conversions (they can be negative); past the limit, permutation
    sampling with a reported standard error if ``samples`` is given.
"""
from __future__ import annotations

import numpy as np

from .attribution_types import Attribution, Paths, _native, parse_channelattribution
from .markov import BudgetExceeded, _markov_native, _markov_reference, markov_reference_states
from .shapley import _shapley

__all__ = [
    "MODELS", "HEURISTICS", "SHAPLEY_FORMS", "MAX_ORDER", "MAX_EXACT_LIMIT", "DAY", "Paths",
    "Attribution", "attribute", "parse_channelattribution", "markov_reference_states",
    "BudgetExceeded",
]

HEURISTICS = {"first": 0, "last": 1, "last_non_direct": 2, "linear": 3, "position": 4,
              "time_decay": 5}
MODELS = (*HEURISTICS, "markov", "shapley")
SHAPLEY_FORMS = ("counts", "rate", "ordered")
MAX_ORDER = 4
MAX_EXACT_LIMIT = 24
DAY = 86400.0
_CODE_SPACE = 1 << 63  # Markov state codes are int64, the largest base**order - 1


# ------------------------------------------------------------------------------------------------
# Validation


def _check_paths(paths: Paths) -> None:
    if not isinstance(paths, Paths):
        raise ValueError(f"paths: expected a Paths, got {type(paths).__name__}")
    indptr, n = paths.indptr, len(paths.indices)
    if np.ndim(indptr) != 1 or len(indptr) < 1 or indptr[0] != 0 or indptr[-1] != n:
        raise ValueError(f"paths: indptr must run from 0 to the {n} touches (CSR offsets)")
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
        if np.shape(arr) != (paths.n_paths,):
            raise ValueError(f"{name}: expected {paths.n_paths} values (one per path), got "
                             f"shape {np.shape(arr)}")
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
    if not (first >= 0 and last >= 0 and 0 < first + last <= 1):  # NaN fails too
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


def _check_state_codes(n_channels: int, order: int) -> None:
    """An order-k state is coded as sum((c + 1) * (n + 1)**i) in int64 (`kernels.markov`):
    refuse the channel counts whose codes would overflow it (past 55,107 channels at order 4,
    2,097,151 at order 3)."""
    if (n_channels + 1) ** order <= _CODE_SPACE:
        return
    most = int(round(_CODE_SPACE ** (1.0 / order)))
    while (most + 1) ** order > _CODE_SPACE:
        most -= 1
    while (most + 2) ** order <= _CODE_SPACE:
        most += 1
    raise ValueError(f"order: {n_channels} channels at Markov order {order} exceed its state "
                     f"codes (int64): at most {most} channels at this order; use a lower order "
                     "or fewer channels")


# ------------------------------------------------------------------------------------------------
# Dispatch


def attribute(paths: Paths, model: str, *, order: int = 1,
              position_shares: tuple[float, float] = (0.4, 0.4), half_life: float = 7 * DAY,
              direct: str = "direct", shapley_form: str = "counts",
              max_exact_channels: int = 20, samples: int | None = None, seed: int = 0,
              transition_matrix: bool = False, path_credits: bool = False,
              use_native: bool = True, deadline: float | None = None,
              max_rank_cells: int | None = None) -> Attribution:
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
    deadline : float, optional
        time.monotonic() seconds: the Markov model checks it between its removals and
        iteration sweeps, sampled ``rate`` Shapley between chunks of permutations; past it
        they raise BudgetExceeded.
    max_rank_cells : int, optional
        ``ordered`` Shapley: refuse (ValueError) a table of credits by rank of more cells
        than this (channels x the most distinct channels of one path); None: no bound.

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
        _check_state_codes(paths.n_channels, int(order))
        fn = _markov_native if use_native else _markov_reference
        res = fn(paths, int(order), transition_matrix, deadline)
    else:
        res = _shapley(paths, shapley_form, max_exact_channels, samples, seed, use_native,
                       deadline, max_rank_cells)
    # only when asked: the shapley counts kernel fills a share in of its own
    res.touch_share = _apportion(paths, res.details.get("weights", res.conversions)) \
        if path_credits else None
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
