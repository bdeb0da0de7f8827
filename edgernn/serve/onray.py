"""Scale-out of ``edgernn serve`` on Ray: N named actors, one per shard, each restarted by Ray from its
snapshot (the ``ray`` extra; ray is imported inside the functions here only).

Actor ``I`` of ``N`` is an ordinary :class:`~edgernn.serve.mqtt.Server` for shard ``I/N`` (the devices with
``crc32(name) % N == I``) in its own Ray worker process: its own ``Streams`` block, its own MQTT client
under the fixed client id of that shard, its snapshots in ``state_dir/shard-I-of-N.npz`` (the same layout
as ``edgernn serve --shard I/N`` processes, so either can continue the other). When its process dies, Ray
starts it again (``max_restarts``) with the same arguments: it restores its snapshot and resumes its broker
session, and the crash guarantees of docs/SERVE.md hold as for a restarted process.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import EdgeRNNError, require

NAMESPACE = "edgernn-serve"


def actor_name(prefix: str, shard: tuple[int, int]) -> str:
    """The Ray actor name of shard (I, N) (in namespace ``edgernn-serve``)."""
    return f"edgernn-serve-{prefix.replace('/', '_')}-{shard[0]}of{shard[1]}"


class ShardActor:
    """One shard's server inside a Ray actor (wrapped by ``ray.remote`` in :func:`ray_serve`).

    The server runs on a thread of the actor process; the methods answer the driver meanwhile."""

    def __init__(self, model_path: str, host: str, port: int, shard: tuple[int, int], opts: dict):
        import numpy as np
        import ray

        import edgernn

        from .mqtt import Server

        self.reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        self.error: str | None = None
        self.code: int | None = None
        model = edgernn.load(model_path, backend=opts.get("backend"))
        model.streams(1).step(np.zeros((1, model.input_size), np.float32))  # compile before serving
        self.server = Server(
            model,
            host,
            port,
            prefix=opts.get("prefix", "edgernn"),
            shard=shard,
            state_dir=opts.get("state_dir"),
            idle_timeout=opts.get("idle_timeout"),
            snapshot_every=opts.get("snapshot_every", 10),
            log=lambda m, i=shard[0], n=shard[1]: print(f"edgernn serve [ray {i}/{n}]: {m}", flush=True),
        )
        self.thread = threading.Thread(target=self._run, name="edgernn-serve", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = self.server.run()
        except Exception as e:  # surfaced by ready(); a restarted actor dies so that Ray tries again
            self.error = str(e)
            self.server.ready.set()
            if self.reconstructed:
                self.server.log(f"error: {e}; exiting so that Ray restarts this shard")
                time.sleep(1.0)
                os._exit(1)

    def ready(self, timeout: float) -> str | None:
        """Wait until subscribed and in sync (or failed); returns the error, or None once ready."""
        if not self.server.ready.wait(timeout):
            return f"shard {self.server.gw.shard[0]}/{self.server.gw.shard[1]} not ready after {timeout} s"
        return self.error

    def info(self) -> dict:
        """``pid``, ``shard``, ``reconstructed``, ``restored`` (devices), ``snapshots``, ``stats``."""
        s = self.server
        return {
            "pid": os.getpid(),
            "shard": list(s.gw.shard),
            "reconstructed": self.reconstructed,
            "restored": s.restored,
            "snapshots": s.snapshots,
            "stats": dict(s.gw.stats),
            "error": self.error,
        }

    def stop(self, timeout: float) -> dict:
        """Stop like SIGTERM stops the command (finish, snapshot, acknowledge, disconnect); its info."""
        self.server.stop.set()
        self.thread.join(timeout)
        info = self.info()
        info["stopped"] = not self.thread.is_alive()
        return info


class RayServe:
    """The N shard actors started by :func:`ray_serve`. ``actors[i]`` serves shard ``i/N``."""

    def __init__(self, actors: list, names: list[str]):
        self.actors = actors
        self.names = names

    def info(self, timeout: float = 60.0) -> list[dict]:
        """Each actor's :meth:`ShardActor.info` (waits while Ray restarts one)."""
        return [_call(a, "info", timeout) for a in self.actors]

    def pids(self) -> list[int]:
        """The worker process id of each shard's actor."""
        return [i["pid"] for i in self.info()]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until every shard is subscribed and in sync; :class:`EdgeRNNError` if one failed."""
        for name, a in zip(self.names, self.actors, strict=True):
            err = _call(a, "ready", timeout + 5, timeout)
            if err:
                raise EdgeRNNError(f"{name}: {err}")

    def stop(self, timeout: float = 60.0) -> list[dict]:
        """Stop every shard cleanly (last snapshot, acknowledgements), then end the actors."""
        import ray

        refs = [a.stop.remote(timeout) for a in self.actors]
        try:
            infos = ray.get(refs, timeout=timeout + 10)
        finally:
            for a in self.actors:
                ray.kill(a, no_restart=True)
        return infos

    def __enter__(self) -> RayServe:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _call(actor, method: str, timeout: float, *args):
    """``actor.method(*args)``, retried while Ray restarts the actor (up to ``timeout`` seconds)."""
    import ray
    from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

    end = time.monotonic() + timeout
    while True:
        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=max(1.0, end - time.monotonic()))
        except (ActorUnavailableError, GetTimeoutError) as e:
            if time.monotonic() >= end:
                raise EdgeRNNError(f"a shard actor did not answer within {timeout:.0f} s ({e})") from None
        except RayActorError as e:  # in flight when its process died: Ray restarts it, or it is dead
            if "creation task" in str(e) or time.monotonic() >= end:
                raise EdgeRNNError(f"a shard actor died: {_last_line(e)}") from None
        time.sleep(0.2)


def ray_serve(
    model_path: str,
    host: str,
    port: int,
    n: int,
    *,
    prefix: str = "edgernn",
    state_dir: str | None = None,
    idle_timeout: float | None = None,
    snapshot_every: int = 10,
    backend: str | None = None,
    max_restarts: int = -1,
    num_cpus: float = 1.0,
    ready_timeout: float = 300.0,
) -> RayServe:
    """Serve ``model_path`` (a ``.ernn`` file) through the broker ``host:port`` with N Ray actors.

    Actor ``i`` (named :func:`actor_name`, namespace ``edgernn-serve``) serves shard ``i/n`` exactly like
    ``edgernn serve --shard i/n``; Ray restarts it up to ``max_restarts`` times (-1: always) when its
    process dies, and it continues from ``state_dir/shard-i-of-n.npz``. Uses the running Ray (call
    ``ray.init`` first to choose the cluster; otherwise a local one is started). ``model_path`` and
    ``state_dir`` must be reachable from every node that runs an actor. ``num_cpus``: Ray CPUs reserved
    per actor. Returns once every shard is ready; stop with :meth:`RayServe.stop`.
    """
    ray = require("ray", "ray")
    require("paho.mqtt.client", "serve")
    if not (isinstance(n, int) and n >= 1):
        raise EdgeRNNError(f"the number of Ray actors must be a positive integer, got {n!r}")
    model_path = os.path.abspath(model_path)
    if not os.path.isfile(model_path):
        raise EdgeRNNError(f"{model_path}: no such model file")
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    opts = {
        "prefix": prefix.rstrip("/"),
        "state_dir": state_dir,
        "idle_timeout": idle_timeout,
        "snapshot_every": snapshot_every,
        "backend": backend,
    }
    cls = ray.remote(ShardActor)
    actors, names = [], []
    try:
        for i in range(n):
            name = actor_name(opts["prefix"], (i, n))
            try:
                a = cls.options(
                    name=name,
                    namespace=NAMESPACE,
                    max_restarts=max_restarts,
                    max_task_retries=0,
                    num_cpus=num_cpus,
                ).remote(model_path, host, int(port), (i, n), opts)
            except ValueError as e:  # the name is taken
                raise EdgeRNNError(f"cannot start Ray actor {name}: {e}") from None
            actors.append(a)
            names.append(name)
        rs = RayServe(actors, names)
        rs.wait_ready(ready_timeout)
    except BaseException:
        for a in actors:
            ray.kill(a, no_restart=True)
        raise
    return rs
