"""Activity recognition from a smart watch's IMU: a GRU classifier, exported, quantized and streamed.

Data: BasicMotions (UEA archive; shipped in ``examples/data/BasicMotions/`` with its licence note, else
read from the ``aeon`` package's data folder, aeon is not imported): 4 students wearing a smart watch,
3-D accelerometer + 3-D gyroscope at 10 Hz for 10 s (6 channels x 100 samples), 4 classes (Standing,
Running, Walking, Badminton), 40 train / 40 test cases.

A many-to-one GRU (``edgernn.models.SequenceModel``, per-channel normalization carried into the artifact)
is trained with ``edgernn.train.fit`` and exported with ``edgernn.export.export(..., quantize="int8")``.
Prints the test accuracy of PyTorch, ONNX Runtime (fp32 and int8) and edgernn (fp32 and int8, streamed
sample by sample); a streaming run that shows the running prediction settling as samples arrive (accuracy
after t samples, and when each case's prediction stops changing); and the step latency. Run::

    python examples/imu_activity.py [-o OUT_DIR] [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

#: the copy shipped with the project (UEA archive data, see its README.md for the licence and origin)
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "BasicMotions")


def find_data() -> str:
    """The BasicMotions folder: the copy in ``examples/data/``, else the installed ``aeon`` package's
    data folder (found without importing aeon)."""
    if os.path.isfile(os.path.join(SHIPPED, "BasicMotions_TRAIN.ts")):
        return SHIPPED
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"BasicMotions not found in {SHIPPED} nor in aeon's data folder (or pass --data DIR)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "BasicMotions")


def read_ts(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse a ``.ts`` file: returns X (cases, time, channels) float32, y (cases,) int, class names.

    Format: ``#`` comments, ``@`` header lines (``@classLabel true A B ...`` names the classes), then after
    ``@data`` one case per line: channels separated by ``:``, values by ``,``, the class label last.
    """
    classes: list[str] = []
    cases, labels = [], []
    in_data = False
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    classes = line.split()[2:]
                elif low.startswith("@data"):
                    in_data = True
                continue
            *channels, label = line.split(":")
            try:
                cases.append([[float(v) for v in ch.split(",")] for ch in channels])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: bad value ({e})") from None
            if label not in classes:
                raise ValueError(f"{path}:{lineno}: label {label!r} not among {classes}")
            labels.append(classes.index(label))
    lengths = {len(ch) for case in cases for ch in case}
    if len(lengths) != 1:
        raise ValueError(f"{path}: unequal series lengths {sorted(lengths)}")
    X = np.asarray(cases, dtype=np.float32).transpose(0, 2, 1)  # (cases, channels, time) -> time-major
    return np.ascontiguousarray(X), np.asarray(labels), classes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="imu_out", help="output directory")
    ap.add_argument("--quick", action="store_true", help="smaller GRU, fewer epochs (CI)")
    ap.add_argument("--data", default=None, help="folder with BasicMotions_TRAIN.ts / _TEST.ts")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnxruntime as ort
    import torch
    from edgernn.export import export

    import edgernn
    from edgernn import models, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = args.data or find_data()
    Xtr, ytr, classes = read_ts(os.path.join(data, "BasicMotions_TRAIN.ts"))
    Xte, yte, classes_te = read_ts(os.path.join(data, "BasicMotions_TEST.ts"))
    assert classes == classes_te, (classes, classes_te)
    mean = Xtr.reshape(-1, Xtr.shape[-1]).mean(0)
    std = Xtr.reshape(-1, Xtr.shape[-1]).std(0) + 1e-6
    hidden, epochs = (16, 25) if args.quick else (32, 80)

    model = models.SequenceModel("gru", Xtr.shape[-1], hidden, len(classes), output_activation="softmax",
                                 input_mean=mean, input_std=std, labels=classes)  # fmt: skip
    t0 = time.perf_counter()
    hist = train.fit(model, Xtr, ytr, loss="cross_entropy", lr=0.01, epochs=epochs, batch_size=8,
                     clip_grad_norm=1.0, progress=False)  # fmt: skip
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        p_torch = model(torch.from_numpy(Xte)).numpy()
    report = export(model, args.out, Xtr[:4], quantize="int8", calibration=Xtr)

    acc = {"pytorch": train.accuracy(yte, p_torch.argmax(1))}
    for tag, f in (("onnxruntime_fp32", "model.onnx"), ("onnxruntime_int8", "model.int8.onnx")):
        sess = ort.InferenceSession(os.path.join(args.out, f), providers=["CPUExecutionProvider"])
        p = sess.run(None, {sess.get_inputs()[0].name: Xte})[0]
        acc[tag] = train.accuracy(yte, p.reshape(len(Xte), -1).argmax(1))

    T = Xte.shape[1]
    running = {}
    latency = {}
    for tag, f in (("edgernn_fp32", "model.ernn"), ("edgernn_int8", "model.int8.ernn")):
        m = edgernn.load(os.path.join(args.out, f))
        stream = m.stream()
        probs = np.empty((len(Xte), T, len(classes)), np.float32)
        dts = np.empty(len(Xte) * T)
        k = 0
        for i, case in enumerate(Xte):
            stream.reset()
            for t, x in enumerate(case):  # one IMU sample (6 values) per step, as on the watch
                t0 = time.perf_counter()
                probs[i, t] = stream.step(x)
                dts[k] = time.perf_counter() - t0
                k += 1
        running[tag] = probs
        acc[tag] = train.accuracy(yte, probs[:, -1].argmax(1))
        latency[tag] = {
            "p50_us": round(float(np.percentile(dts, 50)) * 1e6, 2),
            "p99_us": round(float(np.percentile(dts, 99)) * 1e6, 2),
        }
    probs = running["edgernn_fp32"]
    pred_t = probs.argmax(2)  # (cases, T): running prediction after t + 1 samples
    acc_t = (pred_t == yte[:, None]).mean(0)
    # settle time: the first t after which the running prediction never changes again
    changed = pred_t != pred_t[:, -1:]
    settle = np.array([(np.nonzero(c)[0].max() + 2) if c.any() else 1 for c in changed])
    checkpoints = [t for t in (1, 5, 10, 20, 30, 50, 75, 100) if t <= T]
    results = {
        "mode": "quick" if args.quick else "full",
        "data": f"BasicMotions {len(Xtr)} train / {len(Xte)} test cases, {T} samples x {Xte.shape[2]} ch",
        "classes": classes,
        "hidden": hidden,
        "epochs": hist["epochs"],
        "train_seconds": round(train_s, 1),
        "test_accuracy": acc,
        "edgernn_fp32_vs_pytorch_max_abs_prob": float(np.abs(probs[:, -1] - p_torch).max()),
        "edgernn_int8_vs_pytorch_max_abs_prob": float(np.abs(running["edgernn_int8"][:, -1] - p_torch).max()),
        "streaming_accuracy_after_t_samples": {str(t): round(float(acc_t[t - 1]), 3) for t in checkpoints},
        "samples_until_prediction_settles": {
            "median": float(np.median(settle)),
            "p90": float(np.percentile(settle, 90)),
            "max": int(settle.max()),
        },
        "step_latency_python_loop": latency,
        "files_bytes": report["files"],
    }

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    ts = np.arange(1, T + 1)
    a1.plot(ts, acc_t, label="fp32")
    a1.plot(ts, (running["edgernn_int8"].argmax(2) == yte[:, None]).mean(0), "--", label="int8")
    a1.axhline(1 / len(classes), color="gray", ls=":", label="chance")
    a1.set_xlabel("samples seen (10 Hz)")
    a1.set_ylabel("test accuracy of the running prediction")
    a1.legend()
    case = int(np.argmax(settle))  # the slowest case to settle
    for c, name in enumerate(classes):
        a2.plot(ts, probs[case, :, c], label=name)
    a2.set_xlabel("samples seen (10 Hz)")
    a2.set_ylabel("probability")
    a2.set_title(f"test case {case} (true: {classes[yte[case]]}), streamed")
    a2.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.join(args.out, "imu_activity.png")
    fig.savefig(png, dpi=100)
    results["plot"] = png
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
