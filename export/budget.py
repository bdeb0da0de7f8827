"""int8 with an accuracy budget: measure what quantizing each layer costs, keep the sensitive ones wider.

:func:`quantize_with_budget` turns a float32 plan into the smallest mixed-precision plan (every
weight-bearing layer int8, fp16 or fp32) that meets a budget, verified end to end:

1. **Data.** The calibration data when given (capped at :data:`MAX_STEPS` steps: evenly spaced whole
   sequences, labels with them); without it the example input plus a synthetic fallback:
   :data:`SYNTHETIC_SEQUENCES` Gaussian sequences with the example's per-feature mean and standard
   deviation (+0.1), or standard normal ones without an example (uniform random ids for token models).
   **Memory.** Recurrent errors compound, so the data must be at least as long as the model's memory: for
   an ESN layer with leak rate a and reservoir spectral radius ρ the state forgets at most at the rate c
   = 1 − a·(1 − ρ) per step (the spectral radius of its Jacobian bound (1 − a)·I + a·diag(tanh′)·W), so
   an error decays below 1e-3 of itself after ``t = ln(1e-3) / ln(c)`` steps (ρ ≥ 1: :data:`MAX_MEMORY`).
   When the data's sequences are shorter than that, a *memory probe* is added: the data's sequences
   joined end to end (repeated if needed) into one sequence of at least that many steps. Gated cells
   (LSTM, GRU, RNN) are measured over the data's own sequence length (the calibration sequences' length).
2. **Sensitivity.** For each weight-bearing layer alone (every other layer float32): its output error
   with the layer's matrices int8 nearest, int8 error-compensated (with calibration data) and fp16.
3. **Budget.** ``max_error``: max |y − y_fp32| / max |y_fp32| over all data and steps (the error as a
   fraction of the float32 output's largest magnitude; a streaming many-to-one model's prediction at
   every step counts, as ``step`` returns it: a VAD over a recording, a streaming classifier);
   ``max_accuracy_drop`` (percentage points) and ``max_rmse_increase`` (percent) need ``labels`` (class
   ids or regression targets of the data).
   Without any: :data:`DEFAULT_MAX_ACCURACY_DROP` pp for a classifier or
   :data:`DEFAULT_MAX_RMSE_INCREASE` % for a regressor when labels are given, else a max error of
   :data:`FP16_FACTOR` times the error of storing every matrix in fp16 (at least
   :data:`DEFAULT_MAX_ERROR`, 0.01 %): as close to float32 as fp16 storage, which users take as
   lossless, keeps it. Without labels nothing tells how accurate the model itself is, so the default
   is strict: the sine example's LSTM errs by 0.1 % of its range, and a 0.09 % output error on the
   example + synthetic data was +22 % RMSE on its test windows.
   Every given limit must hold.
4. **Choice.** Start with every layer at its better int8 rounding; while the whole model misses the
   budget, move the layer with the largest measured gain per extra byte one step up (int8 → fp16 →
   fp32) and measure the whole model again. If only float32 everywhere meets it, the result is the
   float32 plan (said so in the report), never a file worse than the budget.

The plan records each layer's precision and sensitivity in ``quantization_layers`` (see docs/ARTIFACT.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np

from ..artifact import QUANTIZABLE, plan_layers, validate_plan
from .budget_data import MAX_MEMORY, MAX_STEPS, MEMORY_DECAY, SYNTHETIC_SEQUENCES, measurement, memory_steps
from .quantize import FP16_MAX, QuantizationError, _artifact_bytes, quantize_plan

__all__ = [
    "DEFAULT_MAX_ERROR",
    "DEFAULT_MAX_ACCURACY_DROP",
    "DEFAULT_MAX_RMSE_INCREASE",
    "MAX_MEMORY",
    "MAX_STEPS",
    "MEMORY_DECAY",
    "SYNTHETIC_SEQUENCES",
    "budget_limits",
    "memory_steps",
    "quantize_with_budget",
]

#: default budget without labels: outputs within 0.01 % of the float32 output's largest magnitude ...
DEFAULT_MAX_ERROR = 1e-4
#: ... or this many times the error of fp16 everywhere, when that is larger
FP16_FACTOR = 2.0
#: default budget of a classifier with labels (percentage points of accuracy)
DEFAULT_MAX_ACCURACY_DROP = 0.5
#: default budget of a regressor with targets (percent of the float32 RMSE)
DEFAULT_MAX_RMSE_INCREASE = 2.0
#: the runtime backend of every measurement (deterministic, no compile time)
BACKEND = "numpy"
PRECISIONS = ("int8", "fp16", "fp32")


def budget_limits(
    max_error: float | None = None,
    max_accuracy_drop: float | None = None,
    max_rmse_increase: float | None = None,
    labels: np.ndarray | None = None,
    classifier: bool = False,
) -> tuple[dict[str, float], str]:
    """The budget's limits ``{"max_error"|"max_accuracy_drop"|"max_rmse_increase": limit}`` and where they
    came from (``"user"`` or ``"default"``). Limits are non-negative numbers (``inf``: no limit)."""
    given = {
        "max_error": max_error,
        "max_accuracy_drop": max_accuracy_drop,
        "max_rmse_increase": max_rmse_increase,
    }
    limits = {}
    for k, v in given.items():
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise QuantizationError(f"{k} must be a number, got {v!r}") from None
        if math.isnan(v) or v < 0:
            raise QuantizationError(f"{k} must be >= 0, got {v}")
        limits[k] = v
    if {"max_accuracy_drop", "max_rmse_increase"} & set(limits) and labels is None:
        raise QuantizationError("max_accuracy_drop / max_rmse_increase need labels or targets of the data")
    if limits:
        return limits, "user"
    if labels is None:
        return {"max_error": DEFAULT_MAX_ERROR}, "default"
    if classifier:
        return {"max_accuracy_drop": DEFAULT_MAX_ACCURACY_DROP}, "default"
    return {"max_rmse_increase": DEFAULT_MAX_RMSE_INCREASE}, "default"


def _predict(
    plan: Mapping, tensors: Mapping[str, np.ndarray], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The plan's outputs on x (B, T, I) through the runtime, float64: ``(y, y_steps)``, y (B, O)
    many-to-one or (B, T, O), and y_steps (B, T, O) every step's output. A streaming many-to-one model
    (a classifier, Silero VAD) predicts at every step what the sequence so far is, so its error is
    measured over every step, not only the last; a model that does not stream: y_steps is y."""
    from .. import runtime

    model = runtime.Model(copy.deepcopy(dict(plan)), dict(tensors), backend=BACKEND, nonfinite="propagate")
    y = np.asarray(model.predict(x), np.float64)  # chunk mode: input projections of all steps at once
    if plan["output"]["sequence"] != "many_to_one" or not model.info.get("streamable", True):
        return y, y
    return y, np.stack([np.asarray(model.stream().run(xb), np.float64) for xb in x])


def _task(yf: np.ndarray, yq: np.ndarray, labels, classifier: bool) -> dict:
    if labels is None:
        return {}
    lab = np.asarray(labels)
    if classifier:
        af, aq = float(np.mean(np.argmax(yf, -1) == lab)), float(np.mean(np.argmax(yq, -1) == lab))
        return {"accuracy_drop_pp": 100.0 * (af - aq)}
    tgt = lab.astype(np.float64).reshape(yf.shape)
    rf = float(np.sqrt(np.mean((yf - tgt) ** 2)))
    rq = float(np.sqrt(np.mean((yq - tgt) ** 2)))
    return {"rmse_increase_pct": 100.0 * (rq - rf) / rf if rf > 0 else (0.0 if rq == 0 else math.inf)}


_MEASURE = {
    "max_error": "max_error",
    "max_accuracy_drop": "accuracy_drop_pp",
    "max_rmse_increase": "rmse_increase_pct",
}


class _Evaluator:
    """Errors of candidate plans against the float32 plan on fixed data."""

    def __init__(self, plan, tensors, xs, labels, limits):
        self.xs, self.labels, self.limits = xs, labels, limits
        self.classifier = (
            plan["output"]["size"] > 1 and labels is not None and _is_class_ids(plan, labels, xs[0])
        )
        self.ref, self.ref_steps = zip(*(_predict(plan, tensors, x) for x in xs), strict=True)
        self.scale = max(float(np.max(np.abs(y))) if y.size else 0.0 for y in self.ref_steps) or 1.0
        if labels is not None:
            lab = np.asarray(labels)
            y0 = self.ref[0]
            if not (self.classifier or lab.size == y0.size):
                raise QuantizationError(
                    f"labels of shape {lab.shape} fit neither class ids {y0.shape[:-1]} "
                    f"nor targets {y0.shape}"
                )

    def __call__(self, plan, tensors) -> dict:
        ys, steps = zip(*(_predict(plan, tensors, x) for x in self.xs), strict=True)
        err = max(
            float(np.max(np.abs(y - r))) if y.size else 0.0
            for y, r in zip(steps, self.ref_steps, strict=True)
        )
        res = {"max_error": err / self.scale if math.isfinite(err) else math.inf}
        res.update(_task(self.ref[0], ys[0], self.labels, self.classifier))
        res["score"] = self.score(res)
        return res

    def score(self, m: Mapping) -> float:
        """max over the limits of value / limit (<= 1: the budget holds); inf for a non-finite value."""
        s = -math.inf
        for lim, key in _MEASURE.items():
            if lim not in self.limits:
                continue
            v, limit = m[key], self.limits[lim]
            if not math.isfinite(v):
                return math.inf
            s = max(s, v / limit if limit > 0 else (0.0 if v <= 0 else math.inf))
        return s


def _is_class_ids(plan, labels, x) -> bool:
    lab = np.asarray(labels)
    want = (x.shape[0],) if plan["output"]["sequence"] == "many_to_one" else x.shape[:2]
    return lab.shape == tuple(want) and lab.dtype.kind in "iu"


def _layers(plan: Mapping) -> list[dict]:
    """The layers of a validated plan of either format: format-1 layers, or format-2 op views (whose
    ``tensors`` object is the op's own, so changing it in place changes the plan)."""
    return [ly for _, ly in plan_layers(plan)]


def _weight_layers(plan: Mapping, tensors: Mapping[str, np.ndarray]) -> list[int]:
    return [
        i
        for i, ly in enumerate(_layers(plan))
        if any(
            r in ly["tensors"] and tensors[ly["tensors"][r]].dtype.kind == "f"
            for r in QUANTIZABLE.get(ly["kind"], ())
        )
    ]


def _assemble(plan, tensors, variants, choice: Mapping[int, str]) -> tuple[dict, dict]:
    """A mixed plan: layer i takes precision ``choice[i]`` (``int8_nearest``, ``int8_compensated``, ``fp16``,
    ``fp32``; missing: fp32). int8 layers come from the quantized ``variants``; fp16 stores the layer's
    matrices as float16 (its other tensors stay float32)."""
    out = copy.deepcopy(dict(plan))
    out.pop("quantization_rounding", None)
    res: dict[str, np.ndarray] = {}
    any8 = any16 = False
    for i, layer in enumerate(_layers(out)):
        c = choice.get(i, "fp32")
        if c.startswith("int8"):
            vplan, vt = variants[c]
            roles = dict(_layers(vplan)[i]["tensors"])
            layer["tensors"].clear()  # in place: a format-2 op shares this object with its view
            layer["tensors"].update(roles)
            for name in layer["tensors"].values():
                res[name] = vt[name]
                any8 = any8 or vt[name].dtype == np.int8
            continue
        for role, name in layer["tensors"].items():
            arr = np.asarray(tensors[name])
            if c == "fp16" and role in QUANTIZABLE.get(layer["kind"], ()) and arr.dtype.kind == "f":
                if np.any(np.abs(arr) > FP16_MAX):
                    raise QuantizationError(
                        f"tensor {name!r} has values beyond the float16 range (±{FP16_MAX})"
                    )
                res[name] = arr.astype(np.float16)
                any16 = True
            else:
                res[name] = arr if arr.dtype.kind != "f" else arr.astype(np.float32)
    out["quantization"] = "int8" if any8 else ("fp16" if any16 else "none")
    return out, res


def _layer_bytes(plan, tensors, i) -> int:
    return int(sum(np.asarray(tensors[n]).nbytes for n in _layers(plan)[i]["tensors"].values()))


def _rounding(variants, choice, layers) -> dict:
    """``quantization_rounding`` of the mixed plan: the compensated variant's record, for its int8 layers."""
    info = variants.get("int8_compensated", variants["int8_nearest"])[0].get("quantization_rounding", {})
    mats = {}
    for key, why in (info.get("matrices") or {}).items():
        name = key.rsplit(".", 1)[0]
        i = next((k for k, ly in enumerate(layers) if ly["name"] == name), None)
        c = choice.get(i, "fp32")
        if c == "int8_compensated":
            mats[key] = why
        elif c == "int8_nearest":
            mats[key] = (
                "nearest: chosen by the budget (no worse than compensated on the data)"
                if why == "gptq"
                else why
            )
    method = "gptq" if "gptq" in mats.values() else "nearest"
    return {"method": method, "calibration_vectors": info.get("calibration_vectors", 0), "matrices": mats}


def _short_metrics(m: Mapping) -> dict:
    return {k: (round(v, 6) if math.isfinite(v) else str(v)) for k, v in m.items() if k != "score"}


def quantize_with_budget(
    plan: Mapping,
    tensors: Mapping[str, np.ndarray],
    *,
    calibration: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    example: np.ndarray | None = None,
    max_error: float | None = None,
    max_accuracy_drop: float | None = None,
    max_rmse_increase: float | None = None,
    exact_int8: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[dict, dict[str, np.ndarray], dict]:
    """The smallest per-layer int8/fp16/fp32 mix of a float32 plan that meets the budget (module doc).

    ``calibration``: (T, I) or (B, T, I) representative inputs (also the measurement data); ``labels``:
    its class ids (one per sequence many-to-one, per step many-to-many) or regression targets of the
    output's shape; ``example``: inputs used (with a synthetic fallback) when there is no calibration.
    ``max_error`` is a fraction of max |y_fp32|; ``max_accuracy_drop`` in percentage points;
    ``max_rmse_increase`` in percent. Returns ``(plan, tensors, report)``: the plan's ``quantization`` is
    ``int8`` when a tensor is int8, ``fp16`` when only float16 remains, ``none`` for float32; the report
    (JSON-able) holds the data, the limits, per-layer sensitivity and choice, the greedy steps and the
    final error; ``report["met"]`` is False only when even float32 everywhere was needed.
    """
    plan = validate_plan(copy.deepcopy(dict(plan)))
    if plan["quantization"] != "none":
        raise QuantizationError(f"the plan is already quantized ({plan['quantization']})")
    if calibration is None and labels is not None:
        raise QuantizationError("labels / targets need the calibration data they belong to")
    xs, data_info, labels = measurement(plan, tensors, calibration, example, labels)
    classifier = plan["output"]["size"] > 1 and labels is not None and _is_class_ids(plan, labels, xs[0])
    limits, limits_from = budget_limits(max_error, max_accuracy_drop, max_rmse_increase, labels, classifier)
    ev = _Evaluator(plan, tensors, xs, labels, limits)
    layers = _layers(plan)
    idx = _weight_layers(plan, tensors)
    if not idx:
        raise QuantizationError("int8 requested but the plan has no matrix to quantize")
    variants = {"int8_nearest": quantize_plan(plan, tensors, "int8", exact_int8=exact_int8)}
    if calibration is not None:
        variants["int8_compensated"] = quantize_plan(
            plan, tensors, "int8", exact_int8=exact_int8, calibration=calibration
        )
    if limits_from == "default" and "max_error" in limits:  # as close to fp32 as fp16 storage keeps it
        fp16_all = ev(*_assemble(plan, tensors, variants, dict.fromkeys(idx, "fp16")))["max_error"]
        limits["max_error"] = float(f"{max(DEFAULT_MAX_ERROR, FP16_FACTOR * fp16_all):.4g}")
    # ---- per-layer sensitivity: that layer alone quantized, every other layer float32
    sens: dict[int, dict[str, dict]] = {}
    nbytes: dict[int, dict[str, int]] = {}
    for i in idx:
        sens[i] = {}
        for opt in (*variants, "fp16"):
            p, t = _assemble(plan, tensors, variants, {i: opt})
            sens[i][opt] = ev(p, t)
        nbytes[i] = {
            "int8": _layer_bytes(variants["int8_nearest"][0], variants["int8_nearest"][1], i),
            "fp16": _layer_bytes(*_assemble(plan, tensors, variants, {i: "fp16"}), i),
            "fp32": _layer_bytes(plan, tensors, i),
        }

    def rank(i: int, o: str) -> tuple:  # the budget's measure first, then the output error
        return (sens[i][o]["score"], sens[i][o]["max_error"], o != "int8_nearest")

    best8 = {i: min(variants, key=lambda o, i=i: rank(i, o)) for i in idx}
    # ---- greedy: everything at its better int8, promote by measured gain per extra byte
    choice = {i: best8[i] for i in idx}
    pure = _assemble(plan, tensors, variants, choice)
    whole = ev(*pure)
    pure_int8 = {"metrics": _short_metrics(whole), "meets_budget": whole["score"] <= 1.0}
    steps = []
    level = {i: "int8" for i in idx}
    while whole["score"] > 1.0 and any(v != "fp32" for v in level.values()):
        best, best_rate = None, -math.inf
        for i in idx:
            if level[i] == "fp32":
                continue
            now = sens[i][best8[i]] if level[i] == "int8" else sens[i]["fp16"]
            nxt = "fp16" if level[i] == "int8" else "fp32"
            after = (
                sens[i]["fp16"]["score"] if nxt == "fp16" else ev.score({k: 0.0 for k in _MEASURE.values()})
            )
            gain = now["score"] - after
            cost = max(1, nbytes[i][nxt] - nbytes[i][level[i]])
            rate = gain / cost if math.isfinite(gain) else math.inf
            if rate > best_rate:
                best, best_rate = (i, nxt), rate
        i, nxt = best
        level[i] = nxt
        choice[i] = nxt
        whole = ev(*_assemble(plan, tensors, variants, choice))
        steps.append({"layer": layers[i]["name"], "to": nxt, **_short_metrics(whole)})
    # ---- a layer promoted early may not be needed once a later one was: try each one step back down
    down = {"fp16": "int8", "fp32": "fp16"}
    for st in reversed(list(steps)):
        i = next(k for k in idx if layers[k]["name"] == st["layer"])
        if level[i] != st["to"] or whole["score"] > 1.0:
            continue
        lower = down[level[i]]
        trial = {**choice, i: best8[i] if lower == "int8" else lower}
        m = ev(*_assemble(plan, tensors, variants, trial))
        if m["score"] <= 1.0:
            choice, level[i], whole = trial, lower, m
            steps.append({"layer": layers[i]["name"], "to": lower, "back": True, **_short_metrics(m)})
    qplan, qtensors = _assemble(plan, tensors, variants, choice)
    met = whole["score"] <= 1.0 and any(v != "fp32" for v in level.values())
    if any(v == "int8" for v in level.values()):
        qplan["quantization_rounding"] = _rounding(variants, choice, layers)
    qplan["quantization_layers"] = {
        layers[i]["name"]: {
            "precision": level[i],
            "sensitivity": {o: _round(sens[i][o]["max_error"]) for o in sens[i]},
        }
        for i in idx
    }
    report = {
        "limits": limits,
        "limits_from": limits_from,
        "measure": {
            "max_error": "max |y - y_fp32| / max |y_fp32| over every sequence and step",
            "accuracy_drop_pp": "100 · (accuracy_fp32 - accuracy), on the calibration labels",
            "rmse_increase_pct": "100 · (rmse - rmse_fp32) / rmse_fp32, on the calibration targets",
        },
        "data": data_info,
        "layers": [
            {
                "name": layers[i]["name"],
                "kind": layers[i]["kind"],
                "bytes": nbytes[i],
                "sensitivity": {o: _short_metrics(sens[i][o]) for o in sens[i]},
                "best_int8": "compensated" if best8[i] == "int8_compensated" else "nearest",
                "choice": level[i],
            }
            for i in idx
        ],
        "pure_int8": pure_int8,
        "steps": steps,
        "final": _short_metrics(whole),
        "met": met,
        "outcome": _outcome(met, level, limits),
    }
    report["sizes"] = {
        "fp32_bytes": _artifact_bytes(plan, tensors),
        "int8_bytes": _artifact_bytes(*_with_records(pure, qplan, variants, best8, layers)),
        "mixed_bytes": _artifact_bytes(qplan, qtensors),
    }
    return qplan, qtensors, report


def _with_records(pure, qplan, variants, best8, layers) -> tuple[dict, dict]:
    """The pure-int8 plan with the same informational records as the mixed one (sizes compare fairly)."""
    p = copy.deepcopy(pure[0])
    p["quantization_rounding"] = _rounding(variants, best8, layers)
    p["quantization_layers"] = {
        k: dict(v, precision="int8") for k, v in copy.deepcopy(qplan["quantization_layers"]).items()
    }
    return p, pure[1]


def _round(v: float) -> float | str:
    return float(f"{v:.4g}") if math.isfinite(v) else str(v)


def _outcome(met: bool, level: Mapping[int, str], limits: Mapping) -> str:
    lim = ", ".join(f"{k} {v:g}" for k, v in limits.items())
    counts = {p: sum(v == p for v in level.values()) for p in PRECISIONS}
    if not met:
        return (
            f"budget ({lim}) not met by any quantized precision (fp16 everywhere included): the file holds "
            "the float32 weights"
        )
    mix = ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    return f"budget ({lim}) met with {mix} layer(s)"


def format_budget(rep: Mapping) -> list[str]:
    """The budget report as text lines (the CLI's printout)."""
    lim = ", ".join(f"{k} {v:g}" for k, v in rep["limits"].items())
    d = rep["data"]
    lines = [
        f"int8 budget ({rep['limits_from']}): {lim}; measured on {d['source']} data, {d['sequences']} x "
        f"{d['steps']} steps"
        + (f", memory {d['memory_steps']} steps" if d.get("memory_steps") else "")
        + (f" (+ a {d['memory_probe_steps']}-step memory probe)" if d.get("memory_probe_steps") else ""),
        f"  {'layer':<16} {'kind':<10} {'int8 near.':>10} {'int8 comp.':>10} {'fp16':>10}  choice"
        "   (max error alone, fraction of max|y_fp32|)",
    ]
    for ly in rep["layers"]:
        s = ly["sensitivity"]

        def f(key, s=s):
            v = s.get(key, {}).get("max_error")
            return f"{v:10.3g}" if isinstance(v, float) else f"{'-':>10}"

        lines.append(
            f"  {str(ly['name'])[:16]:<16} {ly['kind']:<10} {f('int8_nearest')} {f('int8_compensated')} "
            f"{f('fp16')}  {ly['choice']}"
            + (" (compensated)" if ly["choice"] == "int8" and ly["best_int8"] == "compensated" else "")
        )
    fin = rep["final"]
    extra = "".join(
        f", {k} {fin[k]:+.3g}"
        for k in ("accuracy_drop_pp", "rmse_increase_pct")
        if isinstance(fin.get(k), float)
    )
    lines.append(f"  final: max error {fin['max_error']:.3g}{extra} — {rep['outcome']}")
    sz = rep["sizes"]
    lines.append(
        f"  size: {sz['mixed_bytes']} bytes (fp32 {sz['fp32_bytes']}, pure int8 {sz['int8_bytes']}); "
        f"pure int8 would be {'within' if rep['pure_int8']['meets_budget'] else 'outside'} the budget"
    )
    for name, note in (rep.get("onnx_int8") or {}).items():
        lines.append(f"  int8 ONNX {str(name)[:16]}: {note}")
    return lines
