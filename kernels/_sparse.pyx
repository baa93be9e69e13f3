# Sparse record codec for float64 state rows: b"S1" | uint16 n | uint16 idx[n] | float64 val[n].
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from kernels._types cimport float64_t, intp_t


cdef inline bint _any_nonzero8(const float64_t* x) noexcept nogil:
    """Whether x[0:8] holds a value != 0.0 (any bit but the sign bit set)."""
    cdef uint64_t b[8]
    memcpy(b, x, 64)
    return ((b[0] | b[1] | b[2] | b[3] | b[4] | b[5] | b[6] | b[7]) << 1) != 0


cdef inline intp_t _nonzero_slots(const float64_t* row, intp_t size,
                                  uint16_t* slots) noexcept nogil:
    """Write the nonzero slots of `row` to `slots` (room for `size`); returns how many.

    State rows are mostly zeros: blocks of 8 zeros are skipped with one test.
    """
    cdef intp_t j, k, n = 0
    for j in range(0, size - size % 8, 8):
        if _any_nonzero8(row + j):
            for k in range(j, j + 8):
                slots[n] = <uint16_t>k
                n += row[k] != 0.0
    for k in range(size - size % 8, size):
        slots[n] = <uint16_t>k
        n += row[k] != 0.0
    return n


cdef inline void _write_record(const float64_t* row, const uint16_t* slots, uint16_t n,
                               char* out) noexcept nogil:
    """The record of `row` (nonzero at `slots[:n]`) into `out` (4 + 10 * n bytes)."""
    cdef intp_t k
    cdef char* val = out + 4 + 2 * <intp_t>n
    out[0] = 83  # 'S'
    out[1] = 49  # '1'
    memcpy(out + 2, &n, 2)
    memcpy(out + 4, slots, 2 * <intp_t>n)
    for k in range(n):
        memcpy(val + 8 * k, &row[slots[k]], 8)


def encode(const float64_t[:, ::1] states):
    """One record (bytes) per row of `states`, as a list.

    Without the GIL, list each row's nonzero slots (one branch-free pass over the row); then
    allocate each bytes object at its final size and, again without the GIL, copy the slots
    and gather their values into it. O(rows * size) time, O(rows * size) bytes of scratch.
    """
    cdef intp_t rows = states.shape[0], size = states.shape[1], i
    cdef intp_t* counts = <intp_t*>malloc(max(rows, 1) * sizeof(intp_t))
    cdef char** heads = <char**>malloc(max(rows, 1) * sizeof(char*))
    cdef uint16_t* slots = <uint16_t*>malloc(max(rows * size, 1) * sizeof(uint16_t))
    cdef list out = []
    cdef bytes rec
    try:
        if counts == NULL or heads == NULL or slots == NULL:
            raise MemoryError()
        with nogil:
            for i in range(rows):
                counts[i] = _nonzero_slots(&states[i, 0], size, slots + i * size)
        for i in range(rows):
            rec = PyBytes_FromStringAndSize(NULL, 4 + 10 * counts[i])
            heads[i] = PyBytes_AS_STRING(rec)
            out.append(rec)
        with nogil:
            for i in range(rows):
                _write_record(&states[i, 0], slots + i * size, <uint16_t>counts[i], heads[i])
    finally:
        free(counts)
        free(heads)
        free(slots)
    return out


cdef inline int _decode_one(const uint8_t* rec, intp_t length, float64_t* row,
                            intp_t size) noexcept nogil:
    """Decode one record into `row`; 0 on success, 1 if malformed."""
    cdef intp_t k
    cdef uint16_t n, col
    if length < 4 or rec[0] != 83 or rec[1] != 49:
        return 1
    memcpy(&n, rec + 2, 2)
    if n > size or length != 4 + 10 * <intp_t>n:
        return 1
    memset(row, 0, size * sizeof(float64_t))
    for k in range(n):
        memcpy(&col, rec + 4 + 2 * k, 2)
        if col >= size:
            return 1
        memcpy(&row[col], rec + 4 + 2 * <intp_t>n + 8 * k, 8)
    return 0


def decode(list records, float64_t[:, ::1] states):
    """Fill row i of `states` from records[i] (None or b"": row untouched).

    `records` holds one bytes-like record per row. Returns -1 on success, else the index of
    the first malformed record (rows before it are already written).
    """
    cdef intp_t rows = states.shape[0], size = states.shape[1], i, bad = -1
    cdef const uint8_t** heads = <const uint8_t**>malloc(max(rows, 1) * sizeof(uint8_t*))
    cdef intp_t* lengths = <intp_t*>malloc(max(rows, 1) * sizeof(intp_t))
    cdef list held = []  # bytes copies of records that were not bytes, alive until the end
    try:
        if heads == NULL or lengths == NULL:
            raise MemoryError()
        for i in range(rows):
            rec = records[i]
            lengths[i] = 0
            if not rec:
                continue
            if type(rec) is not bytes:
                rec = bytes(rec)
                held.append(rec)
            heads[i] = <const uint8_t*>PyBytes_AS_STRING(rec)
            lengths[i] = PyBytes_GET_SIZE(rec)
        with nogil:
            for i in range(rows):
                if lengths[i] and _decode_one(heads[i], lengths[i], &states[i, 0], size):
                    bad = i
                    break
    finally:
        free(heads)
        free(lengths)
    return bad
