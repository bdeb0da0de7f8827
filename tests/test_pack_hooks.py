"""The op registry's hooks (kernels/ops/_pack.py): every op kind owns its plan fields and tensors (``check``,
``tensor_specs``), state, scratch, packing and value checks, and the packer lays out what those hooks say.
Oracle: the hooks' own stated sizes against the packed header and state layout (the kernels' numerics are
tested against numpy references elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
from builders import attention, dense, esn, model, quantize_int8, recurrent
from edgernn.kernels.ops import BY_NAME, REGISTRY

import edgernn
from edgernn.artifact import LAYER_KINDS, ArtifactError, validate_tensors

HOOKS = ("check", "tensor_specs", "state", "scratch", "pack", "check_values")


@pytest.mark.parametrize("op", sorted(REGISTRY.values(), key=lambda o: o.KIND), ids=lambda o: o.NAME)
def test_every_registered_op_has_the_packing_hooks(op):
    missing = [h for h in HOOKS if not callable(getattr(op, h, None))]
    assert not missing, f"{op.NAME}: no {missing}"
    if hasattr(op, "proj_rows"):  # chunk mode hoists its input projection: it names that matrix
        assert isinstance(op.PROJ_MAT, int)


def test_every_plan_kind_is_registered():
    assert set(LAYER_KINDS) <= set(BY_NAME)


def _plans():
    rng = np.random.default_rng(3)
    yield model([recurrent(rng, "lstm", "l", 4, 6, initial_h=True, initial_c=True), dense(rng, "d", 6, 2)], 4)
    yield model([recurrent(rng, "gru", "g", 3, 5, direction="bidirectional"), dense(rng, "d", 10, 2)], 3)
    yield model([recurrent(rng, "rnn", "r", 3, 7), attention(rng, "a", 7, 4), dense(rng, "d", 7, 1)], 3)
    yield quantize_int8(*model([esn(rng, "e", 2, 30, sparse=True), dense(rng, "d", 30, 2)], 2))


@pytest.mark.parametrize("case", range(4))
def test_state_layout_is_what_the_ops_state_says(case):
    """The state regions follow the layers' ``state`` parts in order, contiguous from 0 to n_state, and
    the initial state holds initial_h/initial_c where an op put them."""
    plan, tensors = list(_plans())[case]
    m = edgernn.Model(plan, tensors, backend="numpy")
    p = m._packed
    want, st = [], 0
    for layer in plan["layers"]:
        for part, n in BY_NAME[layer["kind"]].state(layer):
            want.append((f"{layer['name']}.{part}", st, n))
            st += n
    assert p.state_layout == want and p.n_state == st
    scratch = max(BY_NAME[ly["kind"]].scratch(ly) for ly in plan["layers"])
    assert p.m_size >= p.n_state + plan["input"]["size"] + scratch
    if case == 0:
        h0, c0 = tensors["l.initial_h"][0], tensors["l.initial_c"][0]
        np.testing.assert_array_equal(p.state0, np.concatenate([h0, c0]))


def test_value_checks_come_from_the_op_modules():
    """A CSR row pointer that is not one (esn) and std <= 0 (normalize) are refused by the loader."""
    rng = np.random.default_rng(0)
    plan, tensors = model([esn(rng, "e", 2, 20, sparse=True, density=0.2), dense(rng, "d", 20, 1)], 2)
    bad = dict(tensors, **{"e.W_indptr": tensors["e.W_indptr"][::-1].copy()})
    with pytest.raises(ArtifactError, match="bad weights: .*W_indptr"):
        validate_tensors(plan, bad)
    norm = {"kind": "normalize", "name": "n", "input_size": 2, "tensors": {"mean": "m", "std": "s"}}
    plan, tensors = model([(norm, {"m": np.zeros(2, np.float32), "s": np.array([1, 0], np.float32)})], 2)
    with pytest.raises(ArtifactError, match="bad weights: .*std must be > 0"):
        validate_tensors(plan, tensors)


@pytest.mark.parametrize("kind", ["embedding", "onehot"])
def test_token_ops_must_come_first(kind):
    """A kind with ``TOKENS`` (its module says so) is refused after another layer or on input_size != 1."""
    rng = np.random.default_rng(0)
    tok = {"kind": kind, "name": "t", "input_size": 1, "vocab_size": 5, "output_size": 5, "tensors": {}}
    if kind == "embedding":
        tok["tensors"] = {"table": "t.table"}
    assert BY_NAME[kind].TOKENS
    with pytest.raises(ArtifactError, match=r"bad layer: layer 1 .*token layers must come first"):
        model([dense(rng, "d", 3, 1), (tok, {})], 3)
    with pytest.raises(ArtifactError, match=r"bad layer: layer 0 .*token layers must come first"):
        model([(dict(tok, input_size=2), {})], 2)
