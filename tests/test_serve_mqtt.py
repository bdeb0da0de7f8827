"""``edgernn serve`` end to end with real parts: a mosquitto broker on loopback, a QoS 1 simulator of many
devices, the server as its own process (killed with SIGKILL mid-run and restarted), answers checked
against ``predict`` of each device's own sequence on the independent numpy backend."""

from __future__ import annotations

import os
import threading

import builders as B
import numpy as np
import pytest
import serve_common as S

import edgernn
from edgernn import artifact
from edgernn.serve import snapshot

pytest.importorskip("paho.mqtt.client")

I = 3


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(11)
    plan, tensors = B.model([B.recurrent(rng, "gru", "g0", I, 12), B.dense(rng, "d0", 12, 2)], I)
    p = tmp_path_factory.mktemp("serve") / "m2m.ernn"
    artifact.write(p, plan, tensors)
    return p


@pytest.fixture(scope="module")
def ref(model_path):
    return edgernn.load(model_path, backend="numpy")


@pytest.fixture
def broker(tmp_path):
    b = S.Broker(str(tmp_path))
    yield b
    b.close()


def _final_states(state_dir, data, ref):
    meta, states = snapshot.read(snapshot.path_for(str(state_dir), (0, 1)))
    row = {d: k for k, d in enumerate(meta["devices"])}
    for dev, X in data.items():
        s = ref.stream()
        s.run(X)
        np.testing.assert_allclose(states[row[dev]], s.state, rtol=1e-4, atol=1e-4, err_msg=dev)
    assert not meta["pending"]


def _run(model_path, ref, broker, tmp_path, n_dev, T, kill=False):
    data, msgs = S.make_data(n_dev, T, I)
    total = sum(len(m) for m in msgs.values())
    col = S.Collector(broker.port)
    state = tmp_path / "state"
    srv = S.ServerProc(
        model_path, broker.port, str(tmp_path), "--state-dir", str(state), "--snapshot-every", "3"
    )
    procs = [srv]
    try:
        srv.ready()
        items = list(S.interleaved(msgs))
        pub = threading.Thread(
            target=S.publish_all, args=(broker.port, items), kwargs={"pace_every": 200, "pace_s": 0.02}
        )
        pub.start()
        if kill:
            S.wait_until(lambda: col.distinct() >= total // 4, 120, "a quarter of the answers")
            # and a snapshot to restore from (at most one per SNAPSHOT_MIN_S: a fast first quarter can
            # come before it, and the restart would then rebuild from the broker's redelivery alone)
            snap = snapshot.path_for(str(state), (0, 1))
            S.wait_until(lambda: os.path.exists(snap), 120, "a first snapshot")
            srv.kill()
            at_kill = col.distinct()
            assert at_kill < total, "the server finished before it was killed: nothing was tested"
            srv = S.ServerProc(
                model_path, broker.port, str(tmp_path), "--state-dir", str(state), tag="restart"
            )
            procs.append(srv)
            srv.ready()
            assert "restored" in srv.text()
        pub.join(300)
        assert not pub.is_alive()
        S.wait_until(lambda: col.distinct() >= total, 300, f"all {total} answers")
        assert srv.stop() == 0, srv.text()
        col.flush()
        S.check_outputs(col, data, msgs, ref)
        _final_states(state, data, ref)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
        col.close()
    return srv


def test_serve_many_devices_exactly_once(model_path, ref, broker, tmp_path):
    srv = _run(model_path, ref, broker, tmp_path, 200, 50)
    assert "0 refused" in srv.text()


def test_serve_survives_sigkill_without_loss_or_doubling(model_path, ref, broker, tmp_path):
    _run(model_path, ref, broker, tmp_path, 200, 50, kill=True)


@pytest.mark.slow
def test_serve_1000_devices_200_samples_with_a_kill(model_path, ref, broker, tmp_path):
    _run(model_path, ref, broker, tmp_path, 1000, 200, kill=True)


def test_serve_exactly_once_across_broker_connection_blips(model_path, ref, broker, tmp_path):
    """The server's own connection is cut (a reset, bytes in flight lost both ways) three times mid-run
    while it keeps running: it reconnects to its session and still answers every seq exactly once."""
    data, msgs = S.make_data(200, 50, I, seed=3)
    total = sum(len(m) for m in msgs.values())
    relay = S.Relay(broker.port)
    col = S.Collector(broker.port)
    state = tmp_path / "state"
    srv = S.ServerProc(
        model_path, relay.port, str(tmp_path), "--state-dir", str(state), "--snapshot-every", "3"
    )
    try:
        srv.ready()
        pub = threading.Thread(
            target=S.publish_all,
            args=(broker.port, list(S.interleaved(msgs))),
            kwargs={"pace_every": 200, "pace_s": 0.02},
        )
        pub.start()
        for k in (1, 2, 3):
            S.wait_until(lambda k=k: col.distinct() >= k * total // 5, 120, f"{k}/5 of the answers")
            relay.cut(down_s=0.3 * k)
            at_cut = col.distinct()
            S.wait_until(lambda k=k: relay.accepted > k, 60, "the server to reconnect")
        assert at_cut < total, "everything was answered before the last cut: nothing was tested"
        pub.join(300)
        assert not pub.is_alive()
        S.wait_until(lambda: col.distinct() >= total, 300, f"all {total} answers")
        assert srv.stop() == 0, srv.text()
        assert srv.text().count("lost the broker connection") >= 3, srv.text()
        col.flush()
        S.check_outputs(col, data, msgs, ref)
        _final_states(state, data, ref)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
        col.close()
        relay.close()


def test_bad_payloads_answered_on_error_and_change_nothing(model_path, ref, broker, tmp_path):
    col = S.Collector(broker.port)
    srv = S.ServerProc(model_path, broker.port, str(tmp_path), "--state-dir", str(tmp_path / "st"))
    try:
        srv.ready()
        x = [0.5, -1.0, 2.0]
        bad = [
            "not json",
            '{"seq": 0, "x": [1, 2]}',
            '{"seq": 0, "x": [NaN, 1, 2]}',
            '{"seq": 0, "x": [1, 2, 3], "extra": 1}',
            '{"seq": 0, "X": [[1, 2, 3], [1, 2]]}',
            '{"x": [1, 2, 3]}',
        ]
        good = [(0, {"seq": 0, "x": x}), (1, {"seq": 1, "X": [x, x]})]
        import json

        items = [("d1", b) for b in bad[:3]] + [("d1", json.dumps(good[0][1]))] + [("d1", b) for b in bad[3:]]
        items += [("d1", json.dumps(good[1][1])), ("d1", json.dumps(good[0][1]))]  # the last: a duplicate
        S.publish_all(broker.port, items)
        S.wait_until(lambda: col.distinct() >= 2 and len(col.errors) >= len(bad), 60, "answers and errors")
        assert srv.stop() == 0
        col.flush()
        assert len(col.errors) == len(bad)
        assert {e["seq"] for _, e in col.errors} == {None, 0}
        data = {"d1": np.asarray([x, x, x], np.float32)}
        msgs = {"d1": [(0, 1, None), (1, 2, None)]}
        S.check_outputs(_no_errors(col), data, msgs, ref)
        _final_states(tmp_path / "st", data, ref)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
        col.close()


def _no_errors(col):
    col.errors = []
    return col


def test_shared_subscription_breaks_per_device_state(model_path, ref, broker, tmp_path):
    """Negative control: two workers behind ``$share/g/...`` get alternating samples of each device, so
    the answers no longer equal the device's own sequence (the check above would catch it)."""
    from edgernn.serve.mqtt import Server

    data, msgs = S.make_data(41, 20, I)  # odd: round-robin over two workers alternates on every device
    col = S.Collector(broker.port)
    model = edgernn.load(model_path, backend="numpy")
    servers = [
        Server(
            model,
            S.HOST,
            broker.port,
            client_id=f"w{k}",
            in_filter="$share/g/edgernn/+/in",
            log=lambda m: None,
        )
        for k in range(2)
    ]
    threads = [threading.Thread(target=s.run) for s in servers]
    for t in threads:
        t.start()
    try:
        S.wait_until(lambda: all(s.ready.is_set() for s in servers), 60, "both workers ready")
        total = sum(len(m) for m in msgs.values())
        S.publish_all(broker.port, list(S.interleaved(msgs)))
        applied = lambda: sum(s.gw.stats["messages"] + s.gw.stats["duplicates"] for s in servers)  # noqa: E731
        S.wait_until(lambda: applied() >= total, 120, "both workers to apply every message")
        for s in servers:
            s.stop.set()
        for t in threads:
            t.join(30)
        col.flush()
        assert all(s.gw.stats["messages"] > 0 for s in servers), "one worker got everything"
        with pytest.raises(AssertionError):
            S.check_outputs(col, data, msgs, ref)
        wrong = 0  # devices with an answer that differs from predict over the same samples
        for dev, X in data.items():
            Y = ref.predict(X)
            t0, bad = 0, False
            for seq, k, _ in msgs[dev]:
                for v in col.answers[dev].get(seq, []):
                    got = np.atleast_2d(np.asarray(v.get("Y", [v.get("y")]), np.float32))
                    bad |= not np.allclose(got, Y[t0 : t0 + k], rtol=1e-4, atol=1e-4)
                t0 += k
            wrong += bad
        assert wrong >= len(data) // 2, f"only {wrong} of {len(data)} devices were wrong"
    finally:
        for s in servers:
            s.stop.set()
        for t in threads:
            t.join(30)
        col.close()
