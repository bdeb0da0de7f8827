"""``edgernn serve`` scaled out on a real local Ray: N named actors, one shard each, against a real mosquitto
broker; one actor's worker process killed with SIGKILL mid-run and restarted by Ray from its snapshot.
Answers checked against ``predict`` of each device's own sequence on the independent numpy backend."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import builders as B
import numpy as np
import pytest
import serve_common as S

import edgernn
from edgernn import artifact
from edgernn.serve import ray_serve, shard_of, snapshot

pytest.importorskip("paho.mqtt.client")
ray = pytest.importorskip("ray")

I = 3
N = 2


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = np.random.default_rng(11)
    plan, tensors = B.model([B.recurrent(rng, "gru", "g0", I, 12), B.dense(rng, "d0", 12, 2)], I)
    p = tmp_path_factory.mktemp("serve-ray") / "m2m.ernn"
    artifact.write(p, plan, tensors)
    return p


@pytest.fixture(scope="module")
def ref(model_path):
    return edgernn.load(model_path, backend="numpy")


def _ray_pids() -> set[int]:
    """Processes of a Ray instance (raylet, GCS, workers) on this machine."""
    r = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    out = set()
    for line in r.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if any(k in args for k in ("raylet", "gcs_server", "ray::", "default_worker.py")):
            out.add(int(pid))
    return out


def _no_leaks(before: set[int]) -> None:
    S.wait_until(lambda: not (_ray_pids() - before), 30, "Ray's processes to exit")


@pytest.fixture(scope="module")
def local_ray():
    before = _ray_pids()
    ray.init(num_cpus=N, include_dashboard=False, log_to_driver=False, address="local")
    try:
        yield
    finally:
        ray.shutdown()
        _no_leaks(before)


@pytest.fixture
def broker(tmp_path):
    b = S.Broker(str(tmp_path))
    yield b
    b.close()


def _final_states(state_dir, data, ref):
    """Every device in exactly one shard's last snapshot, its state equal to a single Stream's."""
    seen = {}
    for i in range(N):
        meta, states = snapshot.read(snapshot.path_for(str(state_dir), (i, N)))
        assert not meta["pending"]
        for k, d in enumerate(meta["devices"]):
            assert shard_of(d, N) == i and d not in seen
            seen[d] = states[k]
    assert sorted(seen) == sorted(data)
    for dev, X in data.items():
        s = ref.stream()
        s.run(X)
        np.testing.assert_allclose(seen[dev], s.state, rtol=1e-4, atol=1e-4, err_msg=dev)


def test_cli_ray_serves_and_stops_cleanly(model_path, ref, broker, tmp_path):
    """``edgernn serve --ray 2`` as a command: its own local Ray, answers right, SIGTERM leaves no Ray
    process behind."""
    assert not ray.is_initialized()  # this test runs first in the module: no Ray of ours yet
    before = _ray_pids()
    data, msgs = S.make_data(40, 12, I, seed=6)
    total = sum(len(m) for m in msgs.values())
    col = S.Collector(broker.port)
    state = tmp_path / "state"
    srv = S.ServerProc(model_path, broker.port, str(tmp_path), "--ray", str(N), "--state-dir", str(state))
    try:
        srv.ready()
        S.publish_all(broker.port, list(S.interleaved(msgs)))
        S.wait_until(lambda: col.distinct() >= total, 120, f"all {total} answers")
        assert srv.stop() == 0, srv.text()
        (last,) = [ln for ln in srv.text().splitlines() if "edgernn serve: stopped:" in ln]
        assert f"{sum(len(X) for X in data.values())} samples" in last, last
        col.flush()
        S.check_outputs(col, data, msgs, ref)
        _final_states(state, data, ref)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
        col.close()
    _no_leaks(before)


@pytest.mark.parametrize("kill", [False, True], ids=["plain", "sigkill-one-actor"])
def test_ray_shards_answer_every_seq_once(model_path, ref, broker, tmp_path, local_ray, kill):
    _ray_run(model_path, ref, broker, tmp_path, 150, 40, kill)


@pytest.mark.slow
def test_ray_1000_devices_200_samples_with_a_kill(model_path, ref, broker, tmp_path, local_ray):
    _ray_run(model_path, ref, broker, tmp_path, 1000, 200, True, wait_s=1200)


def _ray_run(model_path, ref, broker, tmp_path, n_dev, T, kill, wait_s=300):
    data, msgs = S.make_data(n_dev, T, I, seed=5)
    total = sum(len(m) for m in msgs.values())
    col = S.Collector(broker.port)
    state = tmp_path / "state"
    rs = ray_serve(str(model_path), S.HOST, broker.port, N, state_dir=str(state), snapshot_every=3)
    try:
        assert rs.names == [f"edgernn-serve-edgernn-{i}of{N}" for i in range(N)]
        first = rs.info()
        assert [i["shard"] for i in first] == [[i, N] for i in range(N)]
        assert len({i["pid"] for i in first}) == N and os.getpid() not in {i["pid"] for i in first}
        pub = threading.Thread(
            target=S.publish_all,
            args=(broker.port, list(S.interleaved(msgs))),
            kwargs={"pace_every": 150, "pace_s": 0.02},
        )
        pub.start()
        if kill:
            S.wait_until(lambda: col.distinct() >= total // 4, wait_s, "a quarter of the answers")
            # and shard 0's first snapshot, which the restarted actor restores (snapshots come at most
            # every SNAPSHOT_MIN_S: a fast first quarter can come before it)
            snap = snapshot.path_for(str(state), (0, N))
            S.wait_until(lambda: os.path.exists(snap), wait_s, "shard 0's first snapshot")
            victim = first[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            at_kill = col.distinct()
            assert at_kill < total, "everything was answered before the kill: nothing was tested"
            S.wait_until(lambda: rs.info()[0]["pid"] != victim, 120, "Ray to restart the killed shard")
            rs.wait_ready()
            after = rs.info()
            assert after[0]["reconstructed"] and after[0]["restored"] > 0
            assert after[1]["pid"] == first[1]["pid"] and not after[1]["reconstructed"]
        pub.join(wait_s)
        assert not pub.is_alive()
        S.wait_until(lambda: col.distinct() >= total, wait_s, f"all {total} answers")
        infos = rs.stop()
        assert all(i["stopped"] for i in infos)
        assert all(i["stats"]["messages"] > 0 for i in infos), "a shard got nothing"
        col.flush()
        S.check_outputs(col, data, msgs, ref)
        _final_states(state, data, ref)
        with pytest.raises(ValueError):  # the actors are gone with stop()
            ray.get_actor(rs.names[0], namespace="edgernn-serve")
    finally:
        for a in rs.actors:
            ray.kill(a, no_restart=True)
        col.close()


def test_cli_ray_argument_errors(model_path, tmp_path, capsys):
    from edgernn.cli import main

    assert main(["serve", str(model_path), "--broker", "127.0.0.1:1", "--ray", "2", "--shard", "0/2"]) == 1
    assert "takes no --shard" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(model_path), "--broker", "127.0.0.1:1", "--ray", "0"])
