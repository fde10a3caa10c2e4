"""Sampling profiles with py-spy (``py-spy record --format raw``), folded
into the functions where a process spends its time."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time

import psutil


def record(
    pids: dict[str, int], seconds: float, workload, rate: int = 1000, gil: bool = True
) -> dict[str, list[str]]:
    """Sample every process in ``pids`` (name → pid) while ``workload()``
    runs in a thread of this process; returns name → collapsed stack lines.
    py-spy runs with --nonblocking (the targets are never paused) and, with
    ``gil``, keeps only samples of the thread holding the GIL: where the
    Python time goes (time in the kernel shows in ``cpu_seconds``)."""
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    d = tempfile.mkdtemp(prefix="bench-pyspy-")
    procs = {}
    for name, pid in pids.items():
        out = os.path.join(d, f"{name}.txt")
        procs[name] = (
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--threads",
                    "--nolineno",
                    *(["--gil"] if gil else []),
                    "-d",
                    str(int(seconds)),
                    "-o",
                    out,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            out,
        )
    time.sleep(0.5)  # attached
    stop = threading.Event()
    t = threading.Thread(target=lambda: _loop(workload, stop), daemon=True)
    t.start()
    result = {}
    try:
        for name, (p, out) in procs.items():
            p.wait(seconds + 30)
            with open(out) as f:
                result[name] = f.read().splitlines()
    finally:
        stop.set()
        t.join(30)
        for p, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)
    return result


def _loop(workload, stop) -> None:
    while not stop.is_set():
        workload()


_NOISE = ("Thread.", "<module>", "main.<locals>", "record.<locals>", "_loop ")


def fold(lines: list[str], top: int = 18, skip_threads: tuple[str, ...] = ()) -> str:
    """Inclusive and self shares per function (file:line dropped)."""
    incl: collections.Counter = collections.Counter()
    self_: collections.Counter = collections.Counter()
    total = 0
    for ln in lines:
        stack, _, n = ln.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if frames and any(s in frames[0] for s in skip_threads):
            continue
        n = int(n)
        total += n
        names = frames[1:] or frames  # the first frame names the thread
        for f in set(names):
            incl[f] += n
        self_[names[-1]] += n
    if not total:
        return "  (no samples)"
    out = [f"  {total} samples; inclusive share (self share) of the busiest functions:"]
    shown = [
        (f, n) for f, n in incl.most_common() if not f.startswith(_NOISE) and "profiles/" not in f
    ]
    for f, n in shown[:top]:
        out.append(f"  {100 * n / total:5.1f}% ({100 * self_[f] / total:4.1f}%)  {f}")
    return "\n".join(out)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def minor_faults(pid: int) -> int:
    """Minor page faults so far (/proc/PID/stat field 10)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])
