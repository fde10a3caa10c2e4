"""Argument parsing and dispatch of ``pycircuit`` subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any
from collections.abc import Callable

from ..errors import CircuitError
from ._util import UsageError, dial_in, one_line


class _Parser(argparse.ArgumentParser):
    def error(
        self, message: str
    ) -> Any:  # one line, exit 2, like argparse but without the usage block
        raise UsageError(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, that command alone: all one
    run needs, and each subparser costs a few gettext look-ups on disk."""
    p = _Parser(prog="pycircuit", description="Run and debug Python across a cluster.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("start"):
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
            help="workers kept forked ahead of demand, for fast spawns (default 2; more, up"
            " to 16, while spawns come in bursts; 0: none)",
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
        s.set_defaults(func=_lazy("_start", "cmd_start"))
    if wanted("keygen"):
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
        k.set_defaults(func=_lazy("_start", "cmd_keygen"))
    _client_commands(sub, wanted)
    if wanted("web"):
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


# name, handler in _commands, help, positional arguments (dest, nargs, metavar)
_COMMANDS: list[tuple[str, str, str, list[tuple[str, str | None, str]]]] = [
    ("ls", "cmd_ls", "list anchors (a final /... recurses)", [("paths", "*", "PATH")]),
    ("peek", "cmd_peek", "print an element's state as JSON", [("path", None, "PATH")]),
    ("scrub", "cmd_scrub", "remove the element at PATH", [("path", None, "PATH")]),
    ("mkproc", "cmd_mkproc", "run a process (JSON Cmd on stdin)", [("path", None, "PATH")]),
    ("signal", "cmd_signal", "signal a process", [("signal", None, "SIG"), ("path", None, "PATH")]),
    ("wait", "cmd_wait", "wait for a process to finish", [("path", None, "PATH")]),
    ("waitall", "cmd_waitall", "wait for the processes whose paths are on stdin", []),
    (
        "stdin",
        "cmd_stdin",
        "copy stdin to a process's stdin, then close it",
        [("path", None, "PATH")],
    ),
    ("stdout", "cmd_stdout", "copy a process's stdout here", [("path", None, "PATH")]),
    ("stderr", "cmd_stderr", "copy a process's stderr here", [("path", None, "PATH")]),
    ("mkchan", "cmd_mkchan", "make a channel", [("path", None, "PATH"), ("cap", None, "CAP")]),
    ("send", "cmd_send", "send stdin as one message", [("path", None, "PATH")]),
    ("recv", "cmd_recv", "receive a message or membership event", [("path", None, "PATH")]),
    ("close", "cmd_close", "close a channel", [("path", None, "PATH")]),
    ("mk@join", "cmd_mkjoin", "subscribe to servers joining", [("path", None, "PATH")]),
    ("mk@leave", "cmd_mkleave", "subscribe to servers leaving", [("path", None, "PATH")]),
    (
        "join",
        "cmd_join",
        "make SERVER join the circuit of URL",
        [("server", None, "SERVER"), ("url", None, "URL")],
    ),
    ("suicide", "cmd_suicide", "stop a server", [("server", None, "SERVER")]),
    (
        "mkdns",
        "cmd_mkdns",
        "run a nameserver (prints its address)",
        [("path", None, "PATH"), ("addr", "?", "ADDR")],
    ),
    (
        "set",
        "cmd_set",
        "add a DNS record (zone-file syntax)",
        [("path", None, "PATH"), ("rr", "+", "RR")],
    ),
    (
        "unset",
        "cmd_unset",
        "remove a name's DNS records",
        [("path", None, "PATH"), ("name", None, "NAME")],
    ),
    ("mkdkr", "cmd_mkdkr", "run a docker container (JSON on stdin)", [("path", None, "PATH")]),
    ("stk", "cmd_stk", "stacks of a server or worker", [("target", None, "PATH|URL")]),
    (
        "cpu",
        "cmd_cpu",
        "CPU profile (collapsed stacks)",
        [("target", None, "PATH|URL"), ("seconds", None, "SECONDS")],
    ),
    ("mem", "cmd_mem", "memory statistics and heap profile", [("target", None, "PATH|URL")]),
    ("kill", "cmd_kill", "kill workers", [("targets", "+", "PATH|URL")]),
]


def _client_commands(sub: Any, wanted: Callable[[str], bool]) -> None:
    for name, fn, help_, positionals in _COMMANDS:
        if not wanted(name):
            continue
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=_with_client(fn))
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


_NAMES = frozenset(["start", "keygen", "web"] + [c[0] for c in _COMMANDS])


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler imported when its command runs: each command loads only
    what it needs (``ls`` no server, ``start`` no client)."""

    def run(args: argparse.Namespace) -> int:
        fn: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f".{module}", __package__), name
        )
        return fn(args)

    return run


def _with_client(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        fn = getattr(importlib.import_module("._commands", __package__), name)
        c = dial_in(args)
        try:
            result: int = fn(c, args)
            return result
        finally:
            c.close()

    return run


def _web_command(sub: Any) -> None:
    w = sub.add_parser(
        "web", help="serve a live web view of the circuit and /metrics (prints its URL)"
    )
    w.set_defaults(func=_lazy("_web", "cmd_web"))
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


def _tool(cmd: str) -> Callable[[], int]:
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
            if os.environ.get("PYCIRCUIT_DEBUG") and record.exc_info:
                return text + "\n" + self.formatException(record.exc_info)
            cause = str(exc).strip().splitlines()
            text += f" ({type(exc).__name__}{': ' + cause[0] if cause else ''})"
        return text


class _CliHandler(logging.StreamHandler):
    """The one handler the command line puts on the ``pycircuit`` logger."""


def _setup_logging() -> None:
    """What the library logs reaches the terminal here, and only here:
    warnings and worse from ``pycircuit.*``, one line each on stderr."""
    log = logging.getLogger("pycircuit")
    if any(isinstance(h, _CliHandler) for h in log.handlers):
        return
    h = _CliHandler(sys.stderr)
    h.setFormatter(_OneLine())
    h.setLevel(logging.DEBUG if os.environ.get("PYCIRCUIT_DEBUG") else logging.WARNING)
    log.addHandler(h)
    log.setLevel(min(log.getEffectiveLevel(), h.level))


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command comes first; anything else (--help, a typo) gets the whole parser.
    parser = build_parser(argv[0] if argv and argv[0] in _NAMES else None)
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("missing command (try: pycircuit --help)")
        return args.func(args)
    except CircuitError as e:
        print(f"pycircuit: {one_line(e)}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:  # Ctrl-C is the user's choice: no message, the shell's status
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nobody left to tell
        return 1
    except Exception as e:  # a bug, or an OS error: still one line (PYCIRCUIT_DEBUG=1 shows all)
        if os.environ.get("PYCIRCUIT_DEBUG"):
            raise
        print(f"pycircuit: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1
