"""Functions and classes that workers import by reference (this directory is
on the test servers' PYTHONPATH)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import pycircuit
from pycircuit.runtime._runtime import current


class AppError(Exception):
    """An application exception the caller can import."""


@dataclass
class Box:
    label: str
    ref: object


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self, by=1):
        self.n += by
        return self.n

    def fail(self):
        raise AppError("counter says no")

    def get(self):
        return self.n

    def _secret(self):
        return "hidden"


class Probe:
    """Introspection of a worker's runtime, served as a service."""

    def table_size(self):
        return current().table_size()

    def proxy_count(self):
        return current().proxy_count()

    def has(self, handle):
        return current().table_has(handle)

    def pid(self):
        return os.getpid()


class Gate:
    """A latch the test process holds and workers wait on."""

    def __init__(self):
        self.ev = threading.Event()

    def open(self):
        self.ev.set()

    def wait(self, timeout=30):
        return self.ev.wait(timeout)


class Sleeper:
    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds


class Factory:
    """Hands out fresh references owned by its worker."""

    def make(self, n):
        return [pycircuit.ref(Counter()) for _ in range(n)]

    def make_perm(self):
        return pycircuit.perm_ref(Counter())

    def export_perm(self):
        return pycircuit.export(pycircuit.perm_ref(Counter()), "label")

    def export_plain(self):
        return pycircuit.export(pycircuit.ref(Counter()))


def daemon(obj_factory=Counter, perm=False):
    """Worker function: serve "probe" and "factory"; return a reference to
    one object; live until killed."""
    pycircuit.listen("probe", Probe())
    pycircuit.listen("factory", Factory())
    pycircuit.listen("sleeper", Sleeper())
    obj = obj_factory()
    pycircuit.run_in_back(threading.Event().wait)
    return pycircuit.perm_ref(obj) if perm else pycircuit.ref(obj)


def add(a, b):
    return a + b


def pid():
    return os.getpid()


def sleeper(seconds):
    time.sleep(seconds)
    return seconds
