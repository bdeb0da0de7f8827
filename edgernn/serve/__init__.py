"""``edgernn serve``: one model run on many devices' sample streams arriving over MQTT.

:mod:`.gateway` keeps every device's recurrent state in one :class:`~edgernn.Streams` block and steps a
tick's samples in one batched kernel call (transport-free, so it is tested on its own); :mod:`.snapshot`
writes its state atomically; :mod:`.mqtt` connects it to a broker (the ``serve`` extra: paho-mqtt, imported
there only); :func:`ray_serve` (:mod:`.onray`, the ``ray`` extra, imported there only) runs N shards as
Ray actors. The protocol, the shards and the crash guarantees are in docs/SERVE.md.
"""

from __future__ import annotations

from .gateway import Gateway, shard_of
from .onray import RayServe, ray_serve

__all__ = ["Gateway", "RayServe", "ray_serve", "shard_of"]
