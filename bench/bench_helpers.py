"""Helpers for bench_core.py.

pycircuit workers import this module by name (bench_core.py puts this
directory on sys.path and $PYTHONPATH before it connects, and the embedded
server hands its sys.path on to its workers), so the functions below are
pickled by reference, not sent by value with dill.

Run as a script, it is the raw-RPyC peer: a ``rpyc.ThreadedServer`` on
127.0.0.1 with an ``exposed_echo``; it prints its port on stdout and exits
when its stdin closes (or on SIGTERM).
"""
from __future__ import annotations

import os
import pickle
import socket
import sys
import threading


# -- pycircuit side ---------------------------------------------------------
class Echo:
    """The object served by the daemon worker."""

    def echo(self, x):
        return x


def echo_daemon():
    """Worker function: stay alive (until killed) and return a reference to
    an Echo living in this worker."""
    import pycircuit

    pycircuit.run_in_back(threading.Event().wait)
    return pycircuit.ref(Echo())


def where():
    """The pycircuit a worker runs (to check it is the client's)."""
    import pycircuit

    return os.path.abspath(pycircuit.__file__)


def one():
    """The trivial spawned function."""
    return 1


# -- multiprocessing peer ---------------------------------------------------
def mp_child(conn):
    conn.send(1)
    conn.close()


# -- raw RPyC peer ----------------------------------------------------------
def rpyc_server_main() -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class EchoService(rpyc.Service):
        # ThreadedServer makes one instance per connection.
        def on_connect(self, conn):
            self._conn = conn
            # Same socket tuning as the client side: no Nagle on either end.
            try:
                conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (AttributeError, OSError):
                pass

        def exposed_echo(self, x):
            return x

        def exposed_echo_pickle(self, blob):
            """The same work as a pycircuit echo: unpickle the argument,
            pickle the result."""
            return pickle.dumps(pickle.loads(blob), pickle.HIGHEST_PROTOCOL)

        def exposed_no_compression(self):
            """For the informational row only: turn off RPyC's default zlib
            compression of frames > 3000 bytes on this connection (the
            client turns off its own side)."""
            self._conn._channel.compress = False

    server = ThreadedServer(
        EchoService, hostname="127.0.0.1", port=0,
        protocol_config={"sync_request_timeout": None},
    )
    # Listen before telling the port: start() only listens when it runs
    # (and calling _listen() again there is a no-op), so a client that
    # connects as soon as it reads the port is never refused.
    server._listen()
    sys.stdout.write(f"{server.port}\n")
    sys.stdout.flush()

    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)  # our owner is gone

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.start()


if __name__ == "__main__":
    rpyc_server_main()
