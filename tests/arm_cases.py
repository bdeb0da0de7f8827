"""Small random models of every cell type, for the aarch64 job and the AOT tests (issue 8).

Each case is a plan + tensors written with :func:`edgernn.artifact.write`: a normalize layer, the cell,
and a dense head, so one file exercises the cell inside a realistic stack. Sizes are small: under qemu
every kernel compile is emulated, and the point here is correctness, not speed.

Run as a script on the host to write the cross-architecture fixtures the aarch64 job checks::

    python tests/arm_cases.py write DIR     # DIR/<case>.ernn + DIR/<case>.npz (input X, expected Y)

The expected outputs are the numpy reference's (float64 oracle, ``tests/reference.py``) and, separately,
the host runtime's own outputs, so aarch64 is compared both with the oracle and with x86-64.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

I, H, O, T = 3, 8, 2, 12

#: cell type -> the layer spec (sizes filled in by :func:`build`)
CELLS: dict[str, dict] = {
    "rnn": {"kind": "rnn", "hidden_size": H, "activations": ["tanh"]},
    "rnn_relu": {"kind": "rnn", "hidden_size": H, "activations": ["relu"]},
    "lstm": {"kind": "lstm", "hidden_size": H},
    "gru": {"kind": "gru", "hidden_size": H, "linear_before_reset": 1},
    "gru_lbr0": {"kind": "gru", "hidden_size": H, "linear_before_reset": 0},
    "esn": {"kind": "esn", "reservoir_size": 16, "leak_rate": 0.5},
    # 4% nonzeros: below the density at which the runtime packs a CSR reservoir dense (the CSR kernel)
    "esn_sparse": {"kind": "esn", "reservoir_size": 48, "leak_rate": 0.7, "sparse": True, "density": 0.04},
    "dense": {"kind": "dense", "output_size": H, "activation": "tanh"},
    "attention": {"kind": "attention", "attention_size": 5},
}


def _q8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-row int8 quantization: w ≈ q * scale[..., None]."""
    amax = np.abs(w).max(axis=-1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


def build(cell: str, quantize: str = "none", seed: int = 0, sequence: str = "many_to_many"):
    """A (plan, tensors) pair: normalize(I) -> cell -> dense(O). quantize: "none" | "int8"."""
    rng = np.random.default_rng(seed)
    spec = dict(CELLS[cell])
    kind = spec["kind"]
    density = spec.pop("density", 0.3)  # of a reservoir's nonzeros (not a plan field)

    def rnd(*shape, s=0.5):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "norm.mean": rnd(I),
        "norm.std": (0.5 + rng.random(I)).astype(np.float32),
    }
    layers: list[dict] = [
        {
            "kind": "normalize",
            "name": "norm",
            "input_size": I,
            "tensors": {"mean": "norm.mean", "std": "norm.std"},
        }
    ]
    c = {"name": "cell", "input_size": I, **spec}
    roles: dict[str, str] = {}
    if kind in ("rnn", "lstm", "gru"):
        g = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
        for role, shape in (("W", (1, g * H, I)), ("R", (1, g * H, H)), ("B", (1, 2 * g * H))):
            tensors[f"cell.{role}"] = rnd(*shape, s=0.4)
            roles[role] = f"cell.{role}"
        tensors["cell.initial_h"] = rnd(1, H, s=0.1)
        roles["initial_h"] = "cell.initial_h"
        if kind == "lstm":
            tensors["cell.P"] = rnd(1, 3 * H, s=0.2)
            roles["P"] = "cell.P"
        width = H
    elif kind == "esn":
        n = spec["reservoir_size"]
        tensors["cell.W_in"] = rnd(n, I)
        roles["W_in"] = "cell.W_in"
        w = rnd(n, n) * (rng.random((n, n)) < density)
        w *= 0.9 / max(1e-6, float(np.max(np.abs(np.linalg.eigvals(w)))))
        w = w.astype(np.float32)
        if spec.get("sparse"):
            rows, cols = np.nonzero(w)
            tensors["cell.W_data"] = w[rows, cols].astype(np.float32)
            tensors["cell.W_indices"] = cols.astype(np.int32)
            tensors["cell.W_indptr"] = np.concatenate(
                [[0], np.cumsum(np.bincount(rows, minlength=n))]
            ).astype(np.int32)
            roles.update(
                {"W_data": "cell.W_data", "W_indices": "cell.W_indices", "W_indptr": "cell.W_indptr"}
            )
            c["nnz"] = int(len(rows))
        else:
            tensors["cell.W"] = w
            roles["W"] = "cell.W"
        tensors["cell.b"] = rnd(n, s=0.1)
        roles["b"] = "cell.b"
        width = n
    elif kind == "dense":
        tensors["cell.W"] = rnd(H, I)
        tensors["cell.b"] = rnd(H, s=0.1)
        roles.update({"W": "cell.W", "b": "cell.b"})
        width = H
    elif kind == "attention":
        # attention pools the previous layer's outputs: put a dense(I -> H) in front of it
        tensors["pre.W"] = rnd(H, I)
        layers.append(
            {
                "kind": "dense",
                "name": "pre",
                "input_size": I,
                "output_size": H,
                "activation": "tanh",
                "tensors": {"W": "pre.W"},
            }
        )
        c["input_size"] = H
        a = spec["attention_size"]
        tensors["cell.W"], tensors["cell.b"], tensors["cell.v"] = rnd(a, H), rnd(a, s=0.1), rnd(a)
        roles.update({"W": "cell.W", "b": "cell.b", "v": "cell.v"})
        width = H
    else:  # pragma: no cover - CELLS lists only the kinds above
        raise ValueError(cell)
    c["tensors"] = roles
    layers.append(c)
    tensors["head.W"], tensors["head.b"] = rnd(O, width), rnd(O, s=0.1)
    layers.append(
        {
            "kind": "dense",
            "name": "head",
            "input_size": width,
            "output_size": O,
            "activation": "linear",
            "tensors": {"W": "head.W", "b": "head.b"},
        }
    )
    if quantize == "int8":
        from edgernn.artifact import QUANTIZABLE

        for layer in layers:
            for role in QUANTIZABLE.get(layer["kind"], ()):
                name = layer["tensors"].get(role)
                if name is None:
                    continue
                w = tensors[name]
                if role == "W_data":  # CSR values: one scale per reservoir row
                    ptr = tensors[layer["tensors"]["W_indptr"]]
                    rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
                    amax = np.zeros(len(ptr) - 1, np.float32)
                    np.maximum.at(amax, rows, np.abs(w))
                    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
                    q = np.clip(np.round(w / scale[rows]), -127, 127).astype(np.int8)
                else:
                    q, scale = _q8(w)
                tensors[name] = q
                tensors[name + "_scale"] = scale
                layer["tensors"][role + "_scale"] = name + "_scale"
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn tests/arm_cases.py", "version": "0"},
        "input": {"kind": "features", "size": I},
        "output": {"size": O, "sequence": sequence, "labels": None},
        "quantization": quantize,
        "layers": layers,
    }
    return plan, tensors


def cases() -> list[tuple[str, str]]:
    """Every (cell, quantization) pair the aarch64 job and the AOT tests run."""
    out = [(c, "none") for c in CELLS]
    out += [(c, "int8") for c in ("lstm", "gru", "esn_sparse", "rnn")]
    return out


def case_id(cell: str, quantize: str) -> str:
    return cell if quantize == "none" else f"{cell}.{quantize}"


def inputs(seed: int = 1, t: int = T) -> np.ndarray:
    """A (t, I) float32 input sequence."""
    return np.random.default_rng(seed).standard_normal((t, I)).astype(np.float32)


def write_fixtures(out_dir: str) -> list[str]:
    """Write every case as ``.ernn`` + ``.npz`` (X, reference Y, host runtime Y, host machine)."""
    import platform

    import edgernn
    from edgernn import artifact

    os.makedirs(out_dir, exist_ok=True)
    names = []
    for cell, q in cases():
        cid = case_id(cell, q)
        plan, tensors = build(cell, q)
        path = os.path.join(out_dir, cid + ".ernn")
        artifact.write(path, plan, tensors)
        X = inputs()
        m = edgernn.load(path)
        y_host = m.stream().run(X)
        y_ref = reference_run(path, X)
        np.savez(
            os.path.join(out_dir, cid + ".npz"),
            X=X,
            y_ref=y_ref,
            y_host=y_host,
            machine=np.array(platform.machine()),
            backend=np.array(str(m.info.get("backend"))),
        )
        names.append(cid)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(names, f)
    return names


#: cases the aarch64 job builds a per-model AOT module for inside the emulated userland (each is a
#: compile under emulation); tests/test_aot_model.py runs the same code for the first one on the host
AOT_CASES = ("lstm", "gru.int8")


def aot_module(path: str, base: str, cpu: str = "host") -> str:
    """The per-model AOT module of the artifact at ``path``: reused from ``base/<kernels fingerprint>/``
    when one there loads for this model, else built there (``edgernn aot MODEL -o DIR``). Returns its path.

    One directory per kernel version: a stale module must never be loaded first (an extension module
    cannot be unloaded, so a rebuilt file at the same path would still run the old code)."""
    import edgernn
    from edgernn import aot, aot_model

    d = os.path.join(base, format(aot.kernels_fingerprint(), "x"))
    _, key = aot_model.generated(edgernn.load(path, backend="numpy")._packed.wf)
    for p in _module_files(d, aot_model.module_name(key)):
        try:
            aot.load_module(p, key=key)
            return p
        except edgernn.EdgeRNNError:
            continue  # built for another CPU (a cache shared between machines): rebuild
    os.makedirs(d, mode=0o700, exist_ok=True)
    return aot_model.build(path, d, cpu=cpu)


def _module_files(d: str, name: str) -> list[str]:
    import importlib.machinery

    return [
        os.path.join(d, name + s)
        for s in importlib.machinery.EXTENSION_SUFFIXES
        if os.path.isfile(os.path.join(d, name + s))
    ]


def check_aot(path: str, X: np.ndarray) -> None:
    """The model at ``path`` on ``backend="aot"`` runs its own module (not the generic interpreter) and
    matches the numpy reference (chunk) and the numba backend (per step, to rounding)."""
    from reference import assert_close

    import edgernn

    m = edgernn.load(path, backend="aot")
    assert m.info["backend"] == "aot" and m.kernel_source is not None, "not the model's own AOT module"
    assert_close(m.stream().run(X), reference_run(path, X), what=f"{path} aot")
    s, ref = m.stream(), edgernn.load(path, backend="numba").stream()
    np.testing.assert_allclose([s.step(x) for x in X], [ref.step(x) for x in X], rtol=1e-5, atol=1e-6)


def reference_run(path: str, X: np.ndarray) -> np.ndarray:
    """The numpy reference's per-step outputs (T, O) of the artifact at ``path`` for input X (T, I)."""
    from reference import reference_predict

    from edgernn import artifact

    plan, tensors = artifact.read(path)
    return np.asarray(reference_predict(plan, tensors, X), dtype=np.float64)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `reference`
    if len(sys.argv) != 3 or sys.argv[1] != "write":
        sys.exit("usage: python tests/arm_cases.py write DIR")
    done = write_fixtures(sys.argv[2])
    print(f"wrote {len(done)} cases to {sys.argv[2]}: {', '.join(done)}")
