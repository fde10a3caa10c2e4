"""Raw RPyC: a ``rpyc.ThreadedServer`` in another process, called through a
cached bound method (``echo = conn.root.echo``: one ``HANDLE_CALL`` request
per call, the same kind of request a pycircuit cross-call sends).

Tuned like pycircuit's own links: TCP_NODELAY at both ends and RPyC's zlib
compression of frames over 3000 bytes turned off at both ends (it only
matters for the by-value rows). A list cannot go by value through RPyC (it
would travel as a netref), so the by-value rows pickle it: the client
pickles, the server unpickles and re-pickles (it holds the value, as the
other peers do), the client unpickles. Bytes go through brine as they are.

Run as a script, this is the server: it prints its port, then serves until
its stdin closes.
"""

from __future__ import annotations

import pickle
import socket

if __name__ != "__main__":
    import rpyc

    from common import LOOPBACK, start_script, stop_popen
    from peers import CallPeer

    class RawRpyc(CallPeer):
        name = "raw RPyC (cached method)"
        has_async = True

        def value_note(self, value):
            return "" if isinstance(value, bytes) else "pickled by hand, not by RPyC"

        def __init__(self):
            self.proc = None
            self.conns = []

        def start(self, tracker):
            self.proc, line = start_script("rpyc_peer.py", tracker=tracker, what="raw RPyC server")
            self.port = int(line)
            self.server_pid = self.proc.pid
            self.conn = self._connect()
            root = self.conn.root
            self.echo = root.echo
            self.echo_pickle = root.echo_pickle
            self.size_pickle = root.size_pickle
            self.size = root.size

        def _connect(self):
            conn = rpyc.connect(LOOPBACK, self.port, config={"sync_request_timeout": None})
            conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn._channel.compress = False
            conn.root.no_compression()
            self.conns.append(conn)
            return conn

        def caller(self):
            return self.echo  # shared by the threads: one connection, as pycircuit has

        has_connect = True

        def connect_calls(self, n):
            from common import clock

            out = []
            for i in range(n):
                t0 = clock()
                conn = rpyc.connect(LOOPBACK, self.port, config={"sync_request_timeout": None})
                conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if conn.root.echo(i) != i:
                    raise AssertionError("raw RPyC echo on a new connection")
                out.append(clock() - t0)
                conn.close()
            return out

        def async_calls(self, n, window):
            aecho = rpyc.async_(self.echo)
            pending = []
            for i in range(n):
                if len(pending) >= window:
                    pending.pop(0).wait()
                pending.append(aecho(i))
            for r in pending:
                r.wait()

        def value_echo(self, v):
            if isinstance(v, bytes):
                return self.echo(v)
            return pickle.loads(self.echo_pickle(pickle.dumps(v, pickle.HIGHEST_PROTOCOL)))

        def value_send(self, v):
            if isinstance(v, bytes):
                return self.size(v)
            return self.size_pickle(pickle.dumps(v, pickle.HIGHEST_PROTOCOL))

        def close(self):
            for c in self.conns:
                try:
                    c.close()
                except Exception:
                    pass
            stop_popen(self.proc)

    def idle_server(tracker):
        """The footprint peer (information): a fresh ThreadedServer with one
        connection, called once. Returns (pid, stop)."""
        peer = RawRpyc()
        peer.start(tracker)
        peer.value_send(b"x")
        return peer.proc.pid, peer.close


def serve() -> None:
    import rpyc
    from bench_helpers import ready  # bench/ is on the path of peer processes
    from rpyc.utils.server import ThreadedServer

    class EchoService(rpyc.Service):
        # ThreadedServer makes one instance per connection.
        def on_connect(self, conn):
            self._conn = conn
            try:
                conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (AttributeError, OSError):
                pass

        def exposed_echo(self, x):
            return x

        def exposed_size(self, x):
            return len(x)

        def exposed_echo_pickle(self, blob):
            return pickle.dumps(pickle.loads(blob), pickle.HIGHEST_PROTOCOL)

        def exposed_size_pickle(self, blob):
            return len(pickle.loads(blob))

        def exposed_no_compression(self):
            self._conn._channel.compress = False

    server = ThreadedServer(
        EchoService, hostname="127.0.0.1", port=0, protocol_config={"sync_request_timeout": None}
    )
    # Listen before telling the port (start() would listen only later).
    server._listen()
    ready(server.port)
    server.start()


if __name__ == "__main__":
    serve()
