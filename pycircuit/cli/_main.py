"""Argument parsing and dispatch of ``pycircuit`` subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ..errors import CircuitError
from ..runtime._addr import WorkerAddr, is_loopback
from . import _commands as C
from ._commands import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like argparse but without the usage block
        raise UsageError(message)


def _split_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"bad address {text!r} (want HOST:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)


def cmd_start(args) -> int:
    from ..server._server import Server, ServerConfig

    if args.addr:
        host, port = _split_addr(args.addr)
    elif args.iface:
        from ..server._discovery import interface_address

        host, port = interface_address(args.iface), 0
    else:
        host, port = "127.0.0.1", 0
    if args.join:
        WorkerAddr.parse(args.join)  # a typo fails now, not after start-up
    key_path = args.key or os.environ.get("CIRCUIT_KEY") or None
    key = None
    if key_path:
        from ..runtime._tls import load_key

        key = load_key(key_path)
        _warn_if_readable(key_path)
    if key is None and not is_loopback(host) and not args.insecure:
        raise UsageError(
            f"refusing to listen on non-loopback address {host} without a key (use --key, or --insecure)"
        )
    lock = _lock_var(args.var) if args.var else None
    # Signals are caught from here on: a TERM right after the URL is printed
    # must still stop the server properly (it removes its temporary files).
    early = threading.Event()
    _stop_on_signals(early)
    server = Server(
        ServerConfig(
            host=host,
            port=port,
            var_dir=args.var,
            tls=key,
            docker=args.docker,
            spares=max(0, args.spares),
        )
    )
    stop = server.stopped
    _stop_on_signals(stop)
    if early.is_set():
        stop.set()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    if not args.embedded:
        print(f"pycircuit: server {server.id} at {server.url}", file=sys.stderr)
    if args.join:
        try:
            server.cluster.join(args.join)
        except CircuitError as e:
            print(
                f"pycircuit: cannot join {args.join} ({_one_line(e)}); running alone",
                file=sys.stderr,
            )
    if args.discover:
        server.start_discovery()
    if args.embedded:
        # Owned by a client program: go when it goes (our stdin closes).
        def watch_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:  # our owner's end is gone all the same: stop, as on EOF
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    server.close()
    del lock
    return 0


def _lock_var(path: str):
    """One server per --var directory: hold an exclusive lock file."""
    import fcntl

    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, "lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise CircuitError(f"cannot obtain lock on {path}: another server is using it") from None
    return f


def cmd_keygen(args) -> int:
    from ..runtime._tls import keygen

    text = keygen()
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:  # readable by its owner only, and never over an existing key
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{args.out} exists; not overwriting a key") from None
    except OSError as e:
        raise UsageError(f"cannot create {args.out}: {e.strerror or e}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return 0


def _stop_on_signals(event: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: event.set())


def _warn_if_readable(path: str) -> None:
    """Whoever can read the key is a member of the circuit: say so when
    others than its owner can (as ssh does for private keys)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # it was just read: gone since, and then nobody else reads it either
        return
    if mode & 0o077:
        print(
            f"pycircuit: warning: key file {path} can be read by other users (chmod 600 {path})",
            file=sys.stderr,
        )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pycircuit", description="Run and debug Python across a cluster.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    s = sub.add_parser("start", help="run a server on this host")
    s.add_argument(
        "-a",
        "--addr",
        default=None,
        help="HOST:PORT to listen on (port 0 picks one; default 127.0.0.1:0)",
    )
    s.add_argument(
        "--if",
        dest="iface",
        metavar="IFACE",
        help="listen on this interface's address (when no -a)",
    )
    s.add_argument("-j", "--join", metavar="URL", help="join the circuit of this server")
    s.add_argument(
        "--discover",
        action="store_true",
        help="find and join other servers by multicast DNS on the server's own interface",
    )
    s.add_argument("--docker", action="store_true", help="enable docker elements")
    s.add_argument(
        "--spares",
        type=int,
        default=2,
        metavar="N",
        help="workers kept forked ahead of demand, for fast spawns (default 2)",
    )
    s.add_argument("--var", default=None, help="directory for worker output and state")
    s.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without a key"
    )
    s.add_argument(
        "--key",
        metavar="FILE",
        default=None,
        help="cluster key file (from `pycircuit keygen`; default $CIRCUIT_KEY): mutual TLS on every connection",
    )
    s.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_start)
    k = sub.add_parser(
        "keygen",
        help="make a new cluster key: printed, or written to a new file readable only by you",
    )
    k.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="write the key to FILE (created with mode 600; never overwritten)",
    )
    k.set_defaults(func=cmd_keygen)
    _client_commands(sub)
    _web_command(sub)
    return p


def _client_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dial-in (else $CIRCUIT, a file holding a URL)")
    g.add_argument("-d", "--dial", metavar="URL", help="a server's circuit URL")
    # A plain flag: an optional IFACE after it would swallow the path in `ls --discover /`.
    g.add_argument(
        "--discover",
        action="store_true",
        help="find a server by multicast DNS on $CIRCUIT_DISCOVER, else on loopback (lo)",
    )
    g.add_argument(
        "--discover-if",
        metavar="IFACE",
        help="find a server by multicast DNS on IFACE (a name like eth0, or its IPv4 address)",
    )
    g.add_argument("--key", metavar="FILE", help="the cluster key (default: $CIRCUIT_KEY)")


# name, handler, help, positional arguments (dest, nargs, metavar)
_COMMANDS = [
    ("ls", C.cmd_ls, "list anchors (a final /... recurses)", [("paths", "*", "PATH")]),
    ("peek", C.cmd_peek, "print an element's state as JSON", [("path", None, "PATH")]),
    ("scrub", C.cmd_scrub, "remove the element at PATH", [("path", None, "PATH")]),
    ("mkproc", C.cmd_mkproc, "run a process (JSON Cmd on stdin)", [("path", None, "PATH")]),
    ("signal", C.cmd_signal, "signal a process", [("signal", None, "SIG"), ("path", None, "PATH")]),
    ("wait", C.cmd_wait, "wait for a process to finish", [("path", None, "PATH")]),
    ("waitall", C.cmd_waitall, "wait for the processes whose paths are on stdin", []),
    (
        "stdin",
        C.cmd_stdin,
        "copy stdin to a process's stdin, then close it",
        [("path", None, "PATH")],
    ),
    ("stdout", C.cmd_stdout, "copy a process's stdout here", [("path", None, "PATH")]),
    ("stderr", C.cmd_stderr, "copy a process's stderr here", [("path", None, "PATH")]),
    ("mkchan", C.cmd_mkchan, "make a channel", [("path", None, "PATH"), ("cap", None, "CAP")]),
    ("send", C.cmd_send, "send stdin as one message", [("path", None, "PATH")]),
    ("recv", C.cmd_recv, "receive a message or membership event", [("path", None, "PATH")]),
    ("close", C.cmd_close, "close a channel", [("path", None, "PATH")]),
    ("mk@join", C.cmd_mkjoin, "subscribe to servers joining", [("path", None, "PATH")]),
    ("mk@leave", C.cmd_mkleave, "subscribe to servers leaving", [("path", None, "PATH")]),
    (
        "join",
        C.cmd_join,
        "make SERVER join the circuit of URL",
        [("server", None, "SERVER"), ("url", None, "URL")],
    ),
    ("suicide", C.cmd_suicide, "stop a server", [("server", None, "SERVER")]),
    (
        "mkdns",
        C.cmd_mkdns,
        "run a nameserver (prints its address)",
        [("path", None, "PATH"), ("addr", "?", "ADDR")],
    ),
    (
        "set",
        C.cmd_set,
        "add a DNS record (zone-file syntax)",
        [("path", None, "PATH"), ("rr", "+", "RR")],
    ),
    (
        "unset",
        C.cmd_unset,
        "remove a name's DNS records",
        [("path", None, "PATH"), ("name", None, "NAME")],
    ),
    ("mkdkr", C.cmd_mkdkr, "run a docker container (JSON on stdin)", [("path", None, "PATH")]),
    ("stk", C.cmd_stk, "stacks of a server or worker", [("target", None, "PATH|URL")]),
    (
        "cpu",
        C.cmd_cpu,
        "CPU profile (collapsed stacks)",
        [("target", None, "PATH|URL"), ("seconds", None, "SECONDS")],
    ),
    ("mem", C.cmd_mem, "memory statistics and heap profile", [("target", None, "PATH|URL")]),
    ("kill", C.cmd_kill, "kill workers", [("targets", "+", "PATH|URL")]),
]


def _client_commands(sub) -> None:
    for name, fn, help_, positionals in _COMMANDS:
        p = sub.add_parser(name, help=help_)
        for dest, nargs, metavar in positionals:
            p.add_argument(dest, nargs=nargs, metavar=metavar)
        if name == "ls":
            p.add_argument("-l", "--long", action="store_true", help="show element kinds")
            p.add_argument("--depth", action="store_true", help="children before parents")
        if name in ("mkproc", "mkdkr"):
            p.add_argument(
                "--scrub", action="store_true", help="remove the element when the process is done"
            )
        _client_opts(p)
        p.set_defaults(func=_with_client(fn))


def _with_client(fn):
    def run(args) -> int:
        c = _dial_in(args)
        try:
            return fn(c, args)
        finally:
            c.close()

    return run


def _dial_in(args):
    """--dial, then --discover-if/--discover/$CIRCUIT_DISCOVER, then $CIRCUIT;
    never an embedded server (a command-line client needs a real circuit)."""
    from .._client import connect

    key = args.key or os.environ.get("CIRCUIT_KEY") or None
    if args.dial:
        return connect(args.dial, key=key)
    env_iface = os.environ.get("CIRCUIT_DISCOVER")
    if args.discover_if or args.discover or env_iface is not None:
        return connect(discover=args.discover_if or env_iface or "lo", key=key)
    if os.environ.get("CIRCUIT"):
        return connect(key=key)
    raise UsageError(
        "no circuit to dial: use -d URL or --discover, or set $CIRCUIT to a file holding a URL"
    )


def _web_command(sub) -> None:
    w = sub.add_parser(
        "web", help="serve a live web view of the circuit and /metrics (prints its URL)"
    )
    w.add_argument("-a", "--addr", default=None, help="HOST:PORT to serve on (default 127.0.0.1:0)")
    w.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without a key (plain HTTP)",
    )
    w.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between reads of the circuit while a page is open (default 1)",
    )
    _client_opts(w)
    w.set_defaults(func=cmd_web)


def cmd_web(args) -> int:
    host, port = _split_addr(args.addr) if args.addr else ("127.0.0.1", 0)
    key = args.key or os.environ.get("CIRCUIT_KEY") or None
    if not is_loopback(host):
        if key is None and not args.insecure:
            raise UsageError(
                f"refusing to serve the web view on non-loopback address {host} without a key "
                "(use --key: HTTPS with a certificate the cluster key signs; or --insecure)"
            )
        print(
            f"pycircuit: warning: the web view is reachable beyond this host (on {host}) "
            f"({'HTTPS, cluster key' if key else 'plain HTTP, --insecure'}); its token is its only guard",
            file=sys.stderr,
        )
    if not args.poll > 0:
        raise UsageError("--poll is a positive number of seconds")
    try:  # the web stack loads only for this command
        from ..web import WebConfig, serve
    except ImportError as e:
        raise UsageError(
            f"pycircuit web needs the web extra: pip install 'pycircuit[web]' ({e})"
        ) from None
    c = _dial_in(args)

    def announce(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        print(
            f"pycircuit: web view of {c.url} (open the URL above; it carries the access token)",
            file=sys.stderr,
        )

    try:
        serve(
            c,
            WebConfig(
                host=host,
                port=port,
                poll_every=args.poll,
                key_path=key if not is_loopback(host) else None,
            ),
            announce,
        )
    finally:
        c.close()
    return 0


def _tool(cmd: str):
    def entry() -> int:
        return main([cmd] + sys.argv[1:])

    return entry


main_4ls = _tool("ls")
main_4stk = _tool("stk")
main_4cpu = _tool("cpu")
main_4kill = _tool("kill")


class _OneLine(logging.Formatter):
    """``pycircuit: message (Cause: text)``: one line per record; the full
    traceback only with $PYCIRCUIT_DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        lines = record.getMessage().strip().splitlines()
        text = f"pycircuit: {lines[0] if lines else record.levelname.lower()}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            if os.environ.get("PYCIRCUIT_DEBUG"):
                return text + "\n" + self.formatException(record.exc_info)
            cause = str(exc).strip().splitlines()
            text += f" ({type(exc).__name__}{': ' + cause[0] if cause else ''})"
        return text


def _setup_logging() -> None:
    """What the library logs reaches the terminal here, and only here:
    warnings and worse from ``pycircuit.*``, one line each on stderr."""
    log = logging.getLogger("pycircuit")
    if any(getattr(h, "_pycircuit_cli", False) for h in log.handlers):
        return
    h = logging.StreamHandler(sys.stderr)
    h._pycircuit_cli = True
    h.setFormatter(_OneLine())
    h.setLevel(logging.DEBUG if os.environ.get("PYCIRCUIT_DEBUG") else logging.WARNING)
    log.addHandler(h)
    log.setLevel(min(log.getEffectiveLevel(), h.level))


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("missing command (try: pycircuit --help)")
        return args.func(args)
    except CircuitError as e:
        print(f"pycircuit: {_one_line(e)}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:  # Ctrl-C is the user's choice: no message, the shell's status
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nobody left to tell
        return 1
    except Exception as e:  # a bug, or an OS error: still one line (PYCIRCUIT_DEBUG=1 shows all)
        if os.environ.get("PYCIRCUIT_DEBUG"):
            raise
        print(f"pycircuit: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
