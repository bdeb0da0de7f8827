import os
import sys

# tests import their helpers (reference, builders) as plain modules
sys.path.insert(0, os.path.dirname(__file__))

# Small int8 recurrent layers are computed from float32 q·scale by default (edgernn/pack.py, faster while
# they fit in cache). The tests' models are small, so keep them on the int8 kernels; the default policy has
# its own tests (test_runtime_cells.py::test_small_int8_recurrent_layers_*), which unset this.
os.environ["EDGERNN_DEQUANTIZE_MAX_BYTES"] = "0"
