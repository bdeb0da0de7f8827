"""Real parts for the serve tests: a mosquitto broker on a free loopback port, a QoS 1 simulator of many
devices, a collector of the answers, and the server as a separate process (killable by PID)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict, deque

import numpy as np
import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str, step: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Broker:
    """mosquitto on 127.0.0.1:port with its own minimal config (no persistence, queues unbounded)."""

    def __init__(self, tmp):
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
        self.port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
                "max_queued_messages 0\nmax_inflight_messages 0\n"
            )
        self.log = open(os.path.join(tmp, "mosquitto.log"), "w")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=self.log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited at start")
            with socket.socket() as s:
                return s.connect_ex((HOST, self.port)) == 0

        wait_until(up, 10, "mosquitto to listen")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class Relay:
    """A TCP relay 127.0.0.1:port → the broker: ``cut()`` drops every connection through it with a reset
    (bytes in flight are lost both ways) and refuses new ones for ``down_s``, as a network blip would."""

    def __init__(self, upstream_port: int):
        self.up = upstream_port
        self.srv = socket.socket()
        self.srv.bind((HOST, 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.down_until = 0.0
        self.accepted = 0
        self.gen = 0  # connections of an older generation are cut
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                a.close()
                continue
            b = socket.create_connection((HOST, self.up))
            self.accepted += 1
            gen = self.gen
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y, gen), daemon=True).start()

    def _pump(self, x, y, gen):
        try:
            while self.gen == gen:
                r, _, _ = select.select([x], [], [], 0.05)
                if not r:
                    continue
                data = x.recv(65536)
                if not data:
                    break
                y.sendall(data)
        except (OSError, ValueError):  # the other pump closed it
            pass
        for s in (x, y):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # linger 0: a reset, what is unsent or unread is dropped
            except OSError:
                pass

    def cut(self, down_s: float = 0.5):
        self.down_until = time.monotonic() + down_s
        self.gen += 1

    def close(self):
        self._closed = True
        self.cut(0)
        self.srv.close()


def client(port: int, cid: str | None = None):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=cid or f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(HOST, port)
    c.loop_start()
    return c


class Collector:
    """Subscribes to every device's /out and /error; ``answers[device][seq]`` lists each payload seen."""

    def __init__(self, port: int, prefix: str = "edgernn"):
        self.answers: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        self.errors: list[tuple[str, dict]] = []
        self.n = 0
        self._lock = threading.Lock()
        self._flushed: set[bytes] = set()
        self.prefix = prefix
        self.c = client(port)
        self.c.on_message = self._on
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe([(f"{prefix}/+/out", 1), (f"{prefix}/+/error", 1), ("test/flush", 1)])
        assert done.wait(10), "the collector's subscription was not acknowledged"

    def _on(self, c, u, m):
        if m.topic == "test/flush":
            self._flushed.add(m.payload)
            return
        dev, kind = m.topic.split("/")[-2:]
        obj = json.loads(m.payload)
        with self._lock:
            if kind == "out":
                self.answers[dev][obj["seq"]].append(obj)
                self.n += 1
            else:
                self.errors.append((dev, obj))

    def distinct(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.answers.values())

    def flush(self, timeout: float = 20):
        """Wait until everything the broker routed to this collector before now has arrived."""
        token = uuid.uuid4().hex.encode()
        self.c.publish("test/flush", token, qos=1)
        wait_until(lambda: token in self._flushed, timeout, "the collector's flush marker")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def make_data(n_dev: int, T: int, input_size: int, seed: int = 0):
    """Per device: its samples (T, input_size) and its messages [(seq, payload)] of 1..4 samples each."""
    rng = np.random.default_rng(seed)
    data, msgs = {}, {}
    for d in range(n_dev):
        name = f"dev{d:05d}"
        X = rng.normal(size=(T, input_size)).astype(np.float32)
        data[name] = X
        k = 1 + d % 4
        out, seq, t = [], 0, 0
        while t < T:
            chunk = X[t : t + k]
            body = (
                {"seq": seq, "x": chunk[0].tolist()} if len(chunk) == 1 else {"seq": seq, "X": chunk.tolist()}
            )
            out.append((seq, len(chunk), json.dumps(body)))
            seq += 1
            t += len(chunk)
        msgs[name] = out
    return data, msgs


def interleaved(msgs: dict):
    """(device, payload) in round-robin order across devices (each device's own order kept)."""
    its = {d: iter(m) for d, m in msgs.items()}
    while its:
        for d in list(its):
            nxt = next(its[d], None)
            if nxt is None:
                del its[d]
            else:
                yield d, nxt[2]


def publish_all(port: int, items, prefix: str = "edgernn", pace_every: int = 0, pace_s: float = 0.0):
    """Publish (device, payload) at QoS 1 and wait until the broker acknowledged every one."""
    c = client(port)
    infos: deque = deque()
    for i, (d, p) in enumerate(items):
        while len(infos) > 20000:  # paho's message ids are 16 bits: bound what is in flight
            infos.popleft().wait_for_publish(30)
        infos.append(c.publish(f"{prefix}/{d}/in", p, qos=1))
        if pace_every and i % pace_every == pace_every - 1:
            time.sleep(pace_s)
    for info in infos:
        info.wait_for_publish(30)
        assert info.is_published()
    c.disconnect()
    c.loop_stop()


class ServerProc:
    """``edgernn serve`` as a child process; ``ready()`` waits for its "ready" line."""

    def __init__(self, model_path, port, tmp, *extra, tag="s"):
        self.err_path = os.path.join(tmp, f"serve-{tag}-{uuid.uuid4().hex[:6]}.err")
        self.err = open(self.err_path, "w")
        cmd = [
            sys.executable,
            "-m",
            "edgernn.cli",
            "serve",
            str(model_path),
            "--broker",
            f"{HOST}:{port}",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)

    def text(self) -> str:
        with open(self.err_path) as f:
            return f.read()

    def ready(self, timeout: float = 300):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError(f"edgernn serve exited early:\n{self.text()}")
            return "ready (" in self.text()

        wait_until(ok, timeout, "edgernn serve to be ready", step=0.1)
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"edgernn serve did not stop on SIGTERM:\n{self.text()}") from None
        self.err.close()
        return self.proc.returncode


def check_outputs(collector, data, msgs, ref_model, rtol=1e-4, atol=1e-4):
    """Every seq answered exactly once, and each device's answers equal ref_model.predict of its samples."""
    assert not collector.errors, collector.errors[:3]
    for dev, X in data.items():
        got = collector.answers.get(dev, {})
        seqs = [s for s, _, _ in msgs[dev]]
        assert sorted(got) == seqs, f"{dev}: answered seqs {sorted(got)[:10]}..., expected {seqs[:10]}..."
        twice = [s for s, v in got.items() if len(v) != 1]
        assert not twice, f"{dev}: seqs answered more than once: {twice[:10]}"
        Y = np.concatenate(
            [np.atleast_2d(np.asarray(got[s][0].get("Y", [got[s][0].get("y")]), np.float32)) for s in seqs]
        )
        np.testing.assert_allclose(Y, ref_model.predict(X), rtol=rtol, atol=atol, err_msg=dev)
