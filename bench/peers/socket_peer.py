"""The floor (information only): no framework at all. A plain TCP socket
on loopback (TCP_NODELAY) to a thread in another process; each message is
an 8-byte length and a pickle, both ways. A call is one ``sendall`` and
one exact read on each side, so this is about the least any Python RPC can
do for the same call. Concurrent caller threads each open their own
connection.

Run as a script, this is the server: it prints its port, then serves until
its stdin closes.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading

HEAD = struct.Struct("!Q")
PROTO = pickle.HIGHEST_PROTOCOL


def _recv_exact(sock, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise EOFError
        got += k
    return bytes(buf) if n < 4096 else buf


def _send(sock, obj) -> None:
    blob = pickle.dumps(obj, PROTO)
    sock.sendall(HEAD.pack(len(blob)) + blob if len(blob) < 65536 else HEAD.pack(len(blob)))
    if len(blob) >= 65536:
        sock.sendall(blob)


def _recv(sock):
    (n,) = HEAD.unpack(_recv_exact(sock, HEAD.size))
    return pickle.loads(_recv_exact(sock, n))


if __name__ != "__main__":
    from common import LOOPBACK, start_script, stop_popen
    from peers import CallPeer

    class PlainSocket(CallPeer):
        name = "(floor) plain socket + pickle"
        info = True
        has_async = True

        def __init__(self):
            self.proc = None
            self.socks = []

        def start(self, tracker):
            self.proc, line = start_script(
                "socket_peer.py", tracker=tracker, what="plain socket server"
            )
            self.port = int(line)
            self.server_pid = self.proc.pid
            self.sock = self._connect()

        def _connect(self):
            s = socket.create_connection((LOOPBACK, self.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(s)
            return s

        def _call(self, sock, op, v):
            _send(sock, (op, v))
            return _recv(sock)

        def caller(self):
            sock, call = self.sock, self._call
            return lambda x: call(sock, "echo", x)

        def thread_caller(self):
            sock = self._connect()
            return (lambda x: self._call(sock, "echo", x)), sock.close

        def async_calls(self, n, window):
            sock = self.sock
            sent = got = 0
            while got < n:
                while sent < n and sent - got < window:
                    _send(sock, ("echo", sent))
                    sent += 1
                _recv(sock)
                got += 1

        def value_echo(self, v):
            return self._call(self.sock, "echo", v)

        def value_send(self, v):
            return self._call(self.sock, "size", v)

        def close(self):
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
            stop_popen(self.proc)


def _serve_conn(conn) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            op, v = _recv(conn)
            _send(conn, v if op == "echo" else len(v))
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def serve() -> None:
    from bench_helpers import ready  # bench/ is on the path of peer processes

    srv = socket.create_server(("127.0.0.1", 0))
    ready(srv.getsockname()[1])
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_serve_conn, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve()
