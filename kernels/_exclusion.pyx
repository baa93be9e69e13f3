# The rows one user must not be recommended (semantics and the numpy reference:
# kernels/exclusion.py).
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport free, malloc, qsort

import numpy as np

from kernels._types cimport float64_t, intp_t


cdef int _by_value(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef inline bint _excluded(uint32_t mask, double ts, uint32_t forever,
                           const float64_t[::1] window_s, const uint32_t[::1] window_bits,
                           double now) noexcept nogil:
    cdef intp_t w
    if mask & forever:
        return True
    for w in range(window_s.shape[0]):
        if (mask & window_bits[w]) and ts > now - window_s[w]:
            return True
    return False


cdef int64_t _row_of(int64_t code, const int64_t[::1] codes_sorted,
                     const int64_t[::1] code_order) noexcept nogil:
    """The row of `code` (binary search), -1 if the catalog lacks it."""
    cdef intp_t lo = 0, hi = codes_sorted.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if codes_sorted[mid] < code:
            lo = mid + 1
        else:
            hi = mid
    if lo < codes_sorted.shape[0] and codes_sorted[lo] == code:
        return code_order[lo]
    return -1


cdef intp_t _collect(const int64_t[::1] requested, const int64_t[::1] seen_rows,
                     const uint32_t[::1] seen_mask, const float64_t[::1] seen_ts,
                     uint32_t seen_forever, const float64_t[::1] seen_window_s,
                     const uint32_t[::1] seen_window_bits, const int64_t[::1] live_codes,
                     const uint32_t[::1] live_mask, const float64_t[::1] live_ts,
                     uint32_t live_forever, const float64_t[::1] live_window_s,
                     const uint32_t[::1] live_window_bits, const int64_t[::1] codes_sorted,
                     const int64_t[::1] code_order, const uint8_t[::1] repeatable, double now,
                     int64_t* out) noexcept nogil:
    """Write the rows to `out` (room for every input), sorted and unique: their count, or -1
    for a row outside `repeatable`."""
    cdef intp_t i, k = 0, n = repeatable.shape[0]
    cdef int64_t row
    for i in range(requested.shape[0]):
        out[k] = requested[i]
        k += 1
    for i in range(seen_rows.shape[0]):
        row = seen_rows[i]
        if row < 0 or row >= n:
            return -1
        if not repeatable[row] and _excluded(seen_mask[i], seen_ts[i], seen_forever,
                                             seen_window_s, seen_window_bits, now):
            out[k] = row
            k += 1
    for i in range(live_codes.shape[0]):
        if not _excluded(live_mask[i], live_ts[i], live_forever, live_window_s,
                         live_window_bits, now):
            continue
        row = _row_of(live_codes[i], codes_sorted, code_order)
        if row >= n:
            return -1
        if row >= 0 and not repeatable[row]:
            out[k] = row
            k += 1
    if k > 1:
        qsort(out, k, sizeof(int64_t), _by_value)
    cdef intp_t u = 0
    for i in range(k):
        if u == 0 or out[i] != out[u - 1]:
            out[u] = out[i]
            u += 1
    return u


def one_user(const int64_t[::1] requested, const int64_t[::1] seen_rows,
             const uint32_t[::1] seen_mask, const float64_t[::1] seen_ts, uint32_t seen_forever,
             const float64_t[::1] seen_window_s, const uint32_t[::1] seen_window_bits,
             const int64_t[::1] live_codes, const uint32_t[::1] live_mask,
             const float64_t[::1] live_ts, uint32_t live_forever,
             const float64_t[::1] live_window_s, const uint32_t[::1] live_window_bits,
             const int64_t[::1] codes_sorted, const int64_t[::1] code_order,
             const uint8_t[::1] repeatable, double now):
    """The kernel of `kernels.exclusion.one_user`: the rows, or None for a row outside
    `repeatable` (the wrapper words it). Lengths are checked by the wrapper."""
    if seen_window_s.shape[0] != seen_window_bits.shape[0] or \
            live_window_s.shape[0] != live_window_bits.shape[0]:
        raise ValueError("a rule's window_s and window_bits: one length")
    cdef intp_t room = requested.shape[0] + seen_rows.shape[0] + live_codes.shape[0], k
    cdef int64_t* buf = <int64_t*>malloc(max(room, 1) * sizeof(int64_t))
    if buf == NULL:
        raise MemoryError()
    try:
        k = _collect(requested, seen_rows, seen_mask, seen_ts, seen_forever, seen_window_s,
                     seen_window_bits, live_codes, live_mask, live_ts, live_forever,
                     live_window_s, live_window_bits, codes_sorted, code_order, repeatable,
                     now, buf)
        if k < 0:
            return None
        out = np.empty(k, np.int64)
        _copy(buf, k, out)
        return out
    finally:
        free(buf)


cdef void _copy(const int64_t* buf, intp_t k, int64_t[::1] out) noexcept:
    cdef intp_t i
    for i in range(k):
        out[i] = buf[i]
