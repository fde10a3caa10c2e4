"""``pycircuit web``: the live view of a circuit (the web stack loads only here)."""

from __future__ import annotations

import argparse
import sys

from ..runtime._addr import is_loopback
from ._util import UsageError, dial_in, key_path, split_addr

__all__ = ["cmd_web"]


def cmd_web(args: argparse.Namespace) -> int:
    host, port = split_addr(args.addr) if args.addr else ("127.0.0.1", 0)
    key = key_path(args.key)
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
    c = dial_in(args)

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
