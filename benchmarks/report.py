"""Run the benchmark suite and print a Markdown table of edgernn vs ONNX Runtime vs PyTorch (us per step).

    python benchmarks/report.py                   # run pytest benchmarks/, print the tables
    python benchmarks/report.py --write-readme    # ... and put them in README.md between the perf markers
    python benchmarks/report.py --from-json F     # tables from an earlier ``--benchmark-json`` file

Figures are the median round of each benchmark divided by the steps in a round (1,000 steps for step/run,
one step of 1,024 streams for streams). The spread column is the interquartile range of the rounds over
their median: a large one means a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
BACKENDS = ("edgernn", "ort", "torch", "cpp")


def run_suite(json_path: str, extra: list[str]) -> int:
    """Run ``pytest benchmarks/`` writing pytest-benchmark's JSON to ``json_path``; returns pytest's code."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        HERE,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
    ]
    return subprocess.call(cmd + extra, cwd=ROOT)


def collect(data: dict) -> dict:
    """(mode, model, quant, backend) -> {us, spread} from a pytest-benchmark JSON document."""
    out = {}
    for b in data["benchmarks"]:
        info, st = b["extra_info"], b["stats"]
        steps = info["steps"]
        key = (info["mode"], info["model"], info["quant"], info["backend"])
        out[key] = {
            "us": st["median"] / steps * 1e6,
            "min_us": st["min"] / steps * 1e6,
            "spread": (st["q3"] - st["q1"]) / st["median"] if st["median"] else 0.0,
            "target": info.get("target_us"),
        }
    return out


def _f(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:,.0f}"


def _ratio(a, b) -> str:
    return "–" if a is None or b is None else f"{a / b:.1f}×"


def tables(res: dict, machine: dict) -> str:
    """The Markdown report: machine, per-step table with targets, chunk table, streams table."""
    from benchlib import CPP_OF, FILED_CPP_US, MODELS, QUANT

    def us(mode, model, q, backend):
        r = res.get((mode, model, q, backend))
        return r["us"] if r else None

    v = machine["versions"]
    load = machine.get("load_average_during_run") or (machine["load_average"] or [None])[0]
    lines = [
        f"Measured on {machine['cpu']} ({machine['arch']}, {machine['usable_cores']} usable of "
        f"{machine['cores']} cores, 1-minute load average {load} while it ran), {machine['os']}; Python "
        f"{machine['python']}, numpy {v['numpy']}, numba {v['numba']}, onnxruntime {v['onnxruntime']}, "
        f"torch {v['torch']}. One thread everywhere. Median of the rounds; spread = IQR / median of "
        "edgernn's rounds. Produced by `python benchmarks/report.py`.",
        "",
        "**`Stream.step`, one stream** (µs per step; ORT: step graph with IOBinding and ping-pong state "
        "buffers, no RunOptions; torch: `torch.lstm_cell`/`gru_cell` + `F.linear` per step, "
        "`inference_mode`; both on the same — for int8, dequantized — weights; ORT own int8: ORT's "
        "`quantize_dynamic` of the step graph, int8 weights and activations; C++ loop: the plain loops of "
        "`edgernn/bench/floor.cpp`, fp32, g++ -O3 -march=native -ffast-math, one call per 1,000 steps). "
        "target: issue 14's goal, set on a machine where the C++ loop took "
        + ", ".join(f"{FILED_CPP_US[m]} µs ({m})" for m in MODELS if m not in CPP_OF)
        + "; target here: that goal times (C++ loop here / C++ loop then), the same ratio to the "
        "hardware's own loop; int8 also has to be 2× faster than float32 (met: both):",
        "",
        "| model | weights | edgernn | spread | C++ loop | ORT | ORT own int8 | torch | edgernn / C++ "
        "| ORT / edgernn | torch / edgernn | target | target here | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for m in MODELS:
        for q in QUANT:
            e = res.get(("step", m, q, "edgernn"))
            if e is None:
                continue
            o, t, oq = us("step", m, q, "ort"), us("step", m, q, "torch"), us("step", m, q, "ort-int8")
            cpp = us("step", m, "fp32", "cpp")
            tgt = e.get("target")
            ref = us("step", CPP_OF.get(m, m), "fp32", "cpp")
            here = None if tgt is None or ref is None else tgt * ref / FILED_CPP_US[m]
            ok = here is not None and e["us"] <= here
            if q == "int8" and ok:
                f32 = us("step", m, "fp32", "edgernn")
                ok = f32 is not None and e["us"] * 2 <= f32
            met = "" if here is None else ("yes" if ok else "**no**")
            lines.append(
                f"| {m} + dense | {q} | {_f(e['us'])} | {e['spread'] * 100:.0f}% | {_f(cpp)} | {_f(o)} "
                f"| {_f(oq)} | {_f(t)} | {_ratio(e['us'], cpp)} | "
                f"{_ratio(o, e['us'])} | {_ratio(t, e['us'])} | {_f(tgt) if tgt else ''} "
                f"| {_f(here) if here else ''} | {met} |"
            )
    lines += [
        "",
        "**`Stream.run(X)` over 1,000 steps** (µs per step) vs torch's fused `nn.LSTM`/`nn.GRU` over the "
        "same sequence (torch ESN: input projections in one matmul, then the recurrence per step) and ORT's "
        "sequence graph (ONNX LSTM/GRU over all steps; none for ESN) and the plain C++ step loop (fp32):",
        "",
        "| model | weights | edgernn run | C++ loop | torch fused | ORT sequence graph | edgernn / C++ "
        "| torch / edgernn | ORT / edgernn | run ≤ torch fused |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for m in MODELS:
        for q in QUANT:
            e, t, o = us("run", m, q, "edgernn"), us("run", m, q, "torch"), us("run", m, q, "ort")
            if e is None:
                continue
            ok = "" if t is None else ("yes" if e <= t else "**no**")
            cpp = us("step", m, "fp32", "cpp")
            lines.append(
                f"| {m} + dense | {q} | {_f(e)} | {_f(cpp)} | {_f(t)} | {_f(o)} | {_ratio(e, cpp)} "
                f"| {_ratio(t, e)} | {_ratio(o, e)} | {ok} |"
            )
    lines += [
        "",
        "**1,024 streams** (µs per stream-step): `streams(1024).step` (the generated `step_batch`: "
        "blocks of 16 streams, each product a GEMM of register-blocked tiles, kernels/lanes.py and "
        "kernels/bgemm.py) vs 1,024 separate "
        "`Stream.step` calls vs torch's batched cell vs ORT's step graph with batch 1,024:",
        "",
        "| model | weights | streams(1024) | separate | torch batched | ORT batched "
        "| separate / streams (goal ≥ 10×) | torch / streams (goal ≥ 1×) | ORT / streams (goal ≥ 1×) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in MODELS:
        for q in QUANT:
            mode = "streams1024"
            e = us(mode, m, q, "edgernn")
            if e is None:
                continue
            sep, t, o = us(mode, m, q, "edgernn-separate"), us(mode, m, q, "torch"), us(mode, m, q, "ort")
            lines.append(
                f"| {m} + dense | {q} | {_f(e)} | {_f(sep)} | {_f(t)} | {_f(o)} "
                f"| {_ratio(sep, e)} | {_ratio(t, e)} | {_ratio(o, e)} |"
            )
    ns = sorted({int(k[0][7:]) for k in res if k[0].startswith("streams") and k[0][7:].isdigit()})
    if len(ns) > 1:
        lines += [
            "",
            "**n streams** (µs per stream-step at each n; `benchmarks/test_bench_streams.py`, "
            "`benchmarks/streams_sweep.py` times them interleaved): `streams(n).step` (float32 products as "
            "register-blocked GEMM tiles, kernels/bgemm.py) vs torch's batched cell vs ORT's batched step "
            "graph:",
            "",
            "| model | weights | n | streams(n) | torch batched | ORT batched | torch / streams (goal ≥ 1×) "
            "| ORT / streams (goal ≥ 1×) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in MODELS:
            for q in QUANT:
                for n in ns:
                    mode = f"streams{n}"
                    e = us(mode, m, q, "edgernn")
                    if e is None:
                        continue
                    t, o = us(mode, m, q, "torch"), us(mode, m, q, "ort")
                    lines.append(
                        f"| {m} + dense | {q} | {n} | {_f(e)} | {_f(t)} | {_f(o)} | {_ratio(t, e)} "
                        f"| {_ratio(o, e)} |"
                    )
    return "\n".join(lines)


def write_readme(md: str, readme: str) -> None:
    """Replace the text between the perf markers of ``readme`` with ``md``."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise SystemExit(f"{readme} has no {START} ... {END} section; add the markers first")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(f"{head}{START}\n{md}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--write-readme", action="store_true", help="write the tables into README.md's perf section"
    )
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    ap.add_argument("--from-json", default=None, help="use an existing pytest-benchmark JSON file")
    ap.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    ap.add_argument("-o", "--output", default=None, help="also write the Markdown to this file")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k lstm)")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    from edgernn.bench import machine

    if args.from_json:
        path = args.from_json
    else:
        path = args.json or os.path.join(tempfile.mkdtemp(prefix="edgernn-bench-"), "bench.json")
        before = machine()
        code = run_suite(path, args.pytest_args)
        after = machine()
        # the load while the suite ran: the worse of the 1-minute averages before and after it
        loads = [m["load_average"][0] for m in (before, after) if m["load_average"]]
        after["load_average_during_run"] = max(loads) if loads else None
        with open(path + ".machine.json", "w", encoding="utf-8") as f:
            json.dump(after, f, indent=2)
        if code not in (0, 1) or not os.path.exists(path):
            print(f"pytest failed (exit {code})", file=sys.stderr)
            return 1
        if code == 1:
            print("warning: some benchmarks failed (see above); reporting the others", file=sys.stderr)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    mach = machine()
    if os.path.exists(path + ".machine.json"):  # recorded when the suite ran
        with open(path + ".machine.json", encoding="utf-8") as f:
            mach = json.load(f)
    md = tables(collect(data), mach)
    print(md)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    if args.write_readme:
        write_readme(md, args.readme)
        print(f"\nwritten into {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
