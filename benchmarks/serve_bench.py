"""End-to-end throughput and latency of ``edgernn serve``, and where the time goes.

    python benchmarks/serve_bench.py [--devices 1000,10000] [--samples 20] [--pack 10] [--json OUT]
                                     [--plot OUT.png]

Needs mosquitto (started here on a free loopback port with its own config) and the ``serve`` extra.
The model: a GRU 8 → 32 → dense 4, many-to-many. Measured in this one process, against baselines run
here too:

* kernel: ``Streams(D).step(X, rows)`` over all D devices per tick, vs D separate ``Stream.step`` calls
  in a Python loop (the baseline: what a naive gateway does);
* gateway core (no transport): JSON parsing (``Gateway.submit``) and the tick (batched step + answers);
* end to end: ``edgernn serve`` in its own process (with ``--state-dir``: snapshots, manual acks),
  a publisher and a collector here; samples/s from the first publish to the last answer, one sample
  per message and ``--pack`` samples per message; then latency publish → answer received, p50/p99, one
  sample per message, each device at its own phase, offered at ``--load`` (0.5) x the measured capacity;
* where the time goes: the kernel, the rest of the tick and the parsing per sample from the core runs, the
  remainder of the end-to-end time per sample is transport (MQTT, paho, echoes, acks) and snapshots.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import builders as B  # noqa: E402
import serve_common as S  # noqa: E402

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402
from edgernn.serve import Gateway  # noqa: E402

I = 8


def _model(path: str) -> None:
    rng = np.random.default_rng(0)
    plan, tensors = B.model([B.recurrent(rng, "gru", "g0", I, 32), B.dense(rng, "d0", 32, 4)], I)
    artifact.write(path, plan, tensors)


def _per_s(n: int, fn, min_s: float = 0.5) -> float:
    fn()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        reps += 1
    return n * reps / (time.perf_counter() - t0)


def kernel_and_core(path: str, D: int) -> dict:
    m = edgernn.load(path)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(D, I)).astype(np.float32)
    b = m.streams(D)
    rows = np.arange(D)
    batched = _per_s(D, lambda: b.step(X, rows=rows))
    singles = [m.stream() for _ in range(D)]

    def loop():
        for s, x in zip(singles, X, strict=True):
            s.step(x)

    looped = _per_s(D, loop)
    gw = Gateway(m)
    names = [f"dev{d:05d}" for d in range(D)]
    seq = [0]

    def payloads():
        seq[0] += 1
        return [json.dumps({"seq": seq[0], "x": x.tolist()}) for x in X]

    t_parse = t_tick = 0.0
    n = 0
    for _ in range(20):
        ps = payloads()
        t0 = time.perf_counter()
        for d, p in zip(names, ps, strict=True):
            gw.submit(d, p, 0.0)
        t1 = time.perf_counter()
        gw.tick(0.0)
        t2 = time.perf_counter()
        if seq[0] > 2:  # the first ticks allocate rows
            t_parse += t1 - t0
            t_tick += t2 - t1
            n += D
    return {
        "kernel_batched_samples_per_s": batched,
        "kernel_loop_samples_per_s": looped,
        "parse_us_per_sample": 1e6 * t_parse / n,
        "tick_us_per_sample": 1e6 * t_tick / n,
    }


class Timed(S.Collector):
    """A collector that stamps each answer's arrival."""

    def __init__(self, port):
        self.t_recv: dict[tuple[str, int], float] = {}
        super().__init__(port)

    def _on(self, c, u, m):
        if m.topic.endswith("/out"):
            self.t_recv[(m.topic.split("/")[-2], json.loads(m.payload)["seq"])] = time.perf_counter()
        super()._on(c, u, m)


def end_to_end(path: str, tmp: str, D: int, T: int, pack: int, load: float, rounds: int) -> dict:
    broker = S.Broker(tmp)
    srv = None
    out = {}
    try:
        srv = S.ServerProc(
            path, broker.port, tmp, "--state-dir", os.path.join(tmp, f"state{D}"), "--snapshot-every", "10"
        )
        srv.ready()
        rng = np.random.default_rng(2)
        seq0 = 0
        for k in (1, pack):
            col = Timed(broker.port)
            items = []
            n_msgs = max(1, T // k)
            for j in range(n_msgs):
                for d in range(D):
                    X = rng.normal(size=(k, I)).astype(np.float32)
                    body = (
                        {"seq": seq0 + j, "x": X[0].tolist()}
                        if k == 1
                        else {"seq": seq0 + j, "X": X.tolist()}
                    )
                    items.append((f"dev{d:05d}", json.dumps(body)))
            seq0 += n_msgs
            t0 = time.perf_counter()
            S.publish_all(broker.port, items)
            n_items = len(items)
            S.wait_until(lambda n=n_items, c=col: c.distinct() >= n, 1800, "all answers")
            dt = time.perf_counter() - t0
            out[f"e2e_samples_per_s_pack{k}"] = D * n_msgs * k / dt
            out[f"e2e_messages_per_s_pack{k}"] = D * n_msgs / dt
            col.close()
        # latency below saturation: one sample per message, each device at its own phase of the period,
        # offered at `load` x the throughput just measured
        rate = load * out["e2e_messages_per_s_pack1"]
        period = D / rate
        col = Timed(broker.port)
        c = S.client(broker.port)
        t_pub: dict[tuple[str, int], float] = {}
        t_start = time.perf_counter()
        for r in range(rounds):
            for d in range(D):
                due = t_start + (r * D + d) / rate
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                dev = f"dev{d:05d}"
                x = rng.normal(size=I).astype(np.float32)
                t_pub[(dev, seq0 + r)] = time.perf_counter()
                c.publish(f"edgernn/{dev}/in", json.dumps({"seq": seq0 + r, "x": x.tolist()}), qos=1)
        S.wait_until(lambda: len(col.t_recv) >= len(t_pub), 1800, "the latency run's answers")
        lat = np.array([col.t_recv[k] - t for k, t in t_pub.items()]) * 1e3
        out["latency_ms"] = lat[D:].tolist()  # the first round warms the rows
        out["latency_ms_p50"] = float(np.percentile(lat[D:], 50))
        out["latency_ms_p99"] = float(np.percentile(lat[D:], 99))
        out["latency_offered_samples_per_s"] = rate
        out["latency_period_s"] = period
        c.disconnect()
        c.loop_stop()
        col.close()
        srv.stop()
        lines = srv.text().splitlines()
        out["server_log"] = [ln for ln in lines if "stopped:" in ln][-1]
        loop = [ln for ln in lines if "main loop time:" in ln][-1].split("main loop time:")[1]
        pairs = (p.strip().split(" ", 1) for p in loop.split(","))
        out["server_loop_s"] = {k: float(v.split()[0]) for k, v in pairs}
        m = re.search(r"in (\d+) messages", out["server_log"])
        out["server_messages"] = int(m.group(1))
        out["server_samples"] = int(re.search(r"stopped: (\d+) samples", out["server_log"]).group(1))
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
        broker.close()
    return out


def breakdown(r: dict) -> dict:
    """Where one message's time goes in the server, µs (over all its runs): its main loop taking messages
    in (JSON parse, echoes), ticking (the kernel, answer JSON), publishing, and snapshots + acks; the
    kernel alone from the core run. ``total``: the end-to-end time per message at 1 sample per message
    (1 / throughput); what the main loop does not account for is paho's network thread (reading and
    writing the packets), mosquitto and the benchmark's own publisher and collector on the same cores."""
    n = r["server_messages"]
    loop = {k: 1e6 * v / n for k, v in r["server_loop_s"].items()}
    kernel = 1e6 / r["kernel_batched_samples_per_s"] * r["server_samples"] / n
    return {
        "kernel": kernel,
        "tick": max(0.0, loop["tick"] - kernel),
        "intake": loop["intake"],
        "publish": loop["publish"],
        "snapshot": loop["snapshot"],
        "total": 1e6 / r["e2e_messages_per_s_pack1"],
    }


def _part(b: dict, part: str) -> float:
    if part == "other":
        return max(0.0, b["total"] - sum(v for k, v in b.items() if k != "total"))
    return b[part]


def plot(results: dict, path: str) -> None:
    """Two panels: the per-sample time breakdown per device count, and the latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    Ds = sorted(results, key=int)
    parts = ["kernel", "tick", "intake", "publish", "snapshot", "other"]
    labels = {
        "kernel": "kernel (batched step)",
        "tick": "rest of the tick (answer JSON)",
        "intake": "taking messages in (JSON parse)",
        "publish": "publishing answers (paho)",
        "snapshot": "snapshots + acks",
        "other": "rest: paho network thread, broker, clients",
    }
    x = np.arange(len(Ds))
    bottom = np.zeros(len(Ds))
    for part in parts:
        v = np.array([_part(results[D]["breakdown"], part) for D in Ds])
        a.bar(x, v, 0.5, bottom=bottom, label=labels[part])
        bottom += v
    a.set_xticks(x, [f"{int(D):,} devices" for D in Ds])
    a.set_ylabel("µs per message (1 sample per message)")
    a.set_title("Where the time goes, end to end")
    a.set_ylim(0, 1.7 * bottom.max())
    a.legend(fontsize=7, loc="upper center", ncol=2)
    for D in Ds:
        lat = np.sort(np.asarray(results[D]["latency_ms"]))
        b.plot(lat, np.linspace(0, 1, len(lat)), label=f"{int(D):,} devices")
    b.set_xscale("log")
    b.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    b.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    b.set_xlabel("publish → answer received (ms)")
    b.set_ylabel("fraction of samples")
    b.set_title("Latency below saturation")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1000,10000", help="device counts, comma-separated")
    ap.add_argument("--samples", type=int, default=20, help="samples per device in the throughput runs")
    ap.add_argument(
        "--samples-10k", type=int, default=4, help="samples per device when there are >= 10,000 devices"
    )
    ap.add_argument("--pack", type=int, default=10, help="samples per message in the packed run")
    ap.add_argument("--load", type=float, default=0.5, help="latency run: offered load / measured capacity")
    ap.add_argument("--rounds", type=int, default=3, help="latency run: samples per device")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--plot", help="write a plot (PNG) here")
    ap.add_argument("--replot", metavar="JSON", help="only plot the figures of an earlier --json run")
    a = ap.parse_args()
    if a.replot:
        with open(a.replot) as f:
            plot(json.load(f), a.plot or "serve_bench.png")
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gru.ernn")
        _model(path)
        for D in (int(v) for v in a.devices.split(",")):
            T = a.samples if D < 10000 else a.samples_10k
            pack = min(a.pack, T)
            r = kernel_and_core(path, D)
            r |= end_to_end(path, tmp, D, T, pack, a.load, a.rounds)
            r["breakdown"] = breakdown(r)
            r["samples"], r["pack"] = T, pack
            results[str(D)] = r
            _report(D, r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    if a.plot:
        plot(results, a.plot)
    return 0


def _report(D: int, r: dict) -> None:
    print(f"edgernn serve, {D:,} devices, GRU 8->32->4, {r['samples']} samples per device")
    kb, kl = r["kernel_batched_samples_per_s"], r["kernel_loop_samples_per_s"]
    print(f"  kernel  Streams.step(X, rows) : {kb:>12,.0f} samples/s")
    print(f"  kernel  {D} x Stream.step loop : {kl:>12,.0f} samples/s  (batched is {kb / kl:.1f}x)")
    print(f"  core    JSON parse (submit)    : {r['parse_us_per_sample']:>12.2f} µs/sample")
    print(f"  core    tick (step + answers)  : {r['tick_us_per_sample']:>12.2f} µs/sample")
    for k in (1, r["pack"]):
        print(
            f"  e2e     {k:>2} sample(s)/message    : {r[f'e2e_samples_per_s_pack{k}']:>12,.0f} samples/s "
            f"({r[f'e2e_messages_per_s_pack{k}']:,.0f} messages/s)"
        )
    b = r["breakdown"]
    parts = ("kernel", "tick", "intake", "publish", "snapshot", "other")
    print(
        f"  where a message's {b['total']:.0f} µs go (1 sample/message, the server's main loop): "
        + ", ".join(f"{k} {_part(b, k):.0f} µs ({100 * _part(b, k) / b['total']:.0f}%)" for k in parts)
    )
    print(
        f"  latency publish -> answer at {r['latency_offered_samples_per_s']:,.0f} samples/s offered "
        f"(each device every {r['latency_period_s']:.1f} s): "
        f"p50 {r['latency_ms_p50']:.1f} ms, p99 {r['latency_ms_p99']:.1f} ms"
    )
    print(f"  server: {r['server_log']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
