"""Ray, only if it is importable (it is not a dependency of the suite): a
local ``ray.init`` with an actor serving ``echo``/``size``; calls are
``ray.get(actor.echo.remote(x))``, the asynchronous API is the
``ObjectRef`` itself. Spawn to first result is a new actor answering its
first call. When Ray cannot be imported the table says so.
"""

from __future__ import annotations

import importlib.util

from common import clock
from peers import CallPeer


def unavailable() -> str:
    if importlib.util.find_spec("ray") is None:
        return "skipped: Ray is not importable (pip install ray to include it)"
    return ""


def _init():
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=2,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return ray


def _actor_class():
    ray = _init()

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, x):
            return x

        def size(self, x):
            return len(x)

        def one(self):
            return 1

    return Echo


class RayActor(CallPeer):
    name = "Ray actor"
    has_async = True

    def __init__(self):
        self.actor = None

    def start(self, tracker):
        self.ray = _init()
        self.actor = _actor_class().remote()
        self.ray.get(self.actor.echo.remote(0))
        tracker.remember_children()

    def caller(self):
        get, remote = self.ray.get, self.actor.echo.remote
        return lambda x: get(remote(x))

    def async_calls(self, n, window):
        remote, get = self.actor.echo.remote, self.ray.get
        pending = []
        for i in range(n):
            if len(pending) >= window:
                get(pending.pop(0))
            pending.append(remote(i))
        get(pending)

    def value_echo(self, v):
        return self.ray.get(self.actor.echo.remote(v))

    def value_send(self, v):
        return self.ray.get(self.actor.size.remote(v))

    def close(self):
        if self.actor is not None:
            self.ray.kill(self.actor)
            self.ray.shutdown()


def spawn_once() -> int:
    ray = _init()
    cls = _actor_class()
    t0 = clock()
    a = cls.remote()
    r = ray.get(a.one.remote())
    t = clock() - t0
    ray.kill(a)
    if r != 1:
        raise AssertionError("Ray actor returned something else")
    return t


def shutdown() -> None:
    if importlib.util.find_spec("ray") is not None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
