"""Hot-path numeric kernels (Cython) with plain-numpy references.

One algorithm family per `_name.pyx`, wrapped by `name.py` which validates input, holds the numpy
reference of the same computation and picks the native one unless `use_native=False`. This package
imports nothing else of Tailor's: server/ and training/ both call it.
"""
