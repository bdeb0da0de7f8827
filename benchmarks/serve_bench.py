"""End-to-end throughput and latency of ``edgernn serve``, and where the time goes.

    python benchmarks/serve_bench.py [--devices 1000] [--samples 20] [--pack 10] [--json OUT]

Needs mosquitto (started here on a free loopback port with its own config) and the ``serve`` extra.
The model: a GRU 8 → 32 → dense 4, many-to-many. Measured in this one process, against baselines run
here too:

* kernel: ``Streams(D).step(X, rows)`` over all D devices per tick, vs D separate ``Stream.step`` calls
  in a Python loop (the baseline: what a naive gateway does);
* gateway core (no transport): JSON parsing (``Gateway.submit``) and the tick (batched step + answers);
* end to end: ``edgernn serve`` in its own process (with ``--state-dir``: snapshots, manual acks),
  a publisher and a collector here; samples/s from the first publish to the last answer, one sample
  per message and ``--pack`` samples per message; then latency publish → answer received, p50/p99, with
  the devices sending one sample each every ``--period`` seconds (a load below saturation).
"""

from __future__ import annotations

import argparse
import json
import os
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


def end_to_end(path: str, tmp: str, D: int, T: int, pack: int, period: float) -> dict:
    broker = S.Broker(tmp)
    srv = None
    out = {}
    try:
        srv = S.ServerProc(
            path, broker.port, tmp, "--state-dir", os.path.join(tmp, "state"), "--snapshot-every", "10"
        )
        srv.ready()
        rng = np.random.default_rng(2)
        seq0 = 0
        for k in (1, pack):
            col = Timed(broker.port)
            items = []
            n_msgs = T // k
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
            S.wait_until(lambda n=n_items, c=col: c.distinct() >= n, 600, "all answers")
            dt = time.perf_counter() - t0
            out[f"e2e_samples_per_s_pack{k}"] = D * n_msgs * k / dt
            out[f"e2e_messages_per_s_pack{k}"] = D * n_msgs / dt
            col.close()
        # latency below saturation: every device sends one sample every `period` seconds
        col = Timed(broker.port)
        c = S.client(broker.port)
        t_pub: dict[tuple[str, int], float] = {}
        rounds = max(5, int(3.0 / period))
        for r in range(rounds):
            t_round = time.perf_counter()
            for d in range(D):
                dev = f"dev{d:05d}"
                x = rng.normal(size=I).astype(np.float32)
                t_pub[(dev, seq0 + r)] = time.perf_counter()
                c.publish(f"edgernn/{dev}/in", json.dumps({"seq": seq0 + r, "x": x.tolist()}), qos=1)
            time.sleep(max(0.0, period - (time.perf_counter() - t_round)))
        S.wait_until(lambda: len(col.t_recv) >= len(t_pub), 600, "the latency run's answers")
        lat = np.array([col.t_recv[k] - t for k, t in t_pub.items()]) * 1e3
        skip = lat[D:]  # the first round warms the rows
        out["latency_ms_p50"] = float(np.percentile(skip, 50))
        out["latency_ms_p99"] = float(np.percentile(skip, 99))
        out["latency_offered_samples_per_s"] = D / period
        c.disconnect()
        c.loop_stop()
        col.close()
        srv.stop()
        out["server_log"] = srv.text().strip().splitlines()[-1]
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
        broker.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=20, help="samples per device in the throughput runs")
    ap.add_argument("--pack", type=int, default=10, help="samples per message in the packed run")
    ap.add_argument("--period", type=float, default=4.0, help="seconds between a device's samples (latency)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gru.ernn")
        _model(path)
        r = kernel_and_core(path, a.devices)
        r |= end_to_end(path, tmp, a.devices, a.samples, a.pack, a.period)
    D = a.devices
    print(f"edgernn serve, {D} devices, GRU 8->32->4, {a.samples} samples per device")
    print(f"  kernel  Streams.step(X, rows) : {r['kernel_batched_samples_per_s']:>12,.0f} samples/s")
    print(
        f"  kernel  {D} x Stream.step loop : {r['kernel_loop_samples_per_s']:>12,.0f} samples/s  "
        f"(batched is {r['kernel_batched_samples_per_s'] / r['kernel_loop_samples_per_s']:.1f}x)"
    )
    print(f"  core    JSON parse (submit)    : {r['parse_us_per_sample']:>12.2f} µs/sample")
    print(f"  core    tick (step + answers)  : {r['tick_us_per_sample']:>12.2f} µs/sample")
    for k in (1, a.pack):
        print(
            f"  e2e     {k:>2} sample(s)/message    : {r[f'e2e_samples_per_s_pack{k}']:>12,.0f} samples/s "
            f"({r[f'e2e_messages_per_s_pack{k}']:,.0f} messages/s)"
        )
    core_share = r["e2e_samples_per_s_pack1"] * (r["parse_us_per_sample"] + r["tick_us_per_sample"]) / 1e4
    print(
        f"  where the time goes (1 sample/message): core {core_share:.0f}% "
        f"of the end-to-end time, transport (MQTT, paho, echoes, snapshots) the rest"
    )
    print(
        f"  latency publish -> answer at {r['latency_offered_samples_per_s']:,.0f} samples/s offered: "
        f"p50 {r['latency_ms_p50']:.1f} ms, p99 {r['latency_ms_p99']:.1f} ms"
    )
    print(f"  server: {r['server_log']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
