"""Stack dump of a live worker by path.

The worker lives at ``/<host>/bench/stk/<worker ID>`` with three idle threads of its
own besides pycircuit's (``bench_helpers.stack_daemon``).

* by path: ``addr = c.walk(path).get(); pycircuit.dial(addr, "acid").stack()``:
  what ``pycircuit stk PATH`` does, through the Python API, on warm
  connections (200; quick 30). The target (< 2 ms) is checked here.
* (info) ``pycircuit.dial(addr, "acid").stack()`` with the address known,
  and ``acid.stack()`` on a cached reference;
* (info) the CLI: wall time of ``pycircuit stk -d URL PATH`` (a new
  interpreter each time; 5, quick 2);
* (info) peer: ``py-spy dump --pid PID`` if py-spy is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import bench_helpers as H
from common import Section, Target, clock, log, stats


def _timed(fn, n: int, warm: int, check) -> dict:
    for _ in range(warm):
        check(fn())
    out = []
    for _ in range(n):
        t0 = clock()
        r = fn()
        out.append(clock() - t0)
        check(r)
    return stats(out)


def _run(argv: list[str], what: str) -> str:
    p = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {p.returncode}): {p.stderr.strip()[-300:]}")
    return p.stdout


def run(ctx) -> Section:
    sec = Section("stack")
    circuit = ctx.circuit()
    pycircuit = circuit.pycircuit
    c = circuit.c
    pid, addr = circuit.spawn(H.stack_daemon, anchor="bench/stk")
    path = [
        circuit.host.id,
        "bench",
        "stk",
        addr.id,
    ]  # a worker sits below its anchor, named by its ID
    text_path = "/" + "/".join(path)
    n, warm, n_cli = ctx.n(200, 30), ctx.n(10, 3), ctx.n(5, 2)

    def ok(text):
        if "bench-idle-2" not in text:
            raise AssertionError("the stack dump misses the worker's threads")

    try:
        log(f"stack: API by path ×{n} …")
        by_path = _timed(lambda: pycircuit.dial(c.walk(path).get(), "acid").stack(), n, warm, ok)
        by_addr = _timed(lambda: pycircuit.dial(addr, "acid").stack(), n, warm, ok)
        acid = pycircuit.dial(addr, "acid")
        cached = _timed(acid.stack, n, warm, ok)
        stack_bytes = len(acid.stack())
        exe = shutil.which("pycircuit")
        argv = ([exe] if exe else [sys.executable, "-m", "pycircuit.cli"]) + [
            "stk",
            "-d",
            c.url,
            text_path,
        ]
        log(f"stack: CLI ×{n_cli} …")
        cli = _timed(lambda: _run(argv, "pycircuit stk"), n_cli, 1, ok)
        spy = shutil.which("py-spy")
        pyspy: dict | str
        if spy:
            log(f"stack: py-spy dump ×{n_cli} …")
            try:
                pyspy = _timed(
                    lambda: _run([spy, "dump", "--pid", str(pid)], "py-spy dump"),
                    n_cli,
                    1,
                    lambda t: None,
                )
            except Exception as e:
                pyspy = f"skipped: {e}"
        else:
            pyspy = "skipped: py-spy is not installed"
    finally:
        circuit.kill(addr)
    sec.raw = {
        "by_path": by_path,
        "dial_and_stack": by_addr,
        "cached_acid": cached,
        "cli": cli,
        "py_spy_dump": pyspy,
        "stack_chars": stack_bytes,
    }
    m = "stack dump of a live worker, median"
    sec.add(
        m,
        "by path: dial(c.walk(path).get(), 'acid').stack()",
        by_path["median_us"],
        None,
        target=Target("< 2 ms", limit=2000),
    )
    sec.add(m, "(info) dial(addr, 'acid').stack()", by_addr["median_us"], None, info=True)
    sec.add(m, "(info) cached acid.stack()", cached["median_us"], None, info=True)
    sec.add(m, "(info) CLI wall time: pycircuit stk -d URL PATH", cli["median_us"], None, info=True)
    if isinstance(pyspy, str):
        sec.skip(m, "(info) py-spy dump --pid", pyspy, info=True)
    else:
        sec.add(
            m,
            "(info) py-spy dump --pid (pycircuit by path vs)",
            by_path["median_us"],
            pyspy["median_us"],
            info=True,
        )
    return sec
