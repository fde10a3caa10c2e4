"""Pyro5: a ``Daemon`` (the default thread-pool server) in another process,
one object exposing ``echo`` and ``size``; the client chooses the
serializer per proxy: msgpack, and Pyro5's default serpent. TCP_NODELAY at
both ends (``SOCK_NODELAY``). A Pyro5 proxy belongs to one thread, so each
concurrent caller thread has its own proxy (and connection). Pyro5 has no
asynchronous call API.

Run as a script, this is the server: it prints the object's URI, then
serves until its stdin closes.
"""

from __future__ import annotations

import os

if __name__ != "__main__":
    import Pyro5
    import Pyro5.api

    from common import start_script, stop_popen
    from peers import CallPeer

    Pyro5.config.SOCK_NODELAY = True

    class _Pyro(CallPeer):
        serializer = "?"

        def __init__(self):
            self.proc = None
            self.proxies = []

        def start(self, tracker):
            env = dict(os.environ, PYRO_SOCK_NODELAY="1")
            self.proc, self.uri = start_script(
                "pyro_peer.py", tracker=tracker, what="Pyro5 daemon", env=env
            )
            self.server_pid = self.proc.pid
            self.proxy = self._proxy()
            self.proxy._pyroBind()

        def _proxy(self):
            p = Pyro5.api.Proxy(self.uri)
            p._pyroSerializer = self.serializer
            self.proxies.append(p)
            return p

        def caller(self):
            return self.proxy.echo

        def thread_caller(self):
            p = self._proxy()
            p._pyroBind()
            return p.echo, p._pyroRelease

        def value_echo(self, v):
            return _bytes(self.proxy.echo(v))

        def value_send(self, v):
            return self.proxy.size(v)

        def close(self):
            for p in self.proxies:
                try:
                    p._pyroClaimOwnership()
                    p._pyroRelease()
                except Exception:
                    pass
            stop_popen(self.proc)

    class PyroMsgpack(_Pyro):
        name = "Pyro5 msgpack"
        serializer = "msgpack"

    class PyroSerpent(_Pyro):
        name = "Pyro5 serpent"
        serializer = "serpent"

        def value_note(self, value):
            return "bytes as base64 text" if isinstance(value, bytes) else ""

    def idle_daemon(tracker):
        """The footprint peer: a fresh daemon serving one object, called
        once. Returns (pid, stop)."""
        peer = PyroMsgpack()
        peer.start(tracker)
        peer.value_send(b"x")
        return peer.proc.pid, peer.close


def _bytes(x):
    """serpent delivers bytes as {"data": base64 text, "encoding": "base64"}."""
    if isinstance(x, dict) and x.get("encoding") == "base64":
        import serpent

        return serpent.tobytes(x)
    return x


def serve() -> None:
    import Pyro5.api
    from bench_helpers import ready  # bench/ is on the path of peer processes

    @Pyro5.api.expose
    class Echo:
        def echo(self, x):
            return _bytes(x)

        def size(self, x):
            return len(_bytes(x))

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Echo(), "bench.echo")
    ready(uri)
    daemon.requestLoop()


if __name__ == "__main__":
    serve()
