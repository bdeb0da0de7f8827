"""``edgernn serve MODEL.ernn --broker HOST:PORT``: run a model on many devices' streams over MQTT.

Devices publish ``{"seq": n, "x": [...]}`` (or ``"X"``: several samples) on ``{prefix}/{device}/in`` and
get ``{"seq": n, "y": [...]}`` (``"Y"``) on ``{prefix}/{device}/out``; refused payloads are answered on
``{prefix}/{device}/error``. ``--shard I/N`` serves the devices with ``crc32(device) % N == I``;
``--state-dir`` makes it survive a crash without losing or doubling a sample (docs/SERVE.md).
Needs the ``serve`` extra (paho-mqtt), imported only when the command runs.
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
        "--snapshot-every", type=_positive(int), default=10, help="ticks between snapshots under load (10)"
    )
    p.add_argument("--client-id", help="MQTT client id (default: fixed per prefix and shard)")
    p.add_argument("--backend", choices=["aot", "numba", "numpy"], help="force a backend")


def run(args: argparse.Namespace) -> int:
    """Load the model, connect, serve until SIGTERM/SIGINT (then snapshot and leave)."""
    import numpy as np

    from edgernn.errors import require

    require("paho.mqtt.client", "serve")  # one clear line if the extra is missing
    import edgernn
    from edgernn.serve.mqtt import Server

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
    return code
