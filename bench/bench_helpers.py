"""What the suite's remote processes run, importable by name.

pycircuit workers import this module by name (``common`` puts ``bench/`` on
``sys.path`` and ``$PYTHONPATH`` before anything starts, and the embedded
server hands its ``sys.path`` on to its workers), so the functions below are
pickled by reference, not sent by value with dill. mitogen ships this
module's source to its children and multiprocessing pickles these functions
by reference, so they serve the peers too. Module-level imports are the
standard library only; pycircuit is imported where a worker needs it.
"""

from __future__ import annotations

import os
import sys
import threading


# -- plain functions (every peer) ----------------------------------------------
def echo(x):
    return x


def size(x):
    """The one-way by-value call: the value goes there, only its length comes back."""
    return len(x)


def one():
    """The trivial spawned function."""
    return 1


def getpid():
    return os.getpid()


def mp_child(conn):
    """multiprocessing spawn peer: send the first result through a Pipe."""
    conn.send(1)
    conn.close()


def mp_idle(conn):
    """multiprocessing footprint peer: say who we are, then idle until the
    parent closes its end."""
    conn.send(os.getpid())
    try:
        conn.recv()
    except EOFError:
        pass


# -- pycircuit workers ----------------------------------------------------------
class Echo:
    """The object served by the echo daemon worker."""

    def echo(self, x):
        return x

    def size(self, x):
        return len(x)


def _forever() -> None:
    import pycircuit

    pycircuit.run_in_back(threading.Event().wait)


def echo_daemon():
    """Stay alive (until killed); return a reference to an Echo here."""
    import pycircuit

    _forever()
    return pycircuit.ref(Echo())


def idle_daemon():
    """Stay alive doing nothing; return our pid (footprint)."""
    _forever()
    return os.getpid()


def where():
    """The pycircuit a worker runs (to check it is the client's)."""
    import pycircuit

    return os.path.abspath(pycircuit.__file__)


# -- GC churn ---------------------------------------------------------------------
class Token:
    """What the owner hands out references to."""

    __slots__ = ("n",)

    def __init__(self, n):
        self.n = n

    def get(self):
        return self.n


class Factory:
    def __init__(self):
        self.made = 0

    def make(self, n):
        out = []
        for _ in range(n):
            self.made += 1
            out.append(self._ref(Token(self.made)))
        return out

    @staticmethod
    def _ref(obj):
        import pycircuit

        return pycircuit.ref(obj)


class Probe:
    """The owner's lease table, from the inside (like tests/circuit_helpers.Probe)."""

    def table_size(self):
        from pycircuit.runtime._runtime import current

        return current().table_size()

    def proxy_count(self):
        from pycircuit.runtime._runtime import current

        return current().proxy_count()

    def collect(self):
        import gc

        return gc.collect()

    def rss(self):
        import psutil

        return psutil.Process().memory_info().rss


def gc_owner():
    """Serve "factory" and "probe"; live until killed; return our pid."""
    import pycircuit

    pycircuit.listen("factory", Factory())
    pycircuit.listen("probe", Probe())
    _forever()
    return os.getpid()


class Holder:
    """A third worker: takes references, keeps some, drops the rest."""

    def __init__(self):
        self.kept = []

    def take(self, refs, keep):
        self.kept.extend(refs[:keep])
        if keep and refs:
            refs[0].get()  # use one: the references work here
        return len(refs)

    def drop_all(self):
        n = len(self.kept)
        self.kept.clear()
        import gc

        gc.collect()
        return n


def gc_holder():
    import pycircuit

    _forever()
    return pycircuit.ref(Holder())


# -- stack dump ---------------------------------------------------------------------
def stack_daemon(threads=3):
    """A worker with a few idle threads besides pycircuit's own."""
    for i in range(threads):
        threading.Thread(target=threading.Event().wait, name=f"bench-idle-{i}", daemon=True).start()
    _forever()
    return os.getpid()


def ready(line: object) -> None:
    """In a peer server process: print the line the suite waits for (its
    address), then exit as soon as stdin (a pipe from the suite) closes, so
    a killed run leaves no server behind."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


# -- fleets -------------------------------------------------------------------------
def fleet_one(i):
    """A fleet member's first result: its index (the worker stays until killed)."""
    _forever()
    return i


def mp_fleet_child(conn, i):
    """multiprocessing fleet peer: say we are up, then idle until told to go
    (not until EOF: the other children hold copies of our parent's end)."""
    conn.send(i)
    try:
        conn.recv()
    except EOFError:
        pass
