"""Arrays handed to a kernel: C-contiguous and of the dtype its memoryviews declare, copied
only when they are not already (the server's arrays usually are)."""
from __future__ import annotations

import numpy as np

__all__ = ["I64", "F32", "F64", "contiguous"]

I64, F32, F64 = np.dtype(np.int64), np.dtype(np.float32), np.dtype(np.float64)


def contiguous(arr, dtype: np.dtype) -> np.ndarray:
    """`arr` itself when it is already a C-contiguous `dtype` ndarray, else a copy."""
    if type(arr) is np.ndarray and arr.dtype is dtype and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr, dtype)
