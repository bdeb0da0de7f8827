"""Fixtures of the benchmark suite: the benchmark models as .ernn artifacts (see benchlib.py).

Run with ``pytest benchmarks/`` (the default ``pytest`` collects ``tests/`` only). Every benchmark times one
backend on one model and then asserts that the backend's outputs agree with edgernn's on the same inputs.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # test modules import benchlib

from benchlib import MODELS, QUANT, STEPS  # noqa: E402

from edgernn import artifact  # noqa: E402
from edgernn.bench import quantize_int8, synthetic  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_models")


@pytest.fixture(scope="session")
def artifacts(model_dir):
    """(model, quant) -> (path, plan, tensors) of every benchmark model, written once per session."""
    out = {}
    for name, (cell, i, h, density) in MODELS.items():
        plan, tensors = synthetic(cell, i, h, 1, density=density, seed=0)
        for q in QUANT:
            p, t = (plan, tensors) if q == "fp32" else quantize_int8(plan, tensors)
            path = model_dir / f"{name}.{q}.ernn"
            artifact.write(path, p, t)
            out[name, q] = (str(path), *artifact.read(path))
    return out


@pytest.fixture(scope="session")
def inputs():
    """The timed input sequence (STEPS, 8) and a separate check sequence (300, 8)."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((STEPS, 8)).astype(np.float32), rng.standard_normal((300, 8)).astype(
        np.float32
    )
