"""The process's descriptor limit: raised where many connections are the
job (a server and the workers it forks), named in the error where it is
hit (any runtime), so nobody needs a manual ``ulimit -n``.

Every connection of a runtime is a descriptor, and a server with thousands
of workers holds one to each; the usual soft limit (1,024) is far below
the usual hard limit, which an unprivileged process may raise itself to.
"""

from __future__ import annotations

import errno
import logging

_log = logging.getLogger(__name__)

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


def raise_nofile() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (inherited by the
    processes forked afterwards); the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:  # nothing to raise
        return soft
    # an unlimited hard limit: a large finite one (RLIM_INFINITY is -1 here, not large)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:  # e.g. a container capping it: keep going with less
        _log.info("cannot raise the descriptor limit from %d to %d: %s", soft, want, e)
        return soft
    return want


def describe_os_error(e: OSError) -> str:
    """``e`` in one line; out of descriptors, with the limit and how to raise it."""
    text = e.strerror or str(e)
    if e.errno in _OUT_OF_FDS:
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError):  # no limits to name: the plain error says enough
            return text
        which = "this process" if e.errno == errno.EMFILE else "the system"
        return (
            f"{text}: {which} is out of file descriptors (RLIMIT_NOFILE soft limit {soft}, "
            f"hard {hard}; raise it with `ulimit -n` or resource.setrlimit)"
        )
    return text
