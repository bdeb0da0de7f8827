"""numba kernels: generated for each model (``codegen``, one emitter module per op kind in ``ops``; the
many-stream kernel's blocking in ``lanes``) and what they share (activations, guard, layout).

Importing this package does not compile anything: a model's kernels are generated and compiled (or
loaded from the cache) when it is loaded with the numba backend.
"""
