"""edgernn: compile and stream recurrent networks on CPUs and ARM boards.

Device side (numpy + numba only)::

    model = edgernn.load("model.ernn")
    s = model.stream()
    y = s.step(x)          # x: (input_size,) -> y: (output_size,)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ArtifactError, EdgeRNNError, InputError, MissingDependencyError
from .runtime import Model, Stream, Streams, available_backends, load

__all__ = [
    "ArtifactError",
    "EdgeRNNError",
    "InputError",
    "MissingDependencyError",
    "Model",
    "Stream",
    "Streams",
    "__version__",
    "available_backends",
    "load",
]
