"""A causal convolutional front-end for :class:`edgernn.models.SequenceModel` (imports torch).

DeepConvLSTM-style: ``n`` layers of ``Conv1d → [BatchNorm1d] → ReLU`` over the time axis, each
*causal*: output ``t`` reads inputs ``t-(K-1)·d .. t`` (``F.pad`` of ``(K-1)·d`` zeros before the first
step, ``padding=0``). That is what makes the model streamable: the runtime keeps the last ``(K-1)·d``
inputs of each layer as stream state, so ``step``, ``run`` and ``predict`` agree with ``forward``. During
the first ``(K-1)·d`` steps of a stream (or after ``reset``) the convolution sees zeros for the samples
before the start, exactly as ``forward`` does on the zero-padded start of a sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .models import SequenceModel


class CausalConvStack(nn.Module):
    """``(batch, time, in_channels)`` -> ``(batch, time, channels[-1])``: causal Conv1d (+BN) + ReLU layers.

    Parameters
    ----------
    in_channels : features per time step.
    channels : output channels of each layer.
    kernel_size, dilation : of every layer; each layer's stream state is ``(kernel_size-1)·dilation``
        input vectors.
    batchnorm : a ``BatchNorm1d`` between each convolution and its ReLU (folded into the convolution's
        weights at export, eval mode).
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int = 5,
        dilation: int = 1,
        batchnorm: bool = False,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"conv_channels must be positive integers, got {channels!r}")
        for name, v in (("conv_kernel_size", kernel_size), ("conv_dilation", dilation)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.history = (kernel_size - 1) * dilation
        sizes = [in_channels, *channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, dilation=dilation) for a, b in zip(sizes, sizes[1:], strict=False)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for c in channels) if batchnorm else None

    def pad(self, j: int) -> tuple[int, int]:
        """The (left, right) zero padding of layer ``j``'s time axis: ``((K-1)·d, 0)``."""
        return (self.history, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, time, in_channels)`` -> ``(batch, time, channels[-1])`` (same length: causal)."""
        z = x.transpose(1, 2)
        for j, conv in enumerate(self.convs):
            z = conv(F.pad(z, self.pad(j)))
            if self.norms is not None:
                z = self.norms[j](z)
            z = torch.relu(z)
        return z.transpose(1, 2)


def deepconvlstm(
    input_size: int,
    output_size: int,
    conv_channels: Sequence[int] = (32, 32),
    kernel_size: int = 5,
    hidden_size: int = 64,
    batchnorm: bool = True,
    **kw: Any,
) -> SequenceModel:
    """A DeepConvLSTM-style classifier (Ordóñez & Roggen 2016), streamable: causal ``Conv1d → BatchNorm1d
    → ReLU`` layers over time feeding an LSTM, a linear head on the last step (many-to-one).

    ``(batch, time, input_size)`` -> ``(batch, output_size)`` logits (``output_activation`` in ``kw``).
    Other keyword arguments go to :class:`SequenceModel` (``input_mean``/``input_std``, ``labels``,
    ``num_layers``, ``conv_dilation``...). Train with :func:`edgernn.train.fit`.
    """
    from .models import SequenceModel

    return SequenceModel(
        "lstm",
        input_size,
        hidden_size,
        output_size,
        conv_channels=conv_channels,
        conv_kernel_size=kernel_size,
        conv_batchnorm=batchnorm,
        **kw,
    )
