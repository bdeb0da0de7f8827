"""The echo state network of the edgernn family: :class:`ESN` (imports torch).

A fixed random leaky-tanh reservoir and a ridge-regression readout. Import it from :mod:`edgernn.models`,
which re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .sequence_model import OUTPUT_ACTIVATIONS, ConfigViews, _activate


class ESN(ConfigViews, nn.Module):
    """Echo state network: a fixed random leaky-tanh reservoir and a linear readout fitted by ridge.

    Update per step (``a`` = ``leak_rate``)::

        x_t = (1 - a) x_{t-1} + a tanh(W_in u_t + W x_{t-1} + b)
        y_t = W_out z_t + b_out,   z_t = x_t ("state") or [1; u_t; x_t] ("extended")

    ``W_in`` is uniform in ``±input_scaling``; ``W`` keeps a fraction ``1 - sparsity`` of uniform(-1, 1)
    entries and is rescaled to ``spectral_radius``; ``b`` is uniform in ``±bias_scaling``. Everything is
    drawn from ``numpy.random.default_rng(seed)``. :meth:`fit` solves the readout in closed form.
    """

    def __init__(
        self,
        input_size: int,
        reservoir_size: int,
        output_size: int,
        leak_rate: float = 1.0,
        spectral_radius: float = 0.9,
        input_scaling: float = 1.0,
        sparsity: float = 0.9,
        seed: int = 0,
        ridge: float = 1e-6,
        readout_input: str = "state",
        bias_scaling: float = 0.0,
        many_to_many: bool = True,
        output_activation: str = "linear",
        labels: Sequence[str] | None = None,
    ):
        super().__init__()
        for name, v in (
            ("input_size", input_size),
            ("reservoir_size", reservoir_size),
            ("output_size", output_size),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 < leak_rate <= 1.0:
            raise ValueError(f"leak_rate must be in (0, 1], got {leak_rate!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity (fraction of zero weights) must be in [0, 1), got {sparsity!r}")
        if spectral_radius < 0 or input_scaling < 0 or ridge < 0 or bias_scaling < 0:
            raise ValueError("spectral_radius, input_scaling, bias_scaling and ridge must be >= 0")
        if readout_input not in ("state", "extended"):
            raise ValueError(f"readout_input must be 'state' or 'extended', got {readout_input!r}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}"
            )
        if labels is not None:
            labels = [str(s) for s in labels]
            if len(labels) != output_size:
                raise ValueError(f"labels has {len(labels)} names, expected output_size={output_size}")
        self.config: dict[str, Any] = {
            "input_size": input_size,
            "reservoir_size": reservoir_size,
            "output_size": output_size,
            "leak_rate": float(leak_rate),
            "spectral_radius": float(spectral_radius),
            "input_scaling": float(input_scaling),
            "sparsity": float(sparsity),
            "seed": int(seed),
            "ridge": float(ridge),
            "readout_input": readout_input,
            "bias_scaling": float(bias_scaling),
            "many_to_many": bool(many_to_many),
            "output_activation": output_activation,
            "labels": labels,
        }
        rng = np.random.default_rng(seed)
        n = reservoir_size
        w_in = rng.uniform(-input_scaling, input_scaling, (n, input_size))
        w = rng.uniform(-1.0, 1.0, (n, n)) * (rng.random((n, n)) >= sparsity)
        radius = float(np.max(np.abs(np.linalg.eigvals(w)))) if n > 0 else 0.0
        if radius > 0:
            w *= spectral_radius / radius
        b = rng.uniform(-bias_scaling, bias_scaling, n) if bias_scaling > 0 else np.zeros(n)
        self.register_buffer("W_in", torch.tensor(w_in, dtype=torch.float32))
        self.register_buffer("W", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))
        feat = n if readout_input == "state" else 1 + input_size + n
        self.readout = nn.Linear(feat, output_size)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        for p in self.parameters():
            p.requires_grad_(False)

    def _check(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.config["input_size"]:
            raise InputError(
                f"inputs must be (batch, time, {self.config['input_size']}), got {tuple(u.shape)}"
            )
        return u.to(torch.float32)

    def states(self, u: torch.Tensor) -> torch.Tensor:
        """Reservoir states ``(batch, time, reservoir_size)`` for inputs ``(batch, time, input_size)``."""
        u = self._check(u)
        a = self.config["leak_rate"]
        x = u.new_zeros(u.shape[0], self.config["reservoir_size"])
        drive = u @ self.W_in.T + self.b
        out = []
        for t in range(u.shape[1]):
            x = (1 - a) * x + a * torch.tanh(drive[:, t] + x @ self.W.T)
            out.append(x)
        return torch.stack(out, dim=1)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """Readout inputs ``(batch, time, F)``: states, or ``[1; u; x]`` (``readout_input="extended"``)."""
        u = self._check(u)
        x = self.states(u)
        if self.config["readout_input"] == "extended":
            x = torch.cat([torch.ones_like(u[..., :1]), u, x], dim=-1)
        return x

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        """Readout output before ``output_activation``; same shapes as :meth:`forward`."""
        z = self.features(u)
        if not self.many_to_many:
            z = z[:, -1]
        return self.readout(z)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(batch, time, input_size)`` -> ``(batch, time, output_size)`` (or ``(batch, output_size)``)."""
        return _activate(self.logits(u), self.output_activation)

    @torch.no_grad()
    def fit(self, X: Any, Y: Any, washout: int = 0) -> ESN:
        """Fit the readout by ridge regression, in closed form (float64 normal equations).

        ``X``: ``(batch, time, input_size)`` or ``(time, input_size)``. ``Y``: targets of the readout's
        pre-activation output, ``(batch, time, output_size)`` / ``(time, output_size)`` for a many-to-many
        ESN, ``(batch, output_size)`` for a many-to-one one. ``washout`` leading steps are left out.
        Solves ``min ||Z W_out^T + b_out - Y||² + ridge ||W_out||²`` (the bias is not penalized).
        """
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        Y = torch.as_tensor(np.asarray(Y, dtype=np.float64))
        if X.dim() == 2:
            X, Y = X.unsqueeze(0), Y.unsqueeze(0)
        z = self.features(X).double()
        o = self.config["output_size"]
        if self.many_to_many:
            if Y.shape != (*X.shape[:2], o):
                raise InputError(f"targets must have shape {(*X.shape[:2], o)}, got {tuple(Y.shape)}")
            if not 0 <= washout < X.shape[1]:
                raise InputError(f"washout {washout} must be in [0, {X.shape[1]})")
            z = z[:, washout:].reshape(-1, z.shape[-1])
            Y = Y[:, washout:].reshape(-1, o)
        else:
            if Y.shape != (X.shape[0], o):
                raise InputError(f"targets must have shape {(X.shape[0], o)}, got {tuple(Y.shape)}")
            z = z[:, -1]
        if not torch.all(torch.isfinite(Y)):
            raise InputError("targets contain NaN or Inf")
        zb = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        reg = torch.eye(zb.shape[1], dtype=torch.float64) * self.config["ridge"]
        reg[-1, -1] = 0.0
        sol = torch.linalg.lstsq(zb.T @ zb + reg, zb.T @ Y).solution
        self.readout.weight.copy_(sol[:-1].T.float())
        self.readout.bias.copy_(sol[-1].float())
        return self
