"""``edgernn serve MODEL.ernn --broker HOST:PORT``: run a model on many devices' streams over MQTT.

Devices publish ``{"seq": n, "x": [...]}`` (or ``"X"``: several samples) on ``{prefix}/{device}/in`` and
get ``{"seq": n, "y": [...]}`` (``"Y"``) on ``{prefix}/{device}/out``; refused payloads are answered on
``{prefix}/{device}/error``. ``--shard I/N`` serves the devices with ``crc32(device) % N == I``;
``--state-dir`` makes it survive a crash without losing or doubling a sample (docs/SERVE.md).
``--ray N`` runs N shards as Ray actors (the ``ray`` extra). Needs the ``serve`` extra (paho-mqtt);
both are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import signal

HELP = "serve a .ernn model to many devices over MQTT (one batched step per tick; the serve extra)"


def _host_port(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--broker must be HOST:PORT, got {s!r}")
    return host, int(port)


def _shard(s: str) -> tuple[int, int]:
    i, sep, n = s.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 0 <= int(i) < int(n):
        raise argparse.ArgumentTypeError(f"--shard must be I/N with 0 <= I < N, got {s!r}")
    return int(i), int(n)


def _positive(kind):
    def f(s: str):
        try:
            v = kind(s)
        except ValueError:
            v = 0
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
        return v

    return f


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn serve``."""
    p.add_argument("model", help="the .ernn artifact (a streamable model)")
    p.add_argument("--broker", required=True, type=_host_port, help="the MQTT broker, HOST:PORT")
    p.add_argument("--prefix", default="edgernn", help="topic prefix (default: edgernn)")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="serve shard I of N (default 0/1)")
    p.add_argument("--state-dir", help="snapshot directory: survive restarts without losing a sample")
    p.add_argument(
        "--idle-timeout", type=_positive(float), help="seconds after which an idle device's row is freed"
    )
    p.add_argument(
        "--snapshot-every",
        type=_positive(int),
        default=10,
        help="ticks between snapshots under load (10; at most every 0.5 s)",
    )
    p.add_argument("--client-id", help="MQTT client id (default: fixed per prefix and shard)")
    p.add_argument("--backend", choices=["aot", "numba", "numpy"], help="force a backend")
    p.add_argument(
        "--ray",
        type=_positive(int),
        metavar="N",
        help="run N shards as named Ray actors, each restarted by Ray from its snapshot (the ray extra; "
        "a local Ray unless RAY_ADDRESS names a cluster)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, connect, serve until SIGTERM/SIGINT (then snapshot and leave)."""
    import numpy as np

    from edgernn.errors import require

    require("paho.mqtt.client", "serve")  # one clear line if the extra is missing
    import edgernn
    from edgernn.serve.mqtt import Server

    if args.ray:
        return _run_ray(args)
    model = edgernn.load(args.model, backend=args.backend)
    if not model.info["streamable"]:
        raise edgernn.EdgeRNNError("this model cannot stream (a reverse direction): it cannot be served")
    host, port = args.broker
    server = Server(
        model,
        host,
        port,
        prefix=args.prefix,
        shard=args.shard,
        state_dir=args.state_dir,
        idle_timeout=args.idle_timeout,
        snapshot_every=args.snapshot_every,
        client_id=args.client_id,
    )

    def _stop(signum, frame):
        server.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    i, n = server.gw.shard
    model.streams(1).step(np.zeros((1, model.input_size), np.float32))  # compile the kernel before serving
    server.log(
        f"{args.model} on {host}:{port}, topics {server.prefix}/+/in, shard {i}/{n}, "
        f"client id {server.client_id}, state {'in ' + args.state_dir if args.state_dir else 'not kept'}"
    )
    code = server.run()
    st = server.gw.stats
    server.log(
        f"stopped: {st['samples']} samples in {st['messages']} messages, {st['kernel_calls']} kernel calls, "
        f"{st['refused']} refused, {st['duplicates']} duplicates dropped, {server.snapshots} snapshots"
    )
    server.log("main loop time: " + ", ".join(f"{k} {v:.2f} s" for k, v in server.times.items()))
    return code


def _run_ray(args: argparse.Namespace) -> int:
    """``--ray N``: start N shard actors, wait for SIGTERM/SIGINT, stop them cleanly, shut Ray down."""
    import os
    import sys
    import threading

    import edgernn
    from edgernn.errors import require

    ray = require("ray", "ray")
    from edgernn.serve.onray import ray_serve

    if args.shard != (0, 1) or args.client_id:
        raise edgernn.EdgeRNNError("--ray N makes the shards itself: it takes no --shard or --client-id")
    n = args.ray
    model = edgernn.load(args.model, backend="numpy")  # check it here: one clear error, not N
    if not model.info["streamable"]:
        raise edgernn.EdgeRNNError("this model cannot stream (a reverse direction): it cannot be served")

    def log(msg: str) -> None:
        print(f"edgernn serve: {msg}", file=sys.stderr, flush=True)

    stop = threading.Event()
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", num_cpus=max(n, os.cpu_count() or 1), include_dashboard=False)
    signal.signal(signal.SIGTERM, lambda *a: stop.set())  # after ray.init, which installs its own
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        host, port = args.broker
        rs = ray_serve(
            args.model,
            host,
            port,
            n,
            prefix=args.prefix,
            state_dir=args.state_dir,
            idle_timeout=args.idle_timeout,
            snapshot_every=args.snapshot_every,
            backend=args.backend,
        )
        log(f"ready ({n} shards on Ray: actors {', '.join(rs.names)}; pids {rs.pids()})")
        while not stop.wait(0.5):
            pass
        infos = rs.stop()
        tot = {k: sum(i["stats"][k] for i in infos) for k in infos[0]["stats"]}
        log(
            f"stopped: {tot['samples']} samples in {tot['messages']} messages over {n} shards, "
            f"{tot['refused']} refused, {tot['duplicates']} duplicates dropped"
        )
    finally:
        ray.shutdown()
    return 0
