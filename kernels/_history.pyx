# The encoder's history blend at request time
# (semantics and the numpy reference: kernels/history.py).
from libc.math cimport exp2, isfinite
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, qsort

import numpy as np

from kernels._types cimport float32_t, float64_t, intp_t


cdef int64_t MAX_EXACT = 9007199254740992  # 2^53


cdef struct Entry:
    int64_t row
    double w        # decayed weight (summed per row once grouped)
    double latest   # latest event time (per row once grouped)
    double key      # what the next sort orders by (rows: checked to be exact, |row| < 2^53)
    intp_t order    # its tie-breaker: the entry's position before that sort


cdef int _by_key(const void* a, const void* b) noexcept nogil:
    cdef const Entry* x = <const Entry*>a
    cdef const Entry* y = <const Entry*>b
    if x.key != y.key:
        return -1 if x.key < y.key else 1
    return -1 if x.order < y.order else (1 if x.order > y.order else 0)


cdef void _sort(Entry* e, intp_t n, int by) noexcept nogil:
    """Stable sort of `e[:n]` by row (by=0), heaviest first (1) or oldest first (2)."""
    cdef intp_t i
    for i in range(n):
        e[i].order = i
        e[i].key = <double>e[i].row if by == 0 else (-e[i].w if by == 1 else e[i].latest)
    qsort(e, n, sizeof(Entry), _by_key)


cdef intp_t _blend(const int64_t[::1] rows, const float64_t[::1] weights,
                   const float64_t[::1] ts, double now, intp_t length, double half_life,
                   double long_half_life, double session, double background_mass,
                   Entry* e) noexcept nogil:
    """Fill `e` with the kept entries, oldest first; returns how many, or -1 when a time or
    weight is not finite, -2 when a row is beyond 2^53 (not exact as a sort key)."""
    cdef intp_t n = rows.shape[0], i, g = 0, k = 0
    cdef double age, mass = 0.0, scale, old_before = now - session
    for i in range(n):
        if not (isfinite(ts[i]) and isfinite(weights[i])):
            return -1
        if rows[i] >= MAX_EXACT or rows[i] <= -MAX_EXACT:
            return -2
        age = now - ts[i]
        if age < 0.0:
            age = 0.0
        e[i].row = rows[i]
        e[i].w = weights[i] * (exp2(-age / half_life) + exp2(-age / long_half_life))
        e[i].latest = ts[i]
    _sort(e, n, 0)  # equal rows keep their input order: summed as bincount sums them
    for i in range(n):
        if g and e[g - 1].row == e[i].row:
            e[g - 1].w += e[i].w
            if e[i].latest > e[g - 1].latest:
                e[g - 1].latest = e[i].latest
        else:
            e[g] = e[i]
            g += 1
    if background_mass > 0.0:
        for i in range(g):
            if e[i].latest < old_before:
                mass += e[i].w
        if mass > background_mass:
            scale = background_mass / mass
            for i in range(g):
                if e[i].latest < old_before:
                    e[i].w *= scale
    for i in range(g):  # keep positive weights, rows ascending
        if e[i].w > 0.0:
            e[k] = e[i]
            k += 1
    if k > length:
        _sort(e, k, 1)
        k = length
    _sort(e, k, 2)
    return k


def blend(const int64_t[::1] rows, const float64_t[::1] weights, const float64_t[::1] ts,
          double now, intp_t length, double half_life, double long_half_life, double session,
          double background_mass):
    """The kernel of `kernels.history.blend`: (rows, float32 weights), or the error code of
    `_blend` (-1, -2) for the wrapper to word."""
    cdef intp_t n = rows.shape[0], k
    if weights.shape[0] != n or ts.shape[0] != n or length < 0:
        raise ValueError("rows, weights, ts: one length; length >= 0")
    cdef Entry* e = <Entry*>malloc(max(n, 1) * sizeof(Entry))
    if e == NULL:
        raise MemoryError()
    try:
        k = _blend(rows, weights, ts, now, length, half_life, long_half_life, session,
                   background_mass, e)
        if k < 0:
            return k
        out_rows = np.empty(k, np.int64)
        out_w = np.empty(k, np.float32)
        _copy_out(e, k, out_rows, out_w)
        return out_rows, out_w
    finally:
        free(e)


cdef void _copy_out(const Entry* e, intp_t k, int64_t[::1] rows, float32_t[::1] w) noexcept:
    cdef intp_t i
    for i in range(k):
        rows[i] = e[i].row
        w[i] = <float32_t>e[i].w
