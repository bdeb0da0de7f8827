"""numba kernels, one file per cell type, and the plan interpreter (``engine``).

Importing this package does not compile anything: ``engine`` is imported (and compiled, or loaded from
the cache) when the first model is loaded with the numba backend.
"""
