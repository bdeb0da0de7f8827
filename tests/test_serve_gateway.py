"""The transport-free core of ``edgernn serve``: payload checks, one batched step per tick, seq dedup,
idle rows, the outbox/echo bookkeeping and snapshots — outputs checked against ``predict`` on the
independent numpy backend of each device's own sequence."""

from __future__ import annotations

import json

import builders as B
import numpy as np
import pytest

import edgernn
from edgernn.serve import Gateway, shard_of, snapshot

I = 3


def _model(backend="numpy", kind="gru", w_scale=1.0, **extra):
    rng = np.random.default_rng(7)
    plan, tensors = B.model([B.recurrent(rng, kind, "r0", I, 6, **extra), B.dense(rng, "d0", 6, 2)], I)
    tensors["r0.W"] = tensors["r0.W"] * np.float32(w_scale)
    return edgernn.Model(plan, tensors, backend=backend)


@pytest.fixture(scope="module")
def ref():
    return _model("numpy")


def _msg(seq, X):
    X = np.asarray(X, np.float32)
    return json.dumps({"seq": seq, "x": X[0].tolist()} if len(X) == 1 else {"seq": seq, "X": X.tolist()})


def _Y(payload):
    obj = json.loads(payload)
    return obj["seq"], np.atleast_2d(np.asarray(obj.get("Y", [obj.get("y")]), np.float32))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_many_devices_one_kernel_call_per_sample_position(backend, ref):
    gw = Gateway(_model(backend))
    rng = np.random.default_rng(0)
    n_dev, T = 40, 12
    data = {f"d{i}": rng.normal(size=(T, I)).astype(np.float32) for i in range(n_dev)}
    pos = dict.fromkeys(data, 0)
    seq = dict.fromkeys(data, 0)
    out = {d: [] for d in data}
    while any(pos[d] < T for d in data):
        for d, X in data.items():  # each device sends 1..3 samples per message, or nothing this round
            k = min(int(rng.integers(0, 4)), T - pos[d])
            if k:
                assert gw.submit(d, _msg(seq[d], X[pos[d] : pos[d] + k]), 0.0) is None
                pos[d] += k
                seq[d] += 1
        kmax = max(len(q[0].X) for q in gw.pending.values())
        calls = gw.stats["kernel_calls"]
        answers, errors = gw.tick(0.0)
        assert not errors
        assert gw.stats["kernel_calls"] - calls == kmax  # one batched call per sample position
        for d, p in answers:
            out[d].append(_Y(p))
    for d, X in data.items():
        assert [s for s, _ in out[d]] == list(range(seq[d]))
        np.testing.assert_allclose(
            np.concatenate([y for _, y in out[d]]), ref.predict(X), rtol=1e-4, atol=1e-5
        )
        s = ref.stream()
        s.run(X)
        np.testing.assert_allclose(gw.streams.get_state(gw.rows[d]), s.state, rtol=1e-4, atol=1e-5)


BAD = [
    (b"\xff\xfe", None),
    ("[1, 2, 3]", None),
    ('{"seq": 0, "x": [1, 2]}', 0),
    ('{"seq": 0, "x": [1, 2, NaN]}', 0),
    ('{"seq": 0, "x": [1, 2, Infinity]}', 0),
    ('{"seq": 0, "x": [1, 2, 1e39]}', 0),
    ('{"seq": 0, "x": [1, 2, true]}', 0),
    ('{"seq": 0, "x": [1, 2, "3"]}', 0),
    ('{"seq": 0, "x": [1, 2, 3], "t": 5}', 0),
    ('{"seq": 0, "X": [[1, 2, 3], [1, 2, 3], [1, NaN, 3]]}', 0),
    ('{"seq": 0, "X": []}', 0),
    ('{"seq": 0, "x": [1, 2, 3], "X": [[1, 2, 3]]}', 0),
    ('{"seq": -1, "x": [1, 2, 3]}', None),
    ('{"seq": 1.0, "x": [1, 2, 3]}', None),
    ('{"x": [1, 2, 3]}', None),
    ('{"seq": 0}', 0),
    ('{"seq": 0, "reset": 1}', 0),
]


@pytest.mark.parametrize("raw, seq", BAD)
def test_bad_payloads_are_refused_and_touch_nothing(ref, raw, seq):
    gw = Gateway(ref)
    gw.submit("a", _msg(0, np.ones((2, I))), 0.0)
    gw.tick(0.0)
    before = (gw.streams.state, dict(gw.last_seq), dict(gw.rows))
    err = gw.submit("a", raw, 1.0)
    assert err is not None
    e = json.loads(err)
    assert e["seq"] == seq and isinstance(e["error"], str) and e["error"]
    assert not gw.pending
    assert gw.tick(1.0) == ([], [])
    np.testing.assert_array_equal(gw.streams.state, before[0])
    assert (gw.last_seq, gw.rows) == before[1:]


def test_a_refused_payload_does_not_use_up_its_seq_and_duplicates_are_dropped(ref):
    gw = Gateway(ref)
    X = np.random.default_rng(1).normal(size=(3, I)).astype(np.float32)
    assert gw.submit("a", '{"seq": 0, "x": [0, NaN, 0]}', 0.0) is not None
    gw.submit("a", _msg(0, X[:1]), 0.0)
    gw.submit("a", _msg(0, X[:1]), 0.0)  # a redelivery
    gw.submit("a", _msg(1, X[1:]), 0.0)
    got = []
    for _ in range(3):
        got += [_Y(p) for _, p in gw.tick(0.0)[0]]
    assert [s for s, _ in got] == [0, 1] and gw.stats["duplicates"] == 1
    np.testing.assert_allclose(np.concatenate([y for _, y in got]), ref.predict(X), rtol=1e-5, atol=1e-6)


def test_overflow_in_one_device_refuses_its_whole_message_only():
    m = _model("numpy", kind="rnn", w_scale=100.0, activations=["relu"])
    gw = Gateway(m)
    x = np.full((1, I), 0.5, np.float32)
    huge = np.full((1, I), 1e37, np.float32)  # finite, but W @ x overflows float32
    gw.submit("ok", _msg(0, np.concatenate([x, x])), 0.0)
    gw.submit("bad", _msg(0, np.concatenate([x, huge])), 0.0)
    answers, errors = gw.tick(0.0)
    assert [d for d, _ in answers] == ["ok"] and [d for d, _ in errors] == ["bad"]
    assert json.loads(errors[0][1])["seq"] == 0 and "bad" not in gw.last_seq
    np.testing.assert_array_equal(gw.streams.get_state(gw.rows["bad"]), m.stream().state)
    gw.submit("bad", _msg(0, x), 0.0)  # the refused seq is still free
    answers, _ = gw.tick(0.0)
    np.testing.assert_allclose(_Y(answers[0][1])[1], m.predict(x), rtol=1e-5, atol=1e-6)


def test_reset_and_idle_timeout_restart_a_stream(ref):
    gw = Gateway(ref, idle_timeout=5.0)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, I)).astype(np.float32)
    gw.submit("a", _msg(0, X[:2]), 0.0)
    gw.tick(0.0)
    gw.submit("a", json.dumps({"seq": 1, "reset": True, "X": X[2:].tolist()}), 1.0)
    ((_, p),) = gw.tick(1.0)[0]
    np.testing.assert_allclose(_Y(p)[1], ref.predict(X[2:]), rtol=1e-5, atol=1e-6)
    assert gw.expire(4.0) == [] and "a" in gw.rows
    assert gw.expire(7.0) == ["a"] and "a" not in gw.rows
    gw.submit("a", _msg(1, X[:1]), 8.0)  # its last seq is remembered: still a duplicate
    assert gw.tick(8.0)[0] == []
    gw.submit("a", _msg(2, X[3:]), 8.0)
    ((_, p),) = gw.tick(8.0)[0]
    np.testing.assert_allclose(_Y(p)[1], ref.predict(X[3:]), rtol=1e-5, atol=1e-6)  # a fresh stream


def test_outbox_holds_answers_until_seen_on_out(ref):
    gw = Gateway(ref)
    gw.hold = True
    x = np.ones((1, I), np.float32)
    for s in range(3):
        gw.submit("a", _msg(s, x), 0.0)
        assert gw.tick(0.0)[0] == []
    gw.echo("a", b'{"seq": 1, "y": [0, 0]}')  # a killed process had published seqs 0 and 1
    late = gw.release()
    assert [json.loads(p)["seq"] for _, p in late] == [2]
    gw.submit("a", _msg(3, x), 0.0)
    assert [json.loads(p)["seq"] for _, p in gw.tick(0.0)[0]] == [3]
    assert sorted(gw.outbox["a"]) == [2, 3]
    gw.echo("a", b'{"seq": 3, "y": [0, 0]}')
    assert "a" not in gw.outbox
    gw.hold = True  # after a restart, a recomputed answer already seen on /out is not queued again
    gw.last_seq["a"] = 2
    gw.submit("a", _msg(3, x), 0.0)
    gw.tick(0.0)
    assert gw.release() == []


def test_snapshot_round_trip_continues_exactly(ref, tmp_path):
    rng = np.random.default_rng(3)
    X = {f"d{i}": rng.normal(size=(6, I)).astype(np.float32) for i in range(9)}
    gw = Gateway(ref)
    for d, x in X.items():
        gw.submit(d, _msg(0, x[:3]), 0.0)
        gw.submit(d, _msg(1, x[3:4]), 0.0)  # waits: one message per device per tick
    gw.tick(0.0)
    gw.hold = True
    gw.submit("d0", _msg(2, X["d0"][4:5]), 0.0)
    meta, states = gw.to_snapshot()
    snapshot.write(str(tmp_path), (0, 1), meta, states)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0-of-1.npz"]  # no temporary left
    gw2 = Gateway(ref)
    gw2.restore(*snapshot.read(snapshot.path_for(str(tmp_path), (0, 1))), 0.0)
    assert gw2.last_seq == gw.last_seq and sorted(gw2.outbox) == sorted(gw.outbox)
    outs = []
    for g in (gw, gw2):  # the original and the restored one continue the same way
        g.hold = False
        out = {(d, json.loads(p)["seq"]): p for d, p in g.release()}
        while g.busy:
            out.update({(d, json.loads(p)["seq"]): p for d, p in g.tick(0.0)[0]})
        outs.append(out)
    assert outs[0] == outs[1] and len(outs[0]) == 2 * len(X) + 1
    for d in X:
        np.testing.assert_array_equal(gw2.streams.get_state(gw2.rows[d]), gw.streams.get_state(gw.rows[d]))
    # a new layout (N = 2) takes its devices from the old one's snapshot: each device in exactly one shard
    parts = []
    for i in range(2):
        g = Gateway(ref, shard=(i, 2))
        for p in snapshot.sources_for(str(tmp_path), (i, 2)):
            g.restore(*snapshot.read(p), 0.0)
        assert all(shard_of(d, 2) == i for d in g.rows)
        parts.append(set(g.rows))
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(X)


def test_snapshot_read_refuses_garbage(tmp_path):
    p = tmp_path / "shard-0-of-1.npz"
    p.write_bytes(b"not a snapshot")
    with pytest.raises(edgernn.EdgeRNNError, match="not a readable serve snapshot"):
        snapshot.read(str(p))


def test_shards_partition_devices_stably(ref):
    names = [f"sensor-{i}" for i in range(500)]
    gws = [Gateway(ref, shard=(i, 4)) for i in range(4)]
    owners = [[g.owns(d) for g in gws].count(True) for d in names]
    assert owners == [1] * len(names)
    import zlib

    assert all(gws[zlib.crc32(d.encode()) % 4].owns(d) for d in names)
    with pytest.raises(edgernn.InputError):
        Gateway(ref, shard=(4, 4))
