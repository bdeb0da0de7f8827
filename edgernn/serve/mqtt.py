"""The MQTT side of ``edgernn serve`` (paho-mqtt 2.x, MQTT 5; the ``serve`` extra, imported here only).

One :class:`Server` per shard: a persistent session under a fixed client id (``clean_start=False``, a long
session expiry), QoS 1 subscriptions to ``{prefix}/+/in`` and ``{prefix}/+/out``, messages acknowledged by
hand (``manual_ack``) only once a snapshot covers them. After each (re)connect it publishes a marker on its
own sync topic and holds its answers until the marker comes back: by then every answer an earlier process
(or an earlier connection) published has come back on ``/out`` too and left the outbox, so the rest are
published once. Each connection has its own paho client (paho's reconnection would resend answers that may
have reached the broker already, and acknowledge with message ids of the wrong connection). docs/SERVE.md.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import deque

from ..errors import EdgeRNNError, require
from . import snapshot
from .gateway import Gateway

#: how long the broker keeps a stopped shard's session and its queue
SESSION_EXPIRY_S = 7 * 24 * 3600
#: snapshots (and acknowledgements) come every snapshot_every ticks under load, or when out of work, but
#: at most every SNAPSHOT_MIN_S and every SNAPSHOT_COST_RATIO x the last one's cost (tens of ms for 1,000
#: devices with fsync; ten times that for 10,000): at most ~1/(1+ratio) of the time goes to them
SNAPSHOT_MIN_S = 0.5
SNAPSHOT_COST_RATIO = 5.0
RETRY_MIN_S, RETRY_MAX_S = 0.1, 5.0  #: the wait between attempts to connect again after a loss


def _done(info) -> bool:
    try:
        return info.is_published()
    except (ValueError, RuntimeError):  # refused by paho (the answer stays in the outbox until seen)
        return True


def default_client_id(prefix: str, shard: tuple[int, int]) -> str:
    """The fixed client id of shard (I, N): the same after every restart, so the session is resumed."""
    return f"edgernn-serve-{prefix.replace('/', '_')}-{shard[0]}of{shard[1]}"


class Server:
    """Serve ``model`` for the devices of ``shard`` through the broker at ``host:port``.

    ``state_dir``: snapshots there every ``snapshot_every`` ticks (and whenever it runs out of work);
    without it nothing is persisted and messages are acknowledged as soon as they are applied.
    ``in_filter`` overrides the input subscription (``{prefix}/+/in``); the tests use it for a shared
    subscription, which is *not* a way to scale (docs/SERVE.md). ``max_intake``: at most this many messages
    taken in and not yet acknowledged (MQTT 5 Receive Maximum): a backlog waits at the broker, not in the
    snapshots (which hold the messages taken in but not applied yet).
    """

    def __init__(
        self,
        model,
        host: str,
        port: int,
        prefix: str = "edgernn",
        shard: tuple[int, int] = (0, 1),
        state_dir: str | None = None,
        idle_timeout: float | None = None,
        snapshot_every: int = 10,
        client_id: str | None = None,
        in_filter: str | None = None,
        log=None,
        max_intake: int = 4096,
    ):
        self.gw = Gateway(model, shard, idle_timeout)
        self.host, self.port, self.prefix = host, int(port), prefix.rstrip("/")
        self.state_dir = state_dir
        self.snapshot_every = max(1, int(snapshot_every))
        self.client_id = client_id or default_client_id(self.prefix, self.gw.shard)
        self.in_filter = in_filter or f"{self.prefix}/+/in"
        self.max_intake = max(16, min(65535, int(max_intake)))
        self.sync_topic = f"{self.prefix}/_serve/{self.client_id}/sync"
        self._q: deque = deque()
        self._wake = threading.Event()
        self._nonce = b""
        self._connected = threading.Event()
        self._conn_error: str | None = None
        self.log = log or (lambda msg: print(f"edgernn serve: {msg}", file=sys.stderr, flush=True))
        self.stop = threading.Event()
        self.ready = threading.Event()  #: set once subscribed and the sync marker came back
        self.snapshots = 0
        self.restored = 0  #: devices restored from snapshots at start
        self._out: deque = deque()  # publishes not yet acknowledged by the broker
        self._c = None  # the client of the current connection (a new one per connection), None while down
        self._retry_at = 0.0
        self._backoff = RETRY_MIN_S
        self.reconnects = 0
        self._snap_cost = 0.0  # seconds the last snapshot took
        self._up = True  # the current client's CONNACK came (the first one is awaited in run())
        self._attempt_at = 0.0
        #: seconds of the main loop spent taking messages in (parse, echoes), in ticks (kernel, answer
        #: JSON), publishing, and writing snapshots + acknowledging; the network thread's time is not here
        self.times = {"intake": 0.0, "tick": 0.0, "publish": 0.0, "snapshot": 0.0}

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            if not self._connected.is_set():
                self._conn_error = f"the broker refused the connection: {reason_code}"
                self._connected.set()
            else:
                self._q.append(("lost", client, f"refused: {reason_code}"))
                self._wake.set()
            return
        self._q.append(("connect", client, flags.session_present))
        self._connected.set()
        self._wake.set()

    def _on_message(self, client, userdata, msg):
        self._q.append(("msg", client, msg))
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._q.append(("lost", client, str(reason_code)))
        self._wake.set()

    # ------------------------------------------------------------------ connections
    def _client(self):
        """A new client, connected (CONNECT sent) but not looping. paho's own reconnection is off: it
        would send again the answers in flight at the loss, and some of those reached the broker."""
        mqtt = require("paho.mqtt.client", "serve")
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if self.state_dir else 0
        props.ReceiveMaximum = self.max_intake  # the broker sends no more unacknowledged messages
        try:
            c.connect(self.host, self.port, keepalive=30, clean_start=not self.state_dir, properties=props)
        except OSError as e:
            raise EdgeRNNError(f"cannot connect to the broker at {self.host}:{self.port}: {e}") from None
        return c

    def _lost(self, why: str) -> None:
        """The current connection is gone: hold the answers (the outbox keeps them), forget the
        unacknowledged messages (the broker sends them again), reconnect with a fresh client."""
        c, self._c = self._c, None
        self.gw.hold = True
        self._out.clear()
        self.log(f"lost the broker connection ({why}): reconnecting in {self._backoff:.1f} s")
        threading.Thread(target=_retire, args=(c,), daemon=True).start()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(2 * self._backoff, RETRY_MAX_S)  # back to the minimum once a session is up

    def _reconnect(self) -> None:
        try:
            c = self._client()
        except EdgeRNNError as e:
            self._backoff = min(2 * self._backoff, RETRY_MAX_S)
            self._retry_at = time.monotonic() + self._backoff
            self.log(f"{e}; trying again in {self._backoff:.1f} s")
            return
        self.reconnects += 1
        self._c = c
        self._up = False
        self._attempt_at = time.monotonic()
        c.loop_start()

    def _restore(self) -> None:
        if not self.state_dir:
            return
        now = time.monotonic()
        for p in snapshot.sources_for(self.state_dir, self.gw.shard):
            meta, states = snapshot.read(p)
            self.gw.restore(meta, states, now)
            k = sum(map(self.gw.owns, meta["devices"]))
            self.restored += k
            self.log(f"restored {k} devices from {os.path.basename(p)}")

    def _snapshot(self) -> None:
        t0 = time.monotonic()
        meta, states = self.gw.to_snapshot()
        snapshot.write(self.state_dir, self.gw.shard, meta, states)
        self.snapshots += 1
        self._snap_cost = time.monotonic() - t0

    def _publish(self, topic: str, payload: bytes) -> None:
        c = self._c
        if c is None:  # down: answers stay in the outbox (published after the next sync), errors are lost
            return
        out = self._out
        while out and _done(out[0]):
            out.popleft()
        while len(out) > 20000:  # message ids are 16 bits: bound what is in flight
            if not c.is_connected():
                out.clear()
                break
            try:
                out[0].wait_for_publish(0.5)
            except (ValueError, RuntimeError):  # not queued / connection lost: the outbox still has it
                pass
            if _done(out[0]):
                out.popleft()
        out.append(c.publish(topic, payload, qos=1))

    # ------------------------------------------------------------------ main loop
    def _handle(self, item, unacked: list) -> None:
        kind, c, val = item
        if kind == "lost":
            if c is self._c:
                self._lost(val)
                unacked.clear()
            return
        if kind == "connect":  # (re)connected: subscribe, then hold answers until our marker returns
            if c is not self._c:
                return
            from paho.mqtt.subscribeoptions import SubscribeOptions

            self._backoff = RETRY_MIN_S
            self._up = True

            if self.state_dir and not val:
                self.log("the broker had no session for this client id: a new one starts now")
            self.gw.hold = True
            opts = SubscribeOptions(qos=1)
            c.subscribe([(self.in_filter, opts), (f"{self.prefix}/+/out", opts), (self.sync_topic, opts)])
            self._nonce = uuid.uuid4().hex.encode()
            c.publish(self.sync_topic, self._nonce, qos=1)
            return
        msg = val
        if c is self._c:  # a message of a lost connection is sent again: not ours to acknowledge
            unacked.append((c, msg))
        topic = msg.topic
        if topic == self.sync_topic:
            if msg.payload == self._nonce and self.gw.hold and c is self._c:
                late = self.gw.release()
                for dev, p in late:
                    self._publish(f"{self.prefix}/{dev}/out", p)
                again = f", after {self.reconnects} reconnections" if self.reconnects else ""
                self.log(f"ready ({len(late)} answers of an earlier run published now{again})")
                self.ready.set()
            return
        head, _, kind = topic.rpartition("/")
        device = head[len(self.prefix) + 1 :]
        if not device or "/" in device or not self.gw.owns(device):
            return
        if kind == "in":
            err = self.gw.submit(device, msg.payload, time.monotonic())
            if err is not None:
                self._publish(f"{self.prefix}/{device}/error", err)
        elif kind == "out":
            self.gw.echo(device, msg.payload)

    def run(self, timeout_s: float = 10.0) -> int:
        """Serve until :attr:`stop` is set (SIGTERM/SIGINT in the command); returns an exit code.

        The first connection must succeed (:class:`EdgeRNNError` otherwise); a connection lost later is
        made again (0.1 s, doubling to 5 s between attempts) while the server keeps running."""
        self._restore()
        self._c = self._client()
        self._c.loop_start()
        try:
            if not self._connected.wait(timeout_s):
                raise EdgeRNNError(f"no answer from the broker at {self.host}:{self.port}")
            if self._conn_error:
                raise EdgeRNNError(self._conn_error)
            self._loop()
            c = self._c
            if c is not None and c.is_connected():
                info = c.publish(self.sync_topic, b"stop", qos=1)  # the last message out: wait for it
                try:
                    info.wait_for_publish(timeout_s)
                except (ValueError, RuntimeError):
                    pass
        finally:
            if self._c is not None:
                _retire(self._c)
        return 0

    def _loop(self) -> None:
        gw = self.gw
        unacked: list = []
        since_snap = 0
        last_snap = time.monotonic()
        topic = f"{self.prefix}/{{}}/".format
        tm = self.times
        clock = time.perf_counter
        while True:
            draining = self.stop.is_set()  # then: finish what was taken in, snapshot, acknowledge, leave
            if draining and not gw.busy and not unacked:
                break
            if self._c is None and not draining and time.monotonic() >= self._retry_at:
                self._reconnect()
            elif self._c is not None and not self._up and time.monotonic() - self._attempt_at > 10.0:
                self._lost("no answer to CONNECT within 10 s")
                unacked.clear()
            t0 = clock()
            if not draining:
                if not self._q and not gw.busy:
                    self._wake.wait(0.05)
                    self._wake.clear()
                t0 = clock()
                for _ in range(min(len(self._q), 20000)):  # bounded: a tick follows even under a flood
                    self._handle(self._q.popleft(), unacked)
            t1 = clock()
            answers, errors = gw.tick(time.monotonic())
            t2 = clock()
            if answers or errors:
                since_snap += 1
            for dev, p in answers:
                self._publish(topic(dev) + "out", p)
            for dev, p in errors:
                self._publish(topic(dev) + "error", p)
            gw.expire(time.monotonic())
            t3 = clock()
            now = time.monotonic()
            gap = now - last_snap
            enough = gap >= max(SNAPSHOT_MIN_S, SNAPSHOT_COST_RATIO * self._snap_cost)
            quiet = not gw.busy and (draining or enough)
            due = since_snap >= self.snapshot_every and enough
            full = len(unacked) >= self.max_intake // 2  # do not let the broker's window close
            if unacked and (not self.state_dir or due or full or quiet):
                if self.state_dir:
                    self._snapshot()
                    last_snap = now
                for c, m in unacked:
                    if c is self._c:
                        c.ack(m.mid, m.qos)
                unacked.clear()
                since_snap = 0
            t4 = clock()
            tm["intake"] += t1 - t0
            tm["tick"] += t2 - t1
            tm["publish"] += t3 - t2
            tm["snapshot"] += t4 - t3
        if self.state_dir:
            self._snapshot()


def _retire(c) -> None:
    """Close a client and stop its network thread (its unsent messages are dropped with it)."""
    try:
        c.disconnect()
    except Exception:  # noqa: BLE001 - already gone
        pass
    c.loop_stop()
