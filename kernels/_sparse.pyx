# Sparse record codec for float64 state rows: b"S1" | uint16 n | uint16 idx[n] | float64 val[n].
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint16_t, int64_t


def encode(const double[:, ::1] states, uint8_t[::1] out, int64_t[::1] offsets):
    """Write one record per row of `states` into `out`; offsets[i]..offsets[i+1] is row i.

    `out` must hold rows * (4 + 10 * size) bytes; returns the bytes written.
    """
    cdef Py_ssize_t rows = states.shape[0], size = states.shape[1], i, j, pos = 0, start
    cdef uint16_t n, col
    cdef double v
    with nogil:
        for i in range(rows):
            offsets[i] = pos
            start = pos
            out[pos] = 83  # 'S'
            out[pos + 1] = 49  # '1'
            n = 0
            for j in range(size):
                if states[i, j] != 0.0:
                    n += 1
            memcpy(&out[pos + 2], &n, 2)
            pos += 4
            for j in range(size):
                if states[i, j] != 0.0:
                    col = <uint16_t>j
                    memcpy(&out[pos], &col, 2)
                    pos += 2
            for j in range(size):
                v = states[i, j]
                if v != 0.0:
                    memcpy(&out[pos], &v, 8)
                    pos += 8
        offsets[rows] = pos
    return pos


cdef inline int _decode_one(const uint8_t[::1] buf, Py_ssize_t pos, Py_ssize_t end,
                            double[:, ::1] states, Py_ssize_t i) noexcept nogil:
    """Decode one record into row i; 0 on success, 1 if malformed."""
    cdef Py_ssize_t size = states.shape[1], k
    cdef uint16_t n, col
    cdef double v
    if end - pos < 4 or buf[pos] != 83 or buf[pos + 1] != 49:
        return 1
    memcpy(&n, &buf[pos + 2], 2)
    if n > size or end - pos != 4 + 10 * <Py_ssize_t>n:
        return 1
    for k in range(size):
        states[i, k] = 0.0
    for k in range(n):
        memcpy(&col, &buf[pos + 4 + 2 * k], 2)
        if col >= size:
            return 1
        memcpy(&v, &buf[pos + 4 + 2 * n + 8 * k], 8)
        states[i, col] = v
    return 0


def decode(const uint8_t[::1] buf, const int64_t[::1] offsets, double[:, ::1] states):
    """Fill row i of `states` from the record at offsets[i]..offsets[i+1] (empty: row untouched).

    Returns -1 on success, else the index of the first malformed record.
    """
    cdef Py_ssize_t rows = states.shape[0], i, bad = -1
    with nogil:
        for i in range(rows):
            if offsets[i] != offsets[i + 1] and _decode_one(buf, offsets[i], offsets[i + 1], states, i):
                bad = i
                break
    return bad
