"""Shapley values: the ``shapley`` model of `kernels.attribution.attribute`.

Forms ``counts`` and ``ordered`` (an equal split over each path's distinct channels, exact) and
``rate`` (exact over all 2**n coalitions, or permutation sampling with a standard error past the
exact limit). Each has a Cython kernel and a numpy / pure-Python reference, picked with
``use_native``. Definitions: see `kernels.attribution`.
"""
from __future__ import annotations

import math

import numpy as np

from .attribution_types import Attribution, _native
from .markov import _check_deadline

_CHUNK_WORK = 1 << 24  # sampled Shapley: about this many steps between deadline checks
_PATHS_CHECKED = 1 << 16  # and paths grouped by their channel sets
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: the kernel's state after each draw

__all__: list[str] = []  # used through kernels.attribution.attribute


def _shapley(paths, form, max_exact, samples, seed, use_native, deadline=None,
             max_rank_cells=None) -> Attribution:
    if form in ("counts", "ordered"):
        ranks = _most_distinct(paths) if form == "ordered" else 0
        if max_rank_cells is not None and paths.n_channels * ranks > max_rank_cells:
            raise ValueError(f"shapley_form: the ordered form's credits by rank would be "
                             f"{paths.n_channels} channels x {ranks} ranks (the most distinct "
                             f"channels of one path), more than {max_rank_cells} cells; use "
                             "the counts form or fewer channels per path")
        fn = _shapley_counts_native if use_native else _shapley_counts_reference
        conv, val, share, rank_conv, rank_val = fn(paths, ranks)
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
        return _shapley_rate_sampled(paths, int(samples), seed, use_native, deadline)
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


def _distinct_pairs(paths) -> np.ndarray:
    """Sorted ``path * n_channels + channel`` codes, each pair once: a stable sort of codes
    already in path order (np.unique took 40x longer than the ordered Shapley kernel itself,
    and 8.9 s of 5M touches where this takes 0.5 s)."""
    row = np.repeat(np.arange(paths.n_paths, dtype=np.int64), paths.lengths)
    pairs = np.sort(row * paths.n_channels + paths.indices, kind="stable")
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:] != pairs[:-1]
    return pairs[first]


def _most_distinct(paths) -> int:
    """The most distinct channels on one path: the ranks of the ordered Shapley value (its
    tables are n_channels x this, not n_channels x n_channels)."""
    return int(np.bincount(_distinct_pairs(paths) // paths.n_channels, minlength=1).max())


def _channel_sets(paths, deadline) -> tuple[np.ndarray, list[bytes]]:
    """Each path's group (its distinct channels, sorted) and the groups' channels (int32
    bytes), in order of first use. A loop over the paths (1.6 s of 2.5M): the deadline is
    checked every `_PATHS_CHECKED` of them, as it is between the permutations' chunks."""
    key = _distinct_pairs(paths)
    ch_of = (key % paths.n_channels).astype(np.int32).tobytes()
    at = (np.searchsorted(key // paths.n_channels, np.arange(paths.n_paths + 1)) * 4).tolist()
    sets: dict[bytes, int] = {}
    gid = []
    for start in range(0, paths.n_paths, _PATHS_CHECKED):
        _check_deadline(deadline)
        gid += [sets.setdefault(ch_of[at[p]:at[p + 1]], len(sets))
                for p in range(start, min(start + _PATHS_CHECKED, paths.n_paths))]
    return np.array(gid, dtype=np.int64), list(sets)


def _shapley_counts_native(paths, ranks):
    """``ranks``: columns of the ordered form's tables (`_most_distinct`), 0 for counts."""
    k = _native()
    n = paths.n_channels
    conv, val = np.zeros(n), np.zeros(n)
    share = np.empty(len(paths.indices))
    shape = (n, ranks) if ranks else (0, 0)
    rank_conv, rank_val = np.zeros(shape), np.zeros(shape)
    k.shapley_counts(paths.indptr, paths.indices, paths.conversions, paths.value, n, share,
                     conv, val, rank_conv, rank_val)
    return conv, val, share, rank_conv, rank_val


def _shapley_counts_reference(paths, ranks):
    n = paths.n_channels
    conv, val = np.zeros(n), np.zeros(n)
    share = np.zeros(len(paths.indices))
    ranks = ranks or _most_distinct(paths)
    rank_conv, rank_val = np.zeros((n, ranks)), np.zeros((n, ranks))
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
    """(3, 2**n) sums per coalition mask: conversions, value, and journeys (conversions +
    nulls); `_ratios` turns them into the rates."""
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


def _shapley_rate_sampled(paths, samples, seed, use_native, deadline=None) -> Attribution:
    n = paths.n_channels
    gid, sets = _channel_sets(paths, deadline)
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
    _check_deadline(deadline)
    # permutations in chunks of about _CHUNK_WORK steps, the deadline checked between them;
    # chunk k starts at the generator state the stream had reached (each permutation draws
    # n - 1 numbers) from the identity order, so the draws do not depend on the deadline
    per_perm = n + len(g_ch) + 2 * n
    chunk = max(1, _CHUNK_WORK // per_perm)
    if not use_native:
        chunk = max(1, chunk // 1000)  # the pure-Python reference is ~1000x slower
    rng = np.random.default_rng(rng_seed)
    stats = np.ascontiguousarray(stats)
    for done in range(0, samples, chunk):
        _check_deadline(deadline)
        todo = min(chunk, samples - done)
        if use_native:
            state = (rng_seed + done * (n - 1) * _GAMMA) % (1 << 64)
            _native().shapley_sampled(g_ptr, g_ch, c_ptr, c_grp, stats, n, todo, state, s1, s2)
        else:
            _sampled_reference(g_ptr, g_ch, stats, n, todo, rng, s1, s2)
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
