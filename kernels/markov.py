"""Markov-chain removal effects: the ``markov`` model of `kernels.attribution.attribute`.

The order-k absorbing chain (`_Chain`) is built by the Cython kernel (`_markov_native`) or in
pure Python (`_markov_reference`, `markov_reference_states`), then solved exactly by
`_markov_solve`: one dense LAPACK solve per removal for small chains; for larger ones one dense
inverse for every removal (up to `_INVERSE_MAX` states, when that is cheaper: many channels),
one pass over the chain's cycles (`kernels.markov_levels`, when that is cheaper: many channels
at order 2 or more), the certified all-removals iteration or one sparse LU per removal.
Conventions: see `kernels.attribution`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .attribution_types import Attribution, Paths, _native
from .markov_levels import LevelPlan, level_block, level_removals

__all__ = ["markov_reference_states"]

_DENSE_SOLVE_MAX = 64  # beyond this, OpenBLAS threads thrash on a busy machine
_TABLE_MAX = 1 << 22
_DENSE_COUNTS_MAX = 1 << 22
_BLOCK_CELLS = 1 << 18  # states x channels of one block of the all-removals iteration


@dataclass
class _Chain:
    """Order-k chain: state codes, start/transition counts and per-state sinks."""

    codes: np.ndarray           # (S,) int64, sorted
    counts: object              # (S + 1, S) dense ndarray or scipy CSR; row S is the start
    sink_conv: np.ndarray
    sink_null: np.ndarray
    sink_value: np.ndarray


class BudgetExceeded(Exception):
    """A computation passed its `deadline` (time.monotonic seconds) and stopped."""


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded("the computation passed its deadline")


def _markov_native(paths: Paths, order: int, want_matrix: bool,
                   deadline: float | None = None) -> Attribution:
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
    return _markov_solve(paths, chain, order, want_matrix, deadline=deadline)


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


def _markov_reference(paths: Paths, order: int, want_matrix: bool,
                      deadline: float | None = None) -> Attribution:
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
    return _markov_solve(paths, chain, order, want_matrix, direct=True, deadline=deadline)


def _state_channels(codes: np.ndarray, n_channels: int):
    """Boolean sparse (S, n_channels) CSC: does state s hold channel c (at most k per state,
    so O(S * k) memory, never S * n_channels)."""
    from scipy import sparse
    base = n_channels + 1
    rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    states = np.arange(len(codes))
    rest = codes.copy()
    while np.any(rest):
        digit = rest % base
        held = digit > 0
        rows.append(states[held])
        cols.append(digit[held] - 1)
        rest //= base
    # by channel, then state (a stable sort of codes mostly in order), each pair once; built
    # in canonical form directly (scipy's COO route sorted the indices twice: +30% at order 4)
    pairs = np.sort(np.concatenate(cols) * len(codes) + np.concatenate(rows), kind="stable")
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
    col, row = np.divmod(pairs, len(codes)) if len(codes) else (pairs, pairs)
    member = sparse.csc_matrix((np.ones(len(row), dtype=bool), row,
                                np.searchsorted(col, np.arange(n_channels + 1))),
                               shape=(len(codes), n_channels))
    member.has_sorted_indices = True
    return member


def _holders(member, c: int) -> np.ndarray:
    """The states holding channel ``c`` (a column of `_state_channels`)."""
    return member.indices[member.indptr[c]:member.indptr[c + 1]]


def _markov_solve(paths: Paths, chain: _Chain, order: int, want_matrix: bool,
                  direct: bool = False, deadline: float | None = None) -> Attribution:
    """Absorption probabilities (and expected value) with each channel removed, in turn.

    Up to ``_DENSE_SOLVE_MAX`` states: one dense LAPACK solve per removal. Larger chains use one
    dense inverse (`_inverse_pays`), the level pass (`_levels_pay`) or the certified
    all-removals iteration (`_iterative_removals`) unless ``direct``, then one sparse LU
    (SuperLU) per removal, as the reference always does. Past `deadline` (time.monotonic
    seconds; checked between removals and iteration sweeps) it raises BudgetExceeded.
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
    if not direct and _inverse_pays(counts[:n_states], paths.n_channels):
        absorbed = _inverse_removals(counts[:n_states], out, rhs, member, start, deadline)
    elif not direct and n_states > _DENSE_SOLVE_MAX:
        plan = _levels_pay(counts[:n_states], out, member)
        if plan is not None:
            absorbed = level_removals(plan, rhs, member, start,
                                      lambda: _check_deadline(deadline))
        else:
            absorbed = _iterative_removals(counts[:n_states], out, rhs, member, start, chain,
                                           deadline=deadline)
    if absorbed is None:
        solve = _dense_solver if n_states <= _DENSE_SOLVE_MAX else _sparse_solver
        step = solve(counts[:n_states], out)
        absorbed = np.empty((paths.n_channels + 1, 2))
        absorbed[0] = start @ step(np.ones(n_states, dtype=bool), rhs)
        for c in range(paths.n_channels):
            _check_deadline(deadline)
            held = _holders(member, c)
            if not len(held):
                absorbed[c + 1] = absorbed[0]
                continue
            keep = np.ones(n_states, dtype=bool)
            keep[held] = False
            absorbed[c + 1] = start[keep] @ step(keep, rhs[keep])
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


def _inverse_pays(q_counts, n_channels: int) -> bool:
    """Whether `_inverse_removals` (about S^3 flops) beats the all-removals iteration (about
    3 (C + 1) nnz(Q) flops a sweep, a few hundred sweeps): a chain of more than
    `_DENSE_SOLVE_MAX` and at most `_INVERSE_MAX` states with many channels, such as order 1
    with thousands of channels (S = C)."""
    n_states = q_counts.shape[0]
    if not _DENSE_SOLVE_MAX < n_states <= _INVERSE_MAX:
        return False
    nnz = q_counts.nnz if hasattr(q_counts, "nnz") else np.count_nonzero(q_counts)
    return float(n_states) ** 3 <= _SWEEPS_GUESS * 3.0 * (n_channels + 1) * nnz


_INVERSE_MAX = 2048  # a dense S x S inverse: 32 MiB
_SWEEPS_GUESS = 300
_LEVELS_FROM = 1e9  # flops of the iteration (guessed) past which `_levels_pay` is weighed
_LEVELS_HELD_MAX = 2048  # states on cycles of one channel: a dense solve of 32 MiB
_FILL_GUESS = 16  # nnz of the cycles' factors per nnz of Q among them, guessed before factoring
_SOLVE_FLOP = 2.5  # a flop of the level pass (sparse solves) in flops of the iteration
_CHANNEL_WORK = 5e5  # the level pass's Python work per channel and level with cycles, in flops
_LEVEL_WORK = 3e4  # and per level and block of channels (a chain as deep as a long journey)


def _levels_pay(q_counts, out, member) -> LevelPlan | None:
    """The `LevelPlan` of Q when `level_removals` beats the all-removals iteration, else None.

    The iteration costs about 3 (C + 1) nnz(Q) flops a sweep; the levels two sparse solves of
    their cycles' factors per channel and per state on a cycle, a dense solve per channel of
    its states on cycles (at most `_LEVELS_HELD_MAX`) and C x S for the rest, so they win
    when the channels are many and the cycles few, as at order 2 or more with thousands of
    channels (a minute by the iteration, seconds here). The cycles are factored (which can
    take as long as the iteration, 100 channels at order 2: 1 s) only when the cost with
    `_FILL_GUESS` already wins; measured on Zipf journeys of 12 to 3,000 channels."""
    n_states, n_channels = member.shape
    nnz = q_counts.nnz if hasattr(q_counts, "nnz") else np.count_nonzero(q_counts)
    iteration = _SWEEPS_GUESS * 3.0 * (n_channels + 1) * nnz
    if iteration < _LEVELS_FROM:
        return None
    plan = LevelPlan.of(_scaled_rows(q_counts, out))
    n_cyc, nnz_cyc = plan.cyclic
    held = np.diff(np.r_[0, np.cumsum(plan.on_cycle[member.indices])][member.indptr])
    if held.max(initial=0) > _LEVELS_HELD_MAX:
        return None
    cyclic_levels = sum(lv.inner is not None for lv in plan.levels)
    steps = len(plan.levels) * -(-(n_channels + 1) // level_block(n_states, n_channels))
    rest = (4.0 * (n_channels + 1) * n_states + (held.astype(float) ** 3).sum()
            + _CHANNEL_WORK * n_channels * cyclic_levels + _LEVEL_WORK * steps)

    def cost(nnz_factors):
        return _SOLVE_FLOP * (2.0 * (n_cyc + n_channels + 1) * nnz_factors + rest)
    if cost(_FILL_GUESS * nnz_cyc + n_cyc) >= iteration or cost(plan.factor()) >= iteration:
        return None
    return plan


def _inverse_removals(q_counts, out, rhs, member, start, deadline) -> np.ndarray:
    """Every removal from one dense inverse G = (I - Q)^-1.

    Removing channel c makes its states H absorb nothing. A walk from the start either never
    meets H (the removed chain's figure) or first enters H at some h and goes on from there
    with h's full-chain figure x[h], so ``start @ x_removed = start @ x - f @ x[H]``, f the
    first-entrance distribution into H. The expected visits u = start @ G satisfy
    ``u[H] = f @ G[H, H]``, so f solves a |H| x |H| system: per channel O(|H|^3) after the one
    O(S^3) inverse, instead of a solve of the whole chain per channel (the same figures, to
    round-off)."""
    n_states, n_ch = member.shape
    g = np.linalg.inv(_dense_i_minus_q(q_counts, out))
    x, u = g @ rhs, start @ g
    absorbed = np.empty((n_ch + 1, 2))
    absorbed[0] = start @ x
    for c in range(n_ch):
        if c % 64 == 0:
            _check_deadline(deadline)
        held = _holders(member, c)
        if not len(held):
            absorbed[c + 1] = absorbed[0]
            continue
        first = np.linalg.solve(g[np.ix_(held, held)].T, u[held])
        absorbed[c + 1] = absorbed[0] - first @ x[held]
    return absorbed


def _iterative_removals(q_counts, out, rhs, member, start, chain, tol=1e-13,
                        max_iter=3000, deadline: float | None = None):
    """Start-weighted absorption (conversion, value) for the full chain and each removal.

    Solves x = K * (Q x + r) for every column at once by monotone fixed-point iteration from
    x = 0 and certifies the result: the error at the start state is at most
    ``start @ Q_KK**k @ 1`` times a bound on x (1 for probabilities, the largest mean value per
    conversion for value), iterated alongside. Stops when that bound is below ``tol`` relative
    to the base figures; returns None (callers fall back to a direct solve) if it is not
    reached within ``max_iter`` sweeps. Cost O(iterations * nnz(Q) * n_channels); the
    channels go in blocks of about `_BLOCK_CELLS` / S (``member`` is sparse), so memory is
    O(`_BLOCK_CELLS`), not O(S * n_channels).
    """
    q = _scaled_rows(q_counts, out)
    n_states, n_ch = member.shape
    if not (chain.sink_conv > 0).any():
        return np.zeros((n_ch + 1, 2))
    block = max(1, _BLOCK_CELLS // max(n_states, 1) - 1)
    absorbed = np.empty((n_ch + 1, 2))
    for lo in range(0, n_ch, block):
        hi = min(lo + block, n_ch)
        cells = member if (lo, hi) == (0, n_ch) else member[:, lo:hi]
        part = _iterate_block(q, rhs, cells.toarray(order="C"), start, chain, tol, max_iter,
                              deadline)  # C order: a CSC gives F, 2.5x slower sweeps below
        if part is None:
            return None
        absorbed[0], absorbed[lo + 1:hi + 1] = part[0], part[1:]
    return absorbed


def _iterate_block(q, rhs, member, start, chain, tol, max_iter, deadline):
    """`_iterative_removals` for the channels of ``member`` (dense S x block): rows
    (full chain, each channel removed), or None past ``max_iter`` sweeps."""
    n_states, n_ch = member.shape
    keep = np.concatenate([np.ones((n_states, 1)), ~member], axis=1)
    mask = np.hstack([keep, keep, keep])
    fixed = np.hstack([keep * rhs[:, :1], keep * rhs[:, 1:], np.zeros_like(keep)])
    z = np.hstack([np.zeros((n_states, 2 * (n_ch + 1))), keep])
    has_conv = chain.sink_conv > 0
    vmax = float(np.max(chain.sink_value[has_conv] / chain.sink_conv[has_conv], initial=0.0))
    for sweep in range(1, max_iter + 1):
        z = mask * (q @ z) + fixed
        if sweep % 4:
            continue
        _check_deadline(deadline)
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


def _dense_i_minus_q(q_counts, out) -> np.ndarray:
    """I - Q as a dense array (Q: the counts scaled by each state's total out)."""
    a = np.asarray(q_counts.todense() if hasattr(q_counts, "todense") else q_counts) / -out[:, None]
    a[np.diag_indices_from(a)] += 1.0
    return a


def _dense_solver(q_counts, out):
    a = _dense_i_minus_q(q_counts, out)

    def step(keep, rhs):  # I - Q_KK is the principal submatrix of I - Q
        return np.linalg.solve(a[np.ix_(keep, keep)], rhs) if keep.any() else np.zeros_like(rhs)
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
