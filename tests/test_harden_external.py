"""ONNX and checkpoint inputs (issue 6, part 2): files from elsewhere must not reach outside their folder,
grow without bound, or run code.

* ONNX external data (``edgernn.export.onnx``): absolute locations, ``..``, symlinks leaving the
  model's folder, non-files and byte ranges outside the data file are refused with ``CompileError``;
  a relative file or an in-folder symlink is accepted (the control).
* Checkpoints (``edgernn.models.load``): a pickle (``torch.save``) is refused without being unpickled (its
  payload would create a marker file); a safetensors checkpoint whose config asks for absurd sizes is
  refused with ``ValueError`` before anything that large is allocated.

These modules come from the compiler and torch branches: the tests skip (visibly, ``-ra``) until they are
on main.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

onnx = pytest.importorskip("onnx")


def _compiler():
    return pytest.importorskip("edgernn.export.onnx")


# ------------------------------------------------------------------------------ ONNX external data


def _gemm_model(folder, location: str | None, offset=None, length=None, data=None):
    """Y = X @ W^T + b (W 2x3) with W stored as external data at ``location`` (relative to ``folder``)."""
    from onnx import TensorProto, helper, numpy_helper

    W = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    b = np.array([0.5, -0.5], np.float32)
    w = numpy_helper.from_array(W, "W")
    if location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                e = w.external_data.add()
                e.key, e.value = k, str(v)
        if data is not None:
            with open(os.path.join(folder, data), "wb") as f:
                f.write(W.tobytes())
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "b"], ["Y"], transB=1)],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
        [w, numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path, W


@pytest.fixture
def outside(tmp_path):
    """A secret file outside the model folder, in the same byte layout as W (so a read would 'work')."""
    W = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    p = tmp_path / "secret.bin"
    p.write_bytes(W.tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    return model_dir, p


def test_external_data_inside_folder_is_read(outside):
    comp = _compiler()
    model_dir, _ = outside
    path, W = _gemm_model(str(model_dir), "w.bin", data="w.bin")
    m = comp.load_model(path)
    from onnx import numpy_helper

    got = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(got["W"], W)


@pytest.mark.parametrize(
    "loc",
    ["ABS", "../secret.bin", "sub/../../secret.bin", "..\\secret.bin", "./../secret.bin", ""],
    ids=["absolute", "dotdot", "nested-dotdot", "backslash", "dot-dotdot", "empty"],
)
def test_external_data_path_leaving_folder(outside, loc):
    comp = _compiler()
    model_dir, secret = outside
    loc = str(secret) if loc == "ABS" else loc
    path, _ = _gemm_model(str(model_dir), loc)
    with pytest.raises(comp.CompileError, match="external data"):
        comp.load_model(path)


def test_external_data_symlink_leaving_folder(outside):
    comp = _compiler()
    model_dir, secret = outside
    os.symlink(secret, model_dir / "w.bin")
    path, _ = _gemm_model(str(model_dir), "w.bin")
    with pytest.raises(comp.CompileError, match="outside the model's folder"):
        comp.load_model(path)


def test_external_data_symlinked_folder_leaving(outside):
    comp = _compiler()
    model_dir, secret = outside
    os.symlink(secret.parent, model_dir / "up")
    path, _ = _gemm_model(str(model_dir), "up/secret.bin")
    with pytest.raises(comp.CompileError, match="outside the model's folder"):
        comp.load_model(path)


def test_external_data_symlink_inside_folder_is_fine(outside):
    comp = _compiler()
    model_dir, _ = outside
    path, W = _gemm_model(str(model_dir), "link.bin", data="w.bin")
    os.symlink(model_dir / "w.bin", model_dir / "link.bin")
    comp.load_model(path)


@pytest.mark.parametrize("what", ["fifo", "directory", "missing"])
def test_external_data_not_a_regular_file(outside, what):
    comp = _compiler()
    model_dir, _ = outside
    target = model_dir / "w.bin"
    if what == "fifo":
        os.mkfifo(target)  # reading it would block forever
    elif what == "directory":
        target.mkdir()
    path, _ = _gemm_model(str(model_dir), "w.bin")
    with pytest.raises(comp.CompileError, match="external data"):
        comp.load_model(path)


@pytest.mark.parametrize(
    "offset,length",
    [
        (0, 10**12),
        (10**12, 4),
        (-4, 24),
        (16, 24),
        ("abc", 24),
        (0, "1e3"),
    ],
)
def test_external_data_range_outside_file(outside, offset, length):
    comp = _compiler()
    model_dir, _ = outside
    path, _ = _gemm_model(str(model_dir), "w.bin", offset=offset, length=length, data="w.bin")
    with pytest.raises(comp.CompileError):
        comp.load_model(path)


# ------------------------------------------------------------------------------ checkpoints


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("edgernn.models")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.pt"
    torch.save({"state": Payload()}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="safetensors"):
        models.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "key,value",
    [
        ("hidden_size", 2**44),
        ("input_size", 2**44),
        ("num_layers", 10**9),
        ("hidden_size", -3),
    ],
)
def test_checkpoint_config_sizes_capped(tmp_path, key, value):
    """A checkpoint is a few kB; its config must not make the loader allocate terabytes first."""
    pytest.importorskip("torch")
    models = pytest.importorskip("edgernn.models")
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    m = models.SequenceModel(cell="lstm", input_size=3, hidden_size=4, output_size=1)
    path = tmp_path / "ok.safetensors"
    models.save(m, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key_meta = next(iter(meta))
    info = json.loads(meta[key_meta])
    info["config"][key] = value
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={key_meta: json.dumps(info)})
    with pytest.raises(ValueError):
        models.load(bad)
