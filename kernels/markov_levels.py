"""Every Markov removal effect by one pass over the chain's strongly connected components.

`kernels.markov` solves the removals of large chains by an all-removals iteration whose cost
grows as sweeps x nnz(Q) x channels: at order 2 or more with thousands of channels (tens of
thousands of states) that took a minute. Path data give a chain that is mostly acyclic: a few
strongly connected components (SCCs) of popular states among many states of rare touch windows
seen on one path. `level_removals` walks the condensation DAG from the start, level by level
(a level's components have no edge between them), and carries, for the full chain and each
channel removed, the expected visits w of every state: inside a level
``w_L = a_L (I - Q_LL)^-1`` restricted to the states kept, with a_L the inflow from the
levels before. States off any cycle need no solve (w = a). A level with cycles is factored once
(SuperLU of (I - Q_LL)^T, G = (I - Q_LL)^-1); a removal of the states H of a channel is
exact through ``(I - Q_KK)^-1 = G_KK - G_KH G_HH^-1 G_HK`` (K the states kept):

    v = a_K G,  t = v_H G_HH^-1,  w_K = (v - t G)_K,  w_H = 0

where H is only the removed states entered from a kept one (the others are never reached),
so each removal costs |H| + 1 sparse solves of its level and one |H| x |H| solve: about
(states on cycles + channels) solves in all. The absorbed figures are ``w @ r``. Exact to
round-off, like the per-removal solves (tests/kernels/test_attribution.py compares them).
`kernels.markov._levels_pay` decides when this beats the iteration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LevelPlan", "level_block", "level_removals"]

_BLOCK_CELLS = 1 << 20  # states x columns (removals) carried at once: 8 MiB of float64
_GROUP_COLS = 128  # columns of G solved at once (|cycle states| x this, within _BLOCK_CELLS)
_SOLVE_COLS = 32  # right-hand sides per SuperLU call: wider ones made OpenBLAS's threads
                  # thrash on a busy machine (a 3,000-state ring: 4-14 s against 2 s)


@dataclass
class _Level:
    lo: int                     # the level's states, lo:hi in level order
    hi: int
    cyc: np.ndarray             # positions (from lo) of the states on a cycle
    inner: object               # CSC Q[cyc, cyc] (None without cycles)
    tgt: np.ndarray             # the states (level order) of later levels its edges lead to
    out: object                 # CSR Q[lo:hi, tgt] transposed
    lu: object = None           # SuperLU of (I - Q[cyc, cyc])^T, once `LevelPlan.factor`d


@dataclass
class LevelPlan:
    """The states of a row-scaled Q (CSR) by level of the condensation DAG: ``order`` lists
    them level by level (level order), ``levels`` in that order."""

    order: np.ndarray
    on_cycle: np.ndarray
    """(S,) bool, by state: on a cycle of Q."""
    levels: list[_Level] = field(default_factory=list)

    @classmethod
    def of(cls, q) -> LevelPlan:
        labels, comp_level = _components(q)
        on_cycle = (np.bincount(labels) > 1)[labels] | (q.diagonal() != 0)
        state_level = comp_level[labels]
        order = np.argsort(state_level, kind="stable")
        bounds = np.searchsorted(state_level[order], np.arange(state_level.max() + 2))
        q = q[order][:, order].tocsr()  # level order from here on
        plan = cls(order, on_cycle)
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            rows = q[lo:hi]
            cyc = np.flatnonzero(on_cycle[order[lo:hi]])
            inner = rows[cyc][:, lo + cyc].tocsc() if len(cyc) else None
            tgt = np.unique(rows.indices)
            tgt = tgt[tgt >= hi]
            plan.levels.append(_Level(lo, hi, cyc, inner, tgt, rows[:, tgt].T.tocsr()))
        return plan

    @property
    def cyclic(self) -> tuple[int, int]:
        """(states on a cycle, nnz of Q among them)."""
        return (sum(len(lv.cyc) for lv in self.levels),
                sum(lv.inner.nnz for lv in self.levels if lv.inner is not None))

    def factor(self) -> int:
        """Factor each level's cycles (SuperLU); the nnz of the factors."""
        from scipy import sparse
        from scipy.sparse.linalg import splu
        nnz = 0
        for lv in self.levels:
            if lv.inner is not None and lv.lu is None:
                m = sparse.identity(len(lv.cyc), format="csc") - lv.inner
                lv.lu = splu(m.T.tocsc(), permc_spec="MMD_AT_PLUS_A")
            if lv.lu is not None:
                nnz += lv.lu.L.nnz + lv.lu.U.nnz
        return nnz


def _components(q):
    """(labels, levels of the labels): the SCCs of Q and each one's longest distance (in
    components) from a source of the condensation DAG (Kahn's algorithm, a frontier a step)."""
    from scipy.sparse import csgraph
    n_comp, labels = csgraph.connected_components(q, directed=True, connection="strong")
    src, dst = q.nonzero()
    cross = labels[src] != labels[dst]
    edges = np.unique(labels[src[cross]] * np.int64(n_comp) + labels[dst[cross]])
    c_src, c_dst = np.divmod(edges, n_comp)  # sorted by source
    ptr = np.searchsorted(c_src, np.arange(n_comp + 1))
    indeg = np.bincount(c_dst, minlength=n_comp)
    level = np.zeros(n_comp, dtype=np.int64)
    frontier, depth = np.flatnonzero(indeg == 0), 0
    while len(frontier):
        level[frontier] = depth
        starts, ends = ptr[frontier], ptr[frontier + 1]
        lens = ends - starts
        nxt = c_dst[np.arange(lens.sum()) + np.repeat(starts - np.cumsum(lens) + lens, lens)]
        indeg -= np.bincount(nxt, minlength=n_comp)
        frontier = np.unique(nxt[indeg[nxt] == 0])
        depth += 1
    return labels, level


def level_block(n_states: int, n_channels: int) -> int:
    """Columns (the full chain and removals) `level_removals` carries at once."""
    return max(1, min(n_channels + 1, _BLOCK_CELLS // max(n_states, 1)))


def level_removals(plan: LevelPlan, rhs, member, start, check) -> np.ndarray:
    """(C + 1, 2) start-weighted absorption (conversion, value): the full chain, then each
    channel removed. ``plan``: the factored `LevelPlan` of Q; ``rhs``: (S, 2) one-step
    absorption (conversion, value); ``member``: (S, C) CSC of the states holding each
    channel; ``start``: (S,) start distribution; ``check()`` raises past the deadline."""
    from scipy import sparse
    plan.factor()
    n_states, n_ch = member.shape
    rank = np.empty_like(plan.order)
    rank[plan.order] = np.arange(n_states)
    member = sparse.csc_matrix((member.data, rank[member.indices], member.indptr),
                               shape=member.shape)  # level order (indices unsorted)
    rhs, start = rhs[plan.order], start[plan.order]
    absorbed = np.empty((n_ch + 1, 2))
    block = level_block(n_states, n_ch)
    for lo in range(0, n_ch + 1, block):
        cols = np.arange(lo, min(lo + block, n_ch + 1))  # 0: the full chain, c + 1: c removed
        absorbed[cols] = _block(plan, rhs, member, start, cols, check)
    return absorbed


def _block(plan, rhs, member, start, cols, check):
    """`level_removals` for the columns ``cols``: inflow and visits carried level by level."""
    removed = cols - 1  # -1: nothing removed
    keep = np.ones((len(start), len(cols)))
    for j, c in enumerate(removed):
        if c >= 0:
            keep[member.indices[member.indptr[c]:member.indptr[c + 1]], j] = 0.0
    inflow = start[:, None] * keep
    result = np.zeros((len(cols), 2))
    for lvl in plan.levels:
        check()
        w = inflow[lvl.lo:lvl.hi]
        w *= keep[lvl.lo:lvl.hi]
        if lvl.lu is not None:
            w[lvl.cyc] = _cyclic(lvl, w[lvl.cyc], member, removed, check)
        result += w.T @ rhs[lvl.lo:lvl.hi]
        if len(lvl.tgt):
            inflow[lvl.tgt] += lvl.out @ w
    return result


def _cyclic(lvl: _Level, a, member, removed, check):
    """w = a (I - Q_KK)^-1 on the level's states on cycles (columns: the full chain and the
    channel removals of ``removed``), H = the removed states with an edge in from a kept one
    (the others are never entered: their w stays 0 whether they are removed or not)."""
    lu, inner = lvl.lu, lvl.inner
    group_cols = max(1, min(_GROUP_COLS, _BLOCK_CELLS // len(lvl.cyc)))
    pos = np.full(lvl.hi - lvl.lo, -1, dtype=np.int64)
    pos[lvl.cyc] = np.arange(len(lvl.cyc))
    v = _solve(lu, a)  # columns: (a G)^T
    held_of, group, size = {}, [], 0
    for j, c in enumerate(removed):
        if c < 0:
            continue
        held = member.indices[member.indptr[c]:member.indptr[c + 1]]
        held = pos[held[(held >= lvl.lo) & (held < lvl.hi)] - lvl.lo]
        held_of[j] = held = held[held >= 0]
        entered = _entered(inner, held)
        if not len(entered):
            continue
        if len(entered) > group_cols:
            check()
            _remove_large(lu, v, j, entered, group_cols)
            continue
        group.append((j, entered))
        size += len(entered)
        if size >= group_cols:
            check()
            _remove_group(lu, v, group)
            group, size = [], 0
    if group:
        _remove_group(lu, v, group)
    for j, held in held_of.items():
        v[held, j] = 0.0
    return v


def _entered(inner, held):
    """The positions of ``held`` with an edge in (within the level) from a state not held."""
    if not len(held):
        return held
    other = np.ones(inner.shape[0])
    other[held] = 0.0
    return held[inner[:, held].T @ other > 0]


def _remove_group(lu, v, group):
    """Each (column j, entered states h) of ``group``: v[:, j] becomes w (up to w_H = 0)."""
    cols = np.concatenate([h for _, h in group])
    eye = np.zeros((v.shape[0], len(cols)))
    eye[cols, np.arange(len(cols))] = 1.0
    rows = _solve(lu, eye)  # column i: G[cols_i, :]
    at = 0
    for j, h in group:
        part = rows[:, at:at + len(h)]
        at += len(h)
        t = np.linalg.solve(part[h], v[h, j])  # part[h] = G_HH^T
        v[:, j] -= part @ t


def _remove_large(lu, v, j, h, cols):
    """`_remove_group` for one removal of many states: G_HH by blocks of ``cols`` columns, then
    one more solve for t G (memory |cycle states| x ``cols``, not x |H|)."""
    g_hh = np.empty((len(h), len(h)))
    for lo in range(0, len(h), cols):
        sel = h[lo:lo + cols]
        eye = np.zeros((v.shape[0], len(sel)))
        eye[sel, np.arange(len(sel))] = 1.0
        g_hh[:, lo:lo + len(sel)] = _solve(lu, eye)[h]  # [k, i] = G[sel_i, h_k] = G_HH^T
    t = np.linalg.solve(g_hh, v[h, j])
    t_ext = np.zeros(v.shape[0])
    t_ext[h] = t
    v[:, j] -= lu.solve(t_ext)


def _solve(lu, b: np.ndarray) -> np.ndarray:
    """``lu.solve(b)`` for the columns of ``b``, `_SOLVE_COLS` at a time."""
    if b.shape[1] <= _SOLVE_COLS:
        return lu.solve(np.ascontiguousarray(b))
    out = np.empty_like(b)
    for lo in range(0, b.shape[1], _SOLVE_COLS):
        out[:, lo:lo + _SOLVE_COLS] = lu.solve(np.ascontiguousarray(b[:, lo:lo + _SOLVE_COLS]))
    return out
