"""Multi-touch attribution kernels over encoded paths (CSR of int32 channel ids).

Every function takes a path set as ``indptr`` (int64, n_paths + 1) and ``indices`` (int32 channel
ids, nnz), plus per-path float64 ``conv`` / ``value`` / ``nulls``. Validation lives in
``kernels/attribution.py``; these kernels trust their inputs (non-empty paths, ids < n_channels).
All hot loops run without the GIL and are O(nnz) unless stated otherwise.
"""
from libc.math cimport exp2
from libc.stdlib cimport calloc, free, malloc

from ._splitmix cimport splitmix64
from ._types cimport float64_t, int32_t, int64_t, uint64_t


cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil


# Heuristic model codes, mirrored by attribution.HEURISTICS.
cdef enum:
    FIRST = 0
    LAST = 1
    LAST_NON_DIRECT = 2
    LINEAR = 3
    POSITION = 4
    TIME_DECAY = 5


cdef inline void _path_shares(int model, const int32_t* ch, const float64_t* ts, Py_ssize_t n,
                              double first_share, double last_share, double half_life,
                              int32_t direct, float64_t* share) noexcept nogil:
    """Write the credit fraction of each of the ``n`` touches of one path into ``share``."""
    cdef Py_ssize_t j, pick
    cdef double mid, tmax, total
    for j in range(n):
        share[j] = 0.0
    if model == FIRST:
        share[0] = 1.0
    elif model == LAST:
        share[n - 1] = 1.0
    elif model == LAST_NON_DIRECT:
        pick = n - 1
        for j in range(n - 1, -1, -1):
            if ch[j] != direct:
                pick = j
                break
        share[pick] = 1.0
    elif model == LINEAR:
        for j in range(n):
            share[j] = 1.0 / n
    elif model == POSITION:
        if n == 1:
            share[0] = 1.0
        elif n == 2:
            share[0] = first_share / (first_share + last_share)
            share[1] = last_share / (first_share + last_share)
        else:
            mid = (1.0 - first_share - last_share) / (n - 2)
            for j in range(1, n - 1):
                share[j] = mid
            share[0] = first_share
            share[n - 1] = last_share
    elif model == TIME_DECAY:
        tmax = ts[0]
        for j in range(1, n):
            if ts[j] > tmax:
                tmax = ts[j]
        total = 0.0
        for j in range(n):
            share[j] = exp2((ts[j] - tmax) / half_life)
            total += share[j]
        for j in range(n):
            share[j] /= total


def heuristic(const int64_t[::1] indptr, const int32_t[::1] indices, const float64_t[::1] ts,
              const float64_t[::1] conv, const float64_t[::1] value, int model,
              double first_share, double last_share, double half_life, int32_t direct,
              float64_t[::1] share, float64_t[::1] out_conv, float64_t[::1] out_value):
    """Rule-based attribution (first/last/last-non-direct/linear/position/time-decay).

    Parameters
    ----------
    ts : float64 array, nnz or empty
        Touch timestamps; read only by the time-decay model.
    model : int
        One of the model codes (0 first ... 5 time decay).
    share : float64 array, nnz (output)
        Fraction of its path's conversion credited to each touch.
    out_conv, out_value : float64 array, n_channels (output, accumulated)
        Credited conversions and value per channel.
    """
    cdef Py_ssize_t n_paths = indptr.shape[0] - 1, p, j, a, b
    cdef const float64_t* tsp = &ts[0] if ts.shape[0] > 0 else NULL
    with nogil:
        for p in range(n_paths):
            a = indptr[p]
            b = indptr[p + 1]
            _path_shares(model, &indices[a], tsp + a if tsp != NULL else NULL, b - a,
                         first_share, last_share, half_life, direct, &share[a])
            for j in range(a, b):
                out_conv[indices[j]] += share[j] * conv[p]
                out_value[indices[j]] += share[j] * value[p]


def shapley_counts(const int64_t[::1] indptr, const int32_t[::1] indices,
                   const float64_t[::1] conv, const float64_t[::1] value, int n_channels,
                   float64_t[::1] share, float64_t[::1] out_conv, float64_t[::1] out_value,
                   float64_t[:, ::1] by_rank_conv, float64_t[:, ::1] by_rank_value):
    """Shapley value with the additive "counts" coalition value: equal split per distinct channel.

    Each path's conversions go in equal parts to its distinct channels; a channel's part is
    spread evenly over its touches in ``share``. ``by_rank_*`` (n_channels x max distinct) also
    receives each part at the rank of the channel's first touch among the path's distinct
    channels (the ordered Shapley value); pass (0, 0) arrays to skip it.
    """
    cdef Py_ssize_t n_paths = indptr.shape[0] - 1, p, j, a, b
    cdef int32_t c, k
    cdef bint ranked = by_rank_conv.shape[0] > 0
    cdef int32_t* count = <int32_t*> calloc(n_channels, sizeof(int32_t))
    cdef int32_t* rank = <int32_t*> calloc(n_channels, sizeof(int32_t))
    if count == NULL or rank == NULL:
        free(count)
        free(rank)
        raise MemoryError()
    with nogil:
        for p in range(n_paths):
            a = indptr[p]
            b = indptr[p + 1]
            k = 0
            for j in range(a, b):
                c = indices[j]
                if count[c] == 0:
                    rank[c] = k
                    k += 1
                count[c] += 1
            for j in range(a, b):
                c = indices[j]
                share[j] = 1.0 / (<double> k * count[c])
                out_conv[c] += share[j] * conv[p]
                out_value[c] += share[j] * value[p]
            for j in range(a, b):
                c = indices[j]
                if ranked and count[c] > 0:
                    by_rank_conv[c, rank[c]] += conv[p] / k
                    by_rank_value[c, rank[c]] += value[p] / k
                count[c] = 0
    free(count)
    free(rank)


def path_masks(const int64_t[::1] indptr, const int32_t[::1] indices, uint64_t[::1] out):
    """Bit mask of the distinct channels of each path (channel ids < 64)."""
    cdef Py_ssize_t n_paths = indptr.shape[0] - 1, p, j
    cdef uint64_t m
    with nogil:
        for p in range(n_paths):
            m = 0
            for j in range(indptr[p], indptr[p + 1]):
                m |= (<uint64_t> 1) << indices[j]
            out[p] = m


def subset_sums(float64_t[:, ::1] f, int n_bits):
    """In place zeta transform over the last axis: f[:, S] <- sum of f[:, T] for T subset of S.

    O(rows * n_bits * 2**n_bits).
    """
    cdef Py_ssize_t size = (<Py_ssize_t> 1) << n_bits, s, r, bit
    with nogil:
        for r in range(f.shape[0]):
            for bit in range(n_bits):
                for s in range(size):
                    if s & ((<Py_ssize_t> 1) << bit):
                        f[r, s] += f[r, s ^ ((<Py_ssize_t> 1) << bit)]


def shapley_exact(const float64_t[::1] v, int n_bits, const float64_t[::1] weight,
                  float64_t[::1] out):
    """Exact Shapley values from a coalition value table ``v`` indexed by bit mask.

    ``weight[s] = s! (n - s - 1)! / n!``. O(n_bits * 2**n_bits).
    """
    cdef Py_ssize_t size = (<Py_ssize_t> 1) << n_bits, s, i
    cdef Py_ssize_t bit
    cdef int pop
    cdef double acc
    with nogil:
        for i in range(n_bits):
            bit = (<Py_ssize_t> 1) << i
            acc = 0.0
            for s in range(size):
                if not (s & bit):
                    pop = __builtin_popcountll(<unsigned long long> s)
                    acc += weight[pop] * (v[s | bit] - v[s])
            out[i] = acc


def shapley_sampled(const int64_t[::1] grp_indptr, const int32_t[::1] grp_channels,
                    const int64_t[::1] ch_indptr, const int32_t[::1] ch_groups,
                    const float64_t[:, ::1] grp_stats, int n_channels, Py_ssize_t n_perm,
                    uint64_t seed, float64_t[:, ::1] out_sum, float64_t[:, ::1] out_sq):
    """Monte Carlo (random permutation) Shapley values of ratio coalition values.

    Groups are the distinct channel sets; ``grp_stats`` rows are (numerator..., denominator)
    sums per group, so a coalition's value for row r is sum(num_r) / sum(den) over the groups
    inside it. ``ch_groups`` lists, per channel (CSR by ``ch_indptr``), the groups holding it.
    ``out_sum`` / ``out_sq`` (rows x n_channels) receive sums and squared sums of the marginal
    contributions. Each permutation costs O(n_channels + total group size).
    """
    cdef Py_ssize_t n_grp = grp_indptr.shape[0] - 1, _t, i, j, g, r
    cdef Py_ssize_t n_rows = grp_stats.shape[0] - 1
    cdef uint64_t state = seed
    cdef int32_t c, tmp
    cdef double den, nv, dv
    cdef int32_t* perm = <int32_t*> malloc(n_channels * sizeof(int32_t))
    cdef int32_t* missing = <int32_t*> malloc(n_grp * sizeof(int32_t))
    cdef double* num = <double*> malloc(n_rows * sizeof(double))
    cdef double* prev = <double*> malloc(n_rows * sizeof(double))
    if perm == NULL or missing == NULL or num == NULL or prev == NULL:
        free(perm)
        free(missing)
        free(num)
        free(prev)
        raise MemoryError()
    with nogil:
        for i in range(n_channels):
            perm[i] = <int32_t> i
        for _t in range(n_perm):
            for i in range(n_channels - 1, 0, -1):  # Fisher-Yates
                j = <Py_ssize_t> (splitmix64(&state) % <uint64_t> (i + 1))
                tmp = perm[i]
                perm[i] = perm[j]
                perm[j] = tmp
            for g in range(n_grp):
                missing[g] = <int32_t> (grp_indptr[g + 1] - grp_indptr[g])
            den = 0.0
            for r in range(n_rows):
                num[r] = 0.0
                prev[r] = 0.0
            for i in range(n_channels):
                c = perm[i]
                for j in range(ch_indptr[c], ch_indptr[c + 1]):
                    g = ch_groups[j]
                    missing[g] -= 1
                    if missing[g] == 0:
                        den += grp_stats[n_rows, g]
                        for r in range(n_rows):
                            num[r] += grp_stats[r, g]
                for r in range(n_rows):
                    nv = num[r] / den if den > 0.0 else 0.0
                    dv = nv - prev[r]
                    out_sum[r, c] += dv
                    out_sq[r, c] += dv * dv
                    prev[r] = nv
    free(perm)
    free(missing)
    free(num)
    free(prev)


def markov_encode(const int64_t[::1] indptr, const int32_t[::1] indices,
                  const float64_t[::1] weight, int order, int64_t base, int64_t[::1] codes,
                  int64_t[::1] sindptr):
    """Order-k state sequence of every path, consecutive identical states merged.

    A state is a window of ``order`` consecutive touches (a shorter path is one shorter state),
    coded as sum((ch_i + 1) * base**i) with ``base = n_channels + 1``, so windows of different
    lengths never collide. Paths of zero ``weight`` (conversions + nulls) get no states.
    ``codes`` (nnz) receives the states, ``sindptr`` (n_paths + 1) their CSR offsets. Returns
    the number of states written.
    """
    cdef Py_ssize_t n_paths = indptr.shape[0] - 1, p, j, i, a, b, w, m = 0
    cdef int64_t code, last
    with nogil:
        sindptr[0] = 0
        for p in range(n_paths):
            a = indptr[p]
            b = indptr[p + 1] if weight[p] > 0 else a
            w = order if b - a >= order else b - a
            last = -1
            for j in range(a, b - w + 1 if b > a else a):
                code = 0
                for i in range(w - 1, -1, -1):
                    code = code * base + indices[j + i] + 1
                if code != last:
                    codes[m] = code
                    m += 1
                    last = code
            sindptr[p + 1] = m
    return m


def markov_counts(const int64_t[::1] sindptr, const int32_t[::1] states,
                  const float64_t[::1] conv, const float64_t[::1] nulls,
                  const float64_t[::1] value, float64_t[:, ::1] counts,
                  float64_t[::1] sink_conv, float64_t[::1] sink_null, float64_t[::1] sink_value):
    """Dense transition counts of the order-k chain (row S = start), accumulated.

    Each path adds its weight conv + nulls to start -> first state and to every step between
    consecutive states; its last state sends conv to conversion and nulls to null
    (``sink_*``; ``sink_value`` gets the path's value). O(states + S**2 memory).
    """
    cdef Py_ssize_t n_paths = sindptr.shape[0] - 1, p, j, a, b
    cdef Py_ssize_t start = counts.shape[0] - 1
    cdef double w
    with nogil:
        for p in range(n_paths):
            a = sindptr[p]
            b = sindptr[p + 1]
            if b == a:
                continue
            w = conv[p] + nulls[p]
            counts[start, states[a]] += w
            for j in range(a + 1, b):
                counts[states[j - 1], states[j]] += w
            sink_conv[states[b - 1]] += conv[p]
            sink_null[states[b - 1]] += nulls[p]
            sink_value[states[b - 1]] += value[p]


def markov_edges(const int64_t[::1] sindptr, const int32_t[::1] states,
                 const float64_t[::1] conv, const float64_t[::1] nulls,
                 const float64_t[::1] value, int32_t start, int32_t[::1] src,
                 float64_t[::1] weight, float64_t[::1] sink_conv, float64_t[::1] sink_null,
                 float64_t[::1] sink_value):
    """Transition edges of the order-k chain, one per state occurrence.

    Edge j enters ``states[j]`` from ``src[j]`` (the previous state, or ``start``) with the
    path's weight conv + nulls. The last state of each path sends conv to conversion and nulls
    to null, accumulated in ``sink_*`` (``sink_value`` gets the path's value).
    """
    cdef Py_ssize_t n_paths = sindptr.shape[0] - 1, p, j, a, b
    cdef double w
    with nogil:
        for p in range(n_paths):
            a = sindptr[p]
            b = sindptr[p + 1]
            w = conv[p] + nulls[p]
            for j in range(a, b):
                src[j] = states[j - 1] if j > a else start
                weight[j] = w
            if b > a:
                sink_conv[states[b - 1]] += conv[p]
                sink_null[states[b - 1]] += nulls[p]
                sink_value[states[b - 1]] += value[p]
