"""The transport-free core of ``edgernn serve``: device → row map, one batched step per tick, the outbox.

A :class:`Gateway` owns the devices of one shard (``shard_of(device, N) == I``). Messages go in through
:meth:`Gateway.submit` (``/in`` payloads; a bad one is refused with an error payload and touches nothing)
and :meth:`Gateway.echo` (answers seen on ``/out``); :meth:`Gateway.tick` applies at most one waiting
message per device, all devices together: one ``Streams.step(X, rows)`` kernel call per sample position
(one call per tick when every message holds one sample). Answers stay in the outbox until their echo is
seen on ``/out``, which is how a restarted server knows which answers were already published.
"""

from __future__ import annotations

import json
import zlib
from collections import deque

import numpy as np

from ..errors import EdgeRNNError, InputError
from .payload import PayloadError, Request, answer_seq, parse


def shard_of(device: str, n: int) -> int:
    """The shard (0..n-1) that owns ``device``: ``crc32(utf-8 name) % n``, stable across restarts."""
    return zlib.crc32(device.encode()) % n


def _error(seq: int | None, msg: str) -> bytes:
    return json.dumps({"seq": seq, "error": msg}).encode()


class Gateway:
    """Every device's recurrent state for one model, in one :class:`~edgernn.Streams` block.

    ``shard``: (I, N), the devices this gateway owns. ``idle_timeout``: seconds without a message after
    which a device's row is freed (its next sample starts a fresh stream); None keeps rows forever.
    """

    def __init__(self, model, shard: tuple[int, int] = (0, 1), idle_timeout: float | None = None):
        i, n = shard
        if not (isinstance(n, int) and isinstance(i, int) and n >= 1 and 0 <= i < n):
            raise InputError(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
        if len(getattr(model, "output_names", ())) > 1:
            raise EdgeRNNError(
                f"serve: the model has {len(model.output_names)} outputs {list(model.output_names)}; the "
                "gateway answers with one (compile it with --graph-output NAME)"
            )
        self.model = model
        self.shard = (i, n)
        self.idle_timeout = idle_timeout
        self.streams = model.streams(16)
        self._free = list(range(15, -1, -1))
        self.rows: dict[str, int] = {}  # device -> row of a live stream
        self.last_seq: dict[str, int] = {}  # device -> seq of the last message applied
        self.answered: dict[str, int] = {}  # device -> highest seq seen on its /out topic
        self.outbox: dict[str, dict[int, bytes]] = {}  # device -> seq -> answer not yet seen on /out
        self.pending: dict[str, deque[Request]] = {}  # device -> valid messages waiting, in arrival order
        self.last_seen: dict[str, float] = {}
        self.hold = False  # True: keep answers in the outbox, publish nothing (until release())
        self._vocab = model.info["vocab_size"] or 0
        self.stats = {"samples": 0, "messages": 0, "refused": 0, "duplicates": 0, "kernel_calls": 0}

    # ---------------------------------------------------------------- input side
    def owns(self, device: str) -> bool:
        """Whether this gateway's shard owns ``device``."""
        return shard_of(device, self.shard[1]) == self.shard[0]

    def submit(self, device: str, raw: bytes | str, now: float) -> bytes | None:
        """Queue an ``/in`` payload; returns an error payload (for ``/error``) if it is refused."""
        try:
            req = parse(raw, self.model.input_size, self._vocab)
        except PayloadError as e:
            self.stats["refused"] += 1
            return _error(e.seq, str(e))
        self.pending.setdefault(device, deque()).append(req)
        self.last_seen[device] = now
        return None

    def echo(self, device: str, raw: bytes) -> None:
        """An answer seen on ``device``'s ``/out`` topic: it is published, drop it from the outbox."""
        seq = answer_seq(raw)
        if seq is None:
            return
        if seq > self.answered.get(device, -1):
            self.answered[device] = seq
        box = self.outbox.get(device)
        if box:
            for s in [s for s in box if s <= seq]:
                del box[s]
            if not box:
                del self.outbox[device]

    def release(self) -> list[tuple[str, bytes]]:
        """End ``hold``: the answers still in the outbox (never seen on ``/out``), to publish now."""
        self.hold = False
        return [(d, p) for d, box in self.outbox.items() for _, p in sorted(box.items())]

    @property
    def busy(self) -> bool:
        """Whether messages wait to be applied."""
        return bool(self.pending)

    # ---------------------------------------------------------------- the tick
    def _row(self, device: str) -> int:
        r = self.rows.get(device)
        if r is None:
            if not self._free:
                n = len(self.streams)
                self.streams.resize(2 * n)
                self._free = list(range(2 * n - 1, n - 1, -1))
            r = self.rows[device] = self._free.pop()
        return r

    def tick(self, now: float) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """Apply the first waiting message of every device; returns (answers to publish, errors).

        Answers: ``(device, payload)`` for ``/out`` (none while ``hold``); errors for ``/error``."""
        items: list[tuple[str, Request]] = []
        for dev in list(self.pending):
            q = self.pending[dev]
            req = q.popleft()
            if not q:
                del self.pending[dev]
            if req.seq is not None and req.seq <= self.last_seq.get(dev, -1):
                self.stats["duplicates"] += 1  # a redelivery of a message already applied
                continue
            items.append((dev, req))
        errors: list[tuple[str, bytes]] = []
        if not items:
            return [], errors
        for dev, req in items:
            if req.reset:
                self.streams.reset([self._row(dev)])
        steps = sorted((it for it in items if len(it[1].X)), key=lambda it: -len(it[1].X))
        failed = self._step_all(steps, errors) if steps else {}
        answers = []
        for dev, req in items:
            if dev in failed:
                continue
            self.stats["messages"] += 1
            if req.seq is not None:
                self.last_seq[dev] = req.seq
            if not len(req.X):
                continue
            self.stats["samples"] += len(req.X)
            Y = req.Y.tolist()
            ans = {"seq": req.seq, "y": Y[0]} if req.single else {"seq": req.seq, "Y": Y}
            payload = json.dumps(ans, separators=(",", ":")).encode()
            if req.seq > self.answered.get(dev, -1):
                self.outbox.setdefault(dev, {})[req.seq] = payload
                if not self.hold:
                    answers.append((dev, payload))
        return answers, errors

    def _step_all(self, steps: list[tuple[str, Request]], errors: list) -> dict[str, bool]:
        """Step the requests (longest first) position by position; Y into each request's ``Y``."""
        rows = np.fromiter((self._row(d) for d, _ in steps), np.int64, len(steps))
        kmax = len(steps[0][1].X)
        saved = {}
        if kmax > 1:  # a failure at a later sample position must undo that device's earlier ones
            saved = {
                j: self.streams.get_state(int(rows[j])) for j, (_, r) in enumerate(steps) if len(r.X) > 1
            }
        for _, req in steps:
            req.Y = np.empty((len(req.X), self.model.output_size), np.float32)
        failed: dict[str, bool] = {}
        active = len(steps)
        for t in range(kmax):
            while active and len(steps[active - 1][1].X) <= t:
                active -= 1
            live = [j for j in range(active) if steps[j][0] not in failed]
            if not live:
                break
            X = np.stack([steps[j][1].X[t] for j in live])
            try:
                self.stats["kernel_calls"] += 1
                Y = self.streams.step(X, rows=rows[live])
            except InputError:  # a finite input the model overflows on: find it, step the others alone
                Y = np.empty((len(live), self.model.output_size), np.float32)
                for i, j in enumerate(live):
                    try:
                        Y[i] = self.streams.step(X[i : i + 1], rows=rows[j : j + 1])[0]
                    except InputError as e:
                        dev, req = steps[j]
                        failed[dev] = True
                        if j in saved:
                            self.streams.set_state(int(rows[j]), saved[j])
                        errors.append((dev, _error(req.seq, f"sample {t}: {e}")))
                        self.stats["refused"] += 1
            for i, j in enumerate(live):
                steps[j][1].Y[t] = Y[i]
        return failed

    def expire(self, now: float) -> list[str]:
        """Free the rows of devices idle longer than ``idle_timeout``; returns those devices."""
        if self.idle_timeout is None:
            return []
        gone = [
            d
            for d, r in self.rows.items()
            if d not in self.pending and now - self.last_seen.get(d, now) > self.idle_timeout
        ]
        for d in gone:
            r = self.rows.pop(d)
            self.streams.reset([r])
            self._free.append(r)
        return gone

    # ---------------------------------------------------------------- snapshots
    def to_snapshot(self) -> tuple[dict, np.ndarray]:
        """(meta, states): everything needed to continue, as JSON-able meta and (devices, state_size)."""
        devices = list(self.rows)
        rows = np.fromiter(self.rows.values(), np.int64, len(devices))
        states = self.streams.state[rows]
        meta = {
            "format": "edgernn-serve-snapshot",
            "version": 1,
            "shard": list(self.shard),
            "input_size": self.model.input_size,
            "state_size": self.model.state_size,
            "devices": devices,
            "last_seq": self.last_seq,
            "answered": self.answered,
            "outbox": [[d, s, p.decode()] for d, box in self.outbox.items() for s, p in box.items()],
            "pending": [[d, r.raw] for d, q in self.pending.items() for r in q],
        }
        return meta, states

    def restore(self, meta: dict, states: np.ndarray, now: float) -> None:
        """Continue from a snapshot (:meth:`to_snapshot`); devices another shard owns are left out."""
        if meta.get("state_size") != self.model.state_size or meta.get("input_size") != self.model.input_size:
            raise InputError("the snapshot was written for a model with other input/state sizes")
        mine = self.owns
        for k, d in enumerate(meta["devices"]):
            if mine(d):
                self.streams.set_state(self._row(d), np.asarray(states[k], np.float32))
                self.last_seen[d] = now
        self.last_seq.update({d: s for d, s in meta["last_seq"].items() if mine(d)})
        self.answered.update({d: s for d, s in meta["answered"].items() if mine(d)})
        for d, s, p in meta["outbox"]:
            if mine(d):
                self.outbox.setdefault(d, {})[int(s)] = p.encode()
        for d, raw in meta["pending"]:
            if mine(d):
                self.submit(d, raw, now)
