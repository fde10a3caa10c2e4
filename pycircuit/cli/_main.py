"""Argument parsing and dispatch of ``pycircuit`` subcommands."""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading

from ..errors import CircuitError


class UsageError(CircuitError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like argparse but without the usage block
        raise UsageError(message)


def _split_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"bad address {text!r} (want HOST:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_start(args) -> int:
    from ..server._server import Server, ServerConfig

    host, port = _split_addr(args.addr)
    if not _is_loopback(host) and not args.insecure:
        raise UsageError(f"refusing to listen on non-loopback address {host} without a key (use --key, or --insecure)")
    server = Server(ServerConfig(host=host, port=port, var_dir=args.var))
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    stop = server.stopped
    if args.embedded:
        # Owned by a client program: go when it goes (our stdin closes).
        def watch_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pycircuit", description="Run and debug Python across a cluster.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    s = sub.add_parser("start", help="run a server on this host")
    s.add_argument("-a", "--addr", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0 picks one)")
    s.add_argument("--var", default=None, help="directory for worker output and state")
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a key")
    s.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_start)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            raise UsageError("missing command (try: pycircuit --help)")
        return args.func(args)
    except CircuitError as e:
        print(f"pycircuit: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        return 130
