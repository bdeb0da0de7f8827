"""The module and its example input as the exporter sees them, for :func:`.exporter.export`.

Whether the module is time-first or a token model, the batch-first view every exported file is traced
through (``(batch, time, ...)`` in, the first output out), and the example input checked and converted
to the tensor torch is run on (float32 ``(batch, time, features)`` or int64 ``(batch, time)`` ids).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


def _time_first(module) -> bool:
    from torch import nn

    flags = {m.batch_first for m in module.modules() if isinstance(m, nn.RNNBase)}
    return flags == {False}


def _wrap(module, time_first: bool):
    """A batch-first view of ``module``: (B, T, ...) in, (B, O) or (B, T, O) out (first tuple item)."""
    import torch

    class BatchFirst(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if time_first:
                x = x.transpose(0, 1)
            y = self.inner(x)
            if isinstance(y, (tuple, list)):
                y = y[0]
            if time_first and y.dim() == 3:
                y = y.transpose(0, 1)
            return y

    return BatchFirst(module).eval()


def _as_input(example: Any, tokens: bool):
    import torch

    t = torch.as_tensor(np.asarray(example.detach().cpu() if hasattr(example, "detach") else example))
    if tokens:
        if t.dim() == 3 and t.shape[-1] == 1:
            t = t[..., 0]
        if t.dim() != 2:
            raise InputError(
                f"example_input for a token model must be (batch, time) ids, got {tuple(t.shape)}"
            )
        return t.long()
    if t.dim() != 3:
        raise InputError(f"example_input must be (batch, time, features), got shape {tuple(t.shape)}")
    if not torch.all(torch.isfinite(t.float())):
        raise InputError("example_input has NaN or Inf values")
    return t.float()


def _is_token_module(module) -> bool:
    from torch import nn

    from ..models import SequenceModel

    if isinstance(module, SequenceModel):
        return module.tokens
    return any(isinstance(m, nn.Embedding) for m in module.modules())
