"""Exceptions raised by edgernn."""

from __future__ import annotations


class EdgeRNNError(Exception):
    """Base class of every error edgernn raises on purpose."""


class ArtifactError(EdgeRNNError, ValueError):
    """An ``.ernn`` file (or a plan/tensor set about to be written) is malformed.

    The message starts with the name of the check that failed, e.g.
    ``"shape mismatch: tensor 'lstm0.W': shape (4, 8) != expected (1, 256, 8)"``.
    """


class InputError(EdgeRNNError, ValueError):
    """An input given to a stream or model has the wrong shape, dtype or value.

    Raised before any state is touched: the stream is exactly as it was before the call.
    """


class MissingDependencyError(EdgeRNNError, ImportError):
    """An optional dependency (torch, onnx, onnxruntime, ...) is not installed."""


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'edgernn[{extra}]'"
        ) from e
