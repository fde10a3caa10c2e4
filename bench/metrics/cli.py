"""Start-up of the command line: a new interpreter each run, wall time.

* ``pycircuit ls -d URL /`` against the bench's server (``python -m
  pycircuit.cli``: the console script does the same imports), next to
  ``python -c pass`` in the same run: the interpreter's own floor.
  Target: at most 80 ms.
* ``python -c 'import pycircuit'`` next to ``python -c pass``: the
  package's own import (its public names load on first use).
* (info) ``python -c 'import rpyc'``: the transport's import alone.

Runs alternate (pycircuit, floor, pycircuit, …), so drift of the machine's
speed hits both; 20 runs each (quick 5) after 2 warm-ups. pycircuit's
bytecode is compiled first, as an installed package's is.
"""

from __future__ import annotations

import os
import subprocess
import sys

from common import Section, Target, clock, log, stats


def _wall(argv: list[str]) -> int:
    t0 = clock()
    p = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=dict(os.environ)
    )
    took = clock() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{argv[1:]} failed (exit {p.returncode}): {p.stderr[-300:]!r}")
    return took


def _paired(a: list[str], b: list[str], n: int, warm: int) -> tuple[dict, dict]:
    for _ in range(warm):
        _wall(a)
        _wall(b)
    ta, tb = [], []
    for _ in range(n):
        ta.append(_wall(a))
        tb.append(_wall(b))
    return stats(ta), stats(tb)


def _compiled() -> None:
    """Bytecode for pycircuit's modules, as an installed package has it (pip
    compiles a wheel's); without it (an editable install under
    ``PYTHONDONTWRITEBYTECODE``) every run would compile them all again."""
    import compileall

    import pycircuit

    compileall.compile_dir(os.path.dirname(pycircuit.__file__), quiet=1)


def run(ctx) -> Section:
    sec = Section("cli")
    _compiled()
    circuit = ctx.circuit()
    py = sys.executable
    floor = [py, "-c", "pass"]
    n, warm = ctx.n(20, 5), 2
    log(f"cli: pycircuit ls -d URL / ×{n} …")
    ls, floor_ls = _paired(
        [py, "-m", "pycircuit.cli", "ls", "-d", circuit.c.url, "/"], floor, n, warm
    )
    log(f"cli: import pycircuit ×{n} …")
    imp, floor_imp = _paired([py, "-c", "import pycircuit"], floor, n, warm)
    rpyc, _ = _paired([py, "-c", "import rpyc"], floor, ctx.n(10, 3), 1)
    sec.raw = {
        "ls": ls,
        "ls_floor": floor_ls,
        "import": imp,
        "import_floor": floor_imp,
        "rpyc": rpyc,
    }
    m = "command-line start-up, wall median"
    sec.add(
        m,
        "pycircuit ls -d URL / vs python -c pass",
        ls["median_us"],
        floor_ls["median_us"],
        target=Target("<= 80 ms", limit=80_000),
    )
    sec.add(m, "import pycircuit vs python -c pass", imp["median_us"], floor_imp["median_us"])
    sec.add(
        m,
        "(info) python -c 'import rpyc' vs python -c pass",
        rpyc["median_us"],
        floor_imp["median_us"],
        info=True,
    )
    return sec
