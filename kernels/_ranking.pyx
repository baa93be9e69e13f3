# Ranker features per (user, candidate) in one pass (see kernels/ranking.py: `features`, and
# `user_context` + `candidate_features`, the numpy reference this reproduces).
from libc.math cimport fabsf, log1pf
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free

from kernels._types cimport float32_t, float64_t, intp_t

ctypedef fused weight_t:
    float32_t
    float64_t

cdef enum:
    N_FEATURES = 9  # len(ranking.FEATURES), columns in that order


cdef struct Items:
    const int64_t* category
    const float32_t* log_price
    const float32_t* log_popularity
    const float32_t* log_recency
    intp_t n
    intp_t n_categories


cdef struct Context:
    float64_t denom             # max(total history weight, 1e-12)
    float32_t mean_log_price    # weighted mean log_price, rounded to float32 as the reference
    float32_t log_history_len   # log1p(number of slots with weight > 0)


cdef inline intp_t _clip(int64_t row, intp_t n) noexcept nogil:
    """`row` clipped into [0, n - 1] (n >= 1)."""
    if row < 0:
        return 0
    if row >= n:
        return n - 1
    return <intp_t>row


cdef inline intp_t _history(const int64_t* rows, const weight_t* w, intp_t start, intp_t length,
                            const Items* t, float64_t* share, Context* ctx) noexcept nogil:
    """Add one user's weights per category to `share` (all 0 on entry) and fill `ctx`.

    Reads rows[start:start + length] and w[same]; weights <= 0 (and NaN) count as 0. Sums run
    in float64. Returns -1, or an item row whose category is outside [0, n_categories).
    """
    cdef intp_t j, r, c, count = 0
    cdef float64_t x, total = 0.0, price = 0.0
    for j in range(start, start + length):
        r = _clip(rows[j], t.n)
        c = <intp_t>t.category[r]
        if c < 0 or c >= t.n_categories:
            return r
        x = <float64_t>w[j] if w[j] > 0 else 0.0
        share[c] += x
        total += x
        price += x * <float64_t>t.log_price[r]
        count += x > 0
    ctx.denom = total if total > 1e-12 else 1e-12
    ctx.mean_log_price = <float32_t>(price / ctx.denom)
    ctx.log_history_len = log1pf(<float32_t>count)
    return -1


cdef inline void _reset(const int64_t* rows, intp_t start, intp_t length, const Items* t,
                        float64_t* share) noexcept nogil:
    """Zero the `share` slots `_history` touched for rows[start:start + length]."""
    cdef intp_t j
    for j in range(start, start + length):
        share[t.category[_clip(rows[j], t.n)]] = 0.0


cdef inline intp_t _candidates(const int64_t* rows, const float32_t* scores, intp_t start,
                               intp_t length, const Items* t, const float64_t* share,
                               const Context* ctx, float32_t* out) noexcept nogil:
    """Write the N_FEATURES columns of rows[start:start + length] to out[start * N_FEATURES:].

    Returns -1, or an item row whose category is outside [0, n_categories).
    """
    cdef intp_t k, r, c
    cdef float32_t lp, best = scores[start] if length else 0.0
    cdef float32_t* o
    for k in range(length):
        r = _clip(rows[start + k], t.n)
        c = <intp_t>t.category[r]
        if c < 0 or c >= t.n_categories:
            return r
        lp = t.log_price[r]
        o = out + (start + k) * N_FEATURES
        o[0] = scores[start + k]
        o[1] = <float32_t>k
        o[2] = scores[start + k] - best
        o[3] = t.log_popularity[r]
        o[4] = t.log_recency[r]
        o[5] = <float32_t>(share[c] / ctx.denom)
        o[6] = lp
        o[7] = fabsf(lp - ctx.mean_log_price)
        o[8] = ctx.log_history_len
    return -1


cdef intp_t _fill(const int64_t* hist, const weight_t* w, intp_t n_users, intp_t hist_len,
                  const int64_t* cand, const float32_t* scores, intp_t n_cand, const Items* t,
                  float64_t* share, float32_t* out) noexcept nogil:
    """Every user in turn: history summary into `share`, candidate rows, reset `share`."""
    cdef intp_t b, bad
    cdef Context ctx
    for b in range(n_users):
        bad = _history(hist, w, b * hist_len, hist_len, t, share, &ctx)
        if bad >= 0:  # `share` is scratch: no reset needed (nor safe) past a bad category
            return bad
        bad = _candidates(cand, scores, b * n_cand, n_cand, t, share, &ctx, out)
        if bad >= 0:
            return bad
        _reset(hist, b * hist_len, hist_len, t, share)
    return -1


def features(const int64_t[:, ::1] hist_items, hist_weights,
             const int64_t[:, ::1] cand_items, const float32_t[:, ::1] scores,
             const int64_t[::1] category, const float32_t[::1] log_price,
             const float32_t[::1] log_popularity, const float32_t[::1] log_recency,
             intp_t n_categories, float32_t[:, :, ::1] out):
    """Fill `out` [B, K, N_FEATURES] with the ranker features; returns -1 or a bad item row.

    Parameters
    ----------
    hist_items : int64 [B, L]
        History item rows (clipped into [0, n - 1]).
    hist_weights : float32 or float64 [B, L], C-contiguous
        History weights, <= 0 = padding.
    cand_items : int64 [B, K]
        Candidate item rows, best first (clipped into [0, n - 1]; < 0 = padding, junk rows).
    scores : float32 [B, K]
        Retrieval scores of the candidates.
    category, log_price, log_popularity, log_recency : [n], n >= 1
        The `ItemTable` columns.
    n_categories : int >= 1
    out : float32 [B, K, N_FEATURES], C-contiguous

    Returns
    -------
    int
        -1 on success, else an item row whose category is outside [0, n_categories) (`out` is
        then partly written). Time O(B * (L + K)), scratch O(n_categories) float64.
    """
    cdef intp_t B = hist_items.shape[0], L = hist_items.shape[1], K = cand_items.shape[1]
    cdef intp_t n = category.shape[0], bad = -1
    cdef const float32_t[:, ::1] w32
    cdef const float64_t[:, ::1] w64
    cdef const float32_t* p32 = NULL
    cdef const float64_t* p64 = NULL
    cdef bint wide = hist_weights.dtype.itemsize == 8
    cdef bint has_hist = B > 0 and L > 0, has_cand = B > 0 and K > 0
    if wide:
        w64 = hist_weights
        if w64.shape[0] != B or w64.shape[1] != L:
            raise ValueError("features: hist_weights and hist_items shapes differ")
        if has_hist:
            p64 = &w64[0, 0]
    else:
        w32 = hist_weights
        if w32.shape[0] != B or w32.shape[1] != L:
            raise ValueError("features: hist_weights and hist_items shapes differ")
        if has_hist:
            p32 = &w32[0, 0]
    if (cand_items.shape[0] != B or scores.shape[0] != B or scores.shape[1] != K
            or out.shape[0] != B or out.shape[1] != K or out.shape[2] != N_FEATURES):
        raise ValueError("features: cand_items, scores and out must be [B, K] and [B, K, 9]")
    if (n < 1 or n_categories < 1 or log_price.shape[0] != n or log_popularity.shape[0] != n
            or log_recency.shape[0] != n):
        raise ValueError("features: item arrays must share one length >= 1; n_categories >= 1")
    cdef Items t = Items(&category[0], &log_price[0], &log_popularity[0], &log_recency[0], n,
                         n_categories)
    cdef const int64_t* hist = &hist_items[0, 0] if has_hist else NULL
    cdef const int64_t* cand = &cand_items[0, 0] if has_cand else NULL
    cdef const float32_t* s = &scores[0, 0] if has_cand else NULL
    cdef float32_t* o = &out[0, 0, 0] if has_cand else NULL
    cdef float64_t* share = <float64_t*>calloc(n_categories, sizeof(float64_t))
    if share == NULL:
        raise MemoryError()
    # Released even for a few microseconds: this runs in the batch thread, and the event loop
    # taking the GIL meanwhile is what serves the other calls (100k bench, 3 alternated pairs:
    # Recommend p99 at half max 12.6-13.2 ms released, 13.4-14.6 held below 16k slots).
    with nogil:
        if wide:
            bad = _fill(hist, p64, B, L, cand, s, K, &t, share, o)
        else:
            bad = _fill(hist, p32, B, L, cand, s, K, &t, share, o)
    free(share)
    return bad
