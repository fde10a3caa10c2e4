"""``pycircuit start`` (a server on this host) and ``pycircuit keygen``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING

from ..errors import CircuitError
from ..runtime._addr import WorkerAddr, is_loopback
from ._util import UsageError, key_path, one_line, split_addr

if TYPE_CHECKING:
    from ..server._spares import SpareConfig
    from ..spawn._orders import ZygoteProc

__all__ = ["cmd_start", "cmd_keygen"]


def cmd_start(args: argparse.Namespace) -> int:
    # The zygote (it forks the workers) is a fork of this process, made once
    # the runtime both need is imported and before any thread starts: it
    # shares this interpreter's start-up and those imports, and does the
    # rest of its own while the server does the rest of its.
    from ..runtime import _runtime  # noqa: F401
    from ..spawn._orders import fork_zygote, start_zygote

    zygote = fork_zygote() or start_zygote()
    try:
        return _start(args, zygote)
    finally:
        zygote.hang_up()  # if the server never adopted it, the zygote exits; else a no-op


def _start(args: argparse.Namespace, zygote: ZygoteProc) -> int:
    from ..server._server import Server, ServerConfig

    if args.addr:
        host, port = split_addr(args.addr)
    elif args.iface:
        from ..server._discovery import interface_address

        host, port = interface_address(args.iface), 0
    else:
        host, port = "127.0.0.1", 0
    if args.join:
        WorkerAddr.parse(args.join)  # a typo fails now, not after start-up
    path = key_path(args.key)
    key = None
    if path:
        from ..runtime._tls import load_key

        key = load_key(path)
        _warn_if_readable(path)
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
            spares=_spares(args.spares),
        ),
        zygote=zygote,
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
                f"pycircuit: cannot join {args.join} ({one_line(e)}); running alone",
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
    # With a timeout: a signal the kernel hands to another thread only sets
    # a flag, and Python runs its handler (setting ``stop``) when the main
    # thread next wakes; a wait without one may never wake (seen: a TERM
    # that did not stop the server until a second one came).
    while not stop.wait(1.0):
        pass
    server.close()
    del lock
    return 0


def _lock_var(path: str) -> IO[str]:
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


def cmd_keygen(args: argparse.Namespace) -> int:
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


def _spares(n: int) -> SpareConfig:
    """``--spares N``: N kept at rest, more (up to 16) under bursts; 0: none ever."""
    from ..server._spares import SpareConfig  # the server's modules load only for `start`

    n = max(0, n)
    return SpareConfig(floor=n, ceiling=max(n, SpareConfig().ceiling) if n else 0)
