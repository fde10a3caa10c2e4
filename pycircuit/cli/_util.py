"""What every ``pycircuit`` subcommand shares: the user-mistake error and
small argument helpers. Cheap to import (no client, no server)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..errors import CircuitError

if TYPE_CHECKING:
    from .._client import Client

__all__ = ["UsageError", "split_addr", "one_line", "key_path", "dial_in"]


class UsageError(CircuitError):
    """A mistake on the command line: one line on stderr, exit status 2."""


def split_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; an empty host is loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"bad address {text!r} (want HOST:PORT)")
    return host.strip("[]") or "127.0.0.1", int(port)


def one_line(e: BaseException) -> str:
    """The first line of an error's text (its class name when it has none)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def key_path(given: str | None) -> str | None:
    """The cluster key file: ``--key``, else ``$CIRCUIT_KEY``; None for none."""
    return given or os.environ.get("CIRCUIT_KEY") or None


def dial_in(args: argparse.Namespace) -> Client:
    """--dial, then --discover-if/--discover/$CIRCUIT_DISCOVER, then $CIRCUIT;
    never an embedded server (a command-line client needs a real circuit)."""
    from .._connect import connect

    key = key_path(args.key)
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
