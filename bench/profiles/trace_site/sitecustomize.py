"""Spawn tracer (bench/profiles/spawn.py puts this directory first on
$PYTHONPATH, so every process of the embedded circuit loads it): when
$BENCH_TRACE_DIR is set, each process appends timestamped events
(CLOCK_MONOTONIC, comparable across processes) to DIR/<pid>.log:

* every RPyC request sent (its handler), every reply sent, every request
  received; and the same for pycircuit's own messages (operation, and for
  ``call`` the method), which RPyC's ``_send`` never sees;
* the audit events os.fork, socket.connect and socket.bind.
"""

import os
import sys
import time

_DIR = os.environ.get("BENCH_TRACE_DIR")
if _DIR:
    _state = {"pid": None, "f": None}

    def _log(ev: str) -> None:
        pid = os.getpid()
        if _state["pid"] != pid:
            _state["pid"] = pid
            _state["f"] = open(os.path.join(_DIR, f"{pid}.log"), "a", buffering=1)
        _state["f"].write(f"{time.monotonic_ns()} {ev}\n")

    def _audit(ev, args):
        if ev == "os.fork":
            _log("fork")
        elif ev == "socket.connect":
            _log(f"connect {args[1]!r}")
        elif ev == "socket.bind":
            _log(f"bind {args[1]!r}")

    sys.addaudithook(_audit)

    import rpyc.core.consts as _C
    import rpyc.core.protocol as _P

    _HANDLERS = {getattr(_C, n): n[7:] for n in dir(_C) if n.startswith("HANDLE_")}

    def _endpoint() -> str:
        f = sys._getframe(2)
        what = ""
        while f is not None:
            code = f.f_code.co_name
            if code in ("invoke", "post") and "name" in f.f_locals and "self" in f.f_locals:
                what = f"{code} {f.f_locals['name']}"
            elif code == "call_remote" and "method" in f.f_locals:
                m = f.f_locals["method"]
                return (
                    f"call {m}"
                    if what == "invoke call"
                    else f"{what} (opening the connection for call {m})"
                )
            elif code == "_remote_method":
                return "(netref of an endpoint method)"
            f = f.f_back
        return what

    _send = _P.Connection._send
    _dispatch_request = _P.Connection._dispatch_request

    def send(self, msg, seq, args):
        if msg == _C.MSG_REQUEST:
            _log(f"req {_HANDLERS.get(args[0], args[0])} {_endpoint()}")
        else:
            _log("reply")
        return _send(self, msg, seq, args)

    def dispatch_request(self, seq, raw_args):
        _log(f"got {_HANDLERS.get(raw_args[0], raw_args[0])}")
        return _dispatch_request(self, seq, raw_args)

    _P.Connection._send = send
    _P.Connection._dispatch_request = dispatch_request

    # pycircuit's own messages inside RPyC frames (they bypass _send)
    try:
        from pycircuit.runtime import _link as _L, _wire as _W
    except ImportError:
        _L = None
    if _L is not None and hasattr(_L._Connection, "request"):

        def _what(op, body) -> str:
            name = _W.OP_NAMES.get(op, op)
            if op == _W.OP_CALL:
                try:
                    data = b"".join(body) if isinstance(body, tuple) else bytes(body)
                    return f"call {_W.decode_call(data).method}"
                except Exception:
                    return "call ?"
            return str(name)

        _request, _post, _serve = (
            _L._Connection.request,
            _L._Connection.post,
            _L._Connection._serve_request,
        )

        def request(self, op, body):
            _log(f"req {_what(op, body)}")
            return _request(self, op, body)

        def post(self, op, body):
            _log(f"req {_what(op, body)} (posted)")
            return _post(self, op, body)

        def serve_request(self, seq, op, body):
            _log(f"got {_what(op, body)}")
            try:
                return _serve(self, seq, op, body)
            finally:
                if seq:
                    _log("reply")

        _L._Connection.request = request
        _L._Connection.post = post
        _L._Connection._serve_request = serve_request
