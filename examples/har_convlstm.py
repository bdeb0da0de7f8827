"""Activity recognition with a DeepConvLSTM on BasicMotions: trained, exported (ONNX, int8, .ernn), streamed.

A plain PyTorch module, the way a user writes it: two *causal* ``Conv1d → BatchNorm1d → ReLU`` layers
over time (``F.pad`` of ``(K-1)·d`` zeros on the left, ``padding=0``: output ``t`` reads samples
``t-4..t`` only), an LSTM, a linear head on the last step. ``--builtin`` uses the same architecture from
the model zoo instead (``edgernn.models.deepconvlstm``). It is trained for a few seconds on CPU with
``edgernn.train.fit``, exported with ``edgernn.export.export(..., quantize="int8")`` — the same as::

    edgernn export --factory examples/har_convlstm.py:build --weights w.safetensors -o out/ --quantize int8

— whose parity proof must pass, then the test set is streamed **one IMU sample at a time** through
``edgernn.load("model.ernn").stream().step(x)``. Prints (and writes ``results.json``): test accuracy of
PyTorch, ONNX Runtime (fp32, int8) and the edgernn stream (fp32, int8), the max abs difference of the
streamed probabilities from PyTorch and ONNX Runtime, and the per-step latency of ``stream.step``.

A centred ``Conv1d(padding=2)`` would be refused by the export: its output ``t`` needs two future samples.
During the first ``(K-1)·d`` samples of a stream the convolution sees zeros before the start, exactly as
PyTorch does on the zero-padded start of a sequence. Data: see ``examples/imu_activity.py``. Run::

    python examples/har_convlstm.py [-o OUT_DIR] [--quick] [--builtin] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imu_activity import find_data, read_ts  # noqa: E402  (the BasicMotions reader of the GRU example)

KERNEL = 5


def build(channels: int = 6, classes: int = 4, conv: int = 16, hidden: int = 32):
    """The user's DeepConvLSTM: (batch, time, channels) -> (batch, classes) logits."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DeepConvLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(channels, conv, KERNEL)
            self.bn1 = nn.BatchNorm1d(conv)
            self.conv2 = nn.Conv1d(conv, conv, KERNEL)
            self.bn2 = nn.BatchNorm1d(conv)
            self.lstm = nn.LSTM(conv, hidden, batch_first=True)
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear(hidden, classes)

        def forward(self, x):  # x (batch, time, channels)
            z = x.transpose(1, 2)  # (batch, channels, time)
            z = torch.relu(self.bn1(self.conv1(F.pad(z, (KERNEL - 1, 0)))))  # causal: pad the past only
            z = torch.relu(self.bn2(self.conv2(F.pad(z, (KERNEL - 1, 0)))))
            out, _ = self.lstm(z.transpose(1, 2))
            return self.head(self.drop(out[:, -1]))

    return DeepConvLSTM()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="har_out", help="output directory")
    ap.add_argument("--quick", action="store_true", help="fewer epochs (CI)")
    ap.add_argument("--builtin", action="store_true", help="edgernn.models.deepconvlstm instead")
    ap.add_argument("--data", default=None, help="folder with BasicMotions_TRAIN.ts / _TEST.ts")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch
    from edgernn.export import export

    import edgernn
    from edgernn import models, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = args.data or find_data()
    Xtr, ytr, classes = read_ts(os.path.join(data, "BasicMotions_TRAIN.ts"))
    Xte, yte, _ = read_ts(os.path.join(data, "BasicMotions_TEST.ts"))
    mean = Xtr.reshape(-1, Xtr.shape[-1]).mean(0)
    std = Xtr.reshape(-1, Xtr.shape[-1]).std(0) + 1e-6
    if args.builtin:  # the normalization is part of the model (and of the artifact)
        model = models.deepconvlstm(6, len(classes), (16, 16), KERNEL, 32, input_mean=mean, input_std=std,
                                    labels=classes)  # fmt: skip
        xtr, xte = Xtr, Xte
    else:  # the user's module takes normalized samples
        model = build(Xtr.shape[-1], len(classes))
        xtr, xte = (Xtr - mean) / std, (Xte - mean) / std
    epochs = 15 if args.quick else 40
    t0 = time.perf_counter()
    hist = train.fit(model, xtr, ytr, loss="cross_entropy", lr=0.01, epochs=epochs, batch_size=8,
                     clip_grad_norm=1.0, progress=False)  # fmt: skip
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        p_torch = torch.softmax(model.logits(torch.from_numpy(xte)) if args.builtin else
                                model(torch.from_numpy(xte)), -1).numpy()  # fmt: skip
    t0 = time.perf_counter()
    report = export(model, args.out, xtr[:4], quantize="int8", calibration=xtr)
    export_s = time.perf_counter() - t0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    acc = {"pytorch": train.accuracy(yte, p_torch.argmax(1))}
    p_ort = {}
    for tag, f in (("onnxruntime_fp32", "model.onnx"), ("onnxruntime_int8", "model.int8.onnx")):
        sess = ort.InferenceSession(os.path.join(args.out, f), providers=["CPUExecutionProvider"])
        p_ort[tag] = softmax(sess.run(None, {sess.get_inputs()[0].name: xte})[0])
        acc[tag] = train.accuracy(yte, p_ort[tag].argmax(1))
    latency, final = {}, {}
    for tag, f in (("edgernn_stream_fp32", "model.ernn"), ("edgernn_stream_int8", "model.int8.ernn")):
        stream = edgernn.load(os.path.join(args.out, f)).stream()
        dts = []
        last = np.empty((len(xte), len(classes)), np.float32)
        for i, case in enumerate(xte.astype(np.float32)):
            stream.reset()
            for x in case:  # one IMU sample (6 values) per step, as on the watch
                t0 = time.perf_counter()
                y = stream.step(x)
                dts.append(time.perf_counter() - t0)
            last[i] = y
        final[tag] = softmax(last)
        acc[tag] = train.accuracy(yte, last.argmax(1))
        dts = np.asarray(dts[len(case) :])  # the first case warms up
        latency[tag] = {
            q: round(float(np.percentile(dts, p)) * 1e6, 2) for q, p in (("p50_us", 50), ("p99_us", 99))
        }
    # ONNX Runtime on model.step.onnx, state fed back, one thread: the same per-sample loop, 4 cases
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        os.path.join(args.out, "model.step.onnx"), so, providers=["CPUExecutionProvider"]
    )
    dts = []
    for case in xte[:4].astype(np.float32):
        st = {i.name: np.zeros((1, i.shape[1]), np.float32) for i in sess.get_inputs() if i.name != "x"}
        for x in case:
            t0 = time.perf_counter()
            out = sess.run(None, {"x": x[None], **st})
            dts.append(time.perf_counter() - t0)
            st = dict(zip(st, out[1:], strict=True))
    latency["onnxruntime_step_fp32"] = {"p50_us": round(float(np.median(dts[100:])) * 1e6, 2)}
    fp32 = final["edgernn_stream_fp32"]
    user = "user nn.Module (causal Conv1d+BN+ReLU x2, LSTM)"
    results = {
        "mode": "quick" if args.quick else "full",
        "model": "edgernn.models.deepconvlstm" if args.builtin else user,
        "data": f"BasicMotions {len(Xtr)} train / {len(Xte)} test, {Xte.shape[1]} x {Xte.shape[2]} ch",
        "classes": classes,
        "epochs": hist["epochs"],
        "train_seconds": round(train_s, 1),
        "export_seconds": round(export_s, 1),
        "parity_ok": report["ok"],
        "plan_layers": [ly["kind"] for ly in report["model"]["layers"]],
        "test_accuracy": acc,
        "stream_fp32_vs_pytorch_max_abs_prob": float(np.abs(fp32 - p_torch).max()),
        "stream_fp32_vs_onnxruntime_max_abs_prob": float(np.abs(fp32 - p_ort["onnxruntime_fp32"]).max()),
        "stream_int8_vs_pytorch_max_abs_prob": float(np.abs(final["edgernn_stream_int8"] - p_torch).max()),
        "stream_step_latency_python_loop": latency,
        "files_bytes": report["files"],
    }  # fmt: skip
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
