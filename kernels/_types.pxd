# Shared typedefs for every kernel (one place, like sklearn's utils/_typedefs.pxd).
from libc.stdint cimport int32_t, int64_t, uint64_t

ctypedef double float64_t
ctypedef float float32_t
ctypedef Py_ssize_t intp_t
