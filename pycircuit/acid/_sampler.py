"""A sampling CPU profiler of all threads, in collapsed-stack form.

Each line is ``thread;outer;...;inner COUNT`` — the format flamegraph.pl,
speedscope and inferno open directly. Sampling runs in its own thread via
``sys._current_frames``; a thread stuck in C code is sampled at its last
Python frame.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter

MAX_SECONDS = 3600.0


def current_frames() -> dict:
    """``sys._current_frames()`` with the cyclic collector paused. On
    CPython up to 3.11 a collection that starts inside that call (it
    allocates frame objects while holding the runtime's thread-list lock)
    can free a ``threading.local``, whose cleanup takes the same lock: the
    process hangs for good (cpython#106883; seen here as a server that froze
    on ``pycircuit stk`` of itself)."""
    if not gc.isenabled():
        return sys._current_frames()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        gc.enable()


def _frame_label(code) -> str:
    return f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})"


def profile(seconds: float, interval: float = 0.005) -> str:
    seconds = float(seconds)
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"cpu_profile: seconds must be in (0, {MAX_SECONDS:.0f}] (at most one hour), got {seconds}"
        )
    me = threading.get_ident()
    names: dict[int | None, str] = {}
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(names) != threading.active_count():
            names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in current_frames().items():
            if ident == me:
                continue
            stack = []
            f = frame
            while f is not None:
                stack.append(_frame_label(f.f_code))
                f = f.f_back
            stack.append(names.get(ident, f"thread-{ident}"))
            counts[";".join(reversed(stack)).replace(" ", "_")] += 1
        time.sleep(interval)
    return "".join(f"{k} {v}\n" for k, v in sorted(counts.items()))
