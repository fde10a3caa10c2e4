#!/usr/bin/env python
"""pycircuit side by side with its peers, in one run, on loopback.

    python bench/run.py [--quick] [--json FILE] [--only GROUP,...]

Groups (in this order): spawn, call, byvalue, footprint, stack, gc, cluster, web, cli
(see bench/metrics/ and bench/README.md). Progress goes to stderr; machine
information, one table (pycircuit and each peer measured in this run, and
the ratio pycircuit / peer), the issue's targets (met / NOT MET) and any
FAIL lines go to stdout. Exits 1 if something failed.

Every process the run starts is stopped in ``finally`` blocks (terminate,
then kill after a grace period); a last sweep stops anything left below
this process.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

import common  # noqa: F401 - first: fixes sys.path and the environment
from common import Section, Tracker, fmt, log, ratio_text
from metrics import ORDER, Context, module

VERSIONED = [
    "pycircuit",
    "rpyc",
    "Pyro5",
    "serpent",
    "msgpack",
    "execnet",
    "mitogen",
    "ray",
    "psutil",
    "dill",
]


# -- machine ------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: str, *args: str) -> str | None:
    try:
        p = subprocess.run(
            ["git", "-C", root, *args],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    import psutil
    import pycircuit

    root = os.path.dirname(os.path.dirname(os.path.abspath(pycircuit.__file__)))
    commit = _git(root, "rev-parse", "--short", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--", "pycircuit")) if commit else None
    spy = shutil.which("py-spy")
    spy_v = None
    if spy:
        try:
            spy_v = subprocess.run(
                [spy, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.split()[-1]
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    versions = {d: _version(d) for d in VERSIONED}
    versions["py-spy"] = spy_v
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "pycircuit_source": {"path": root, "commit": commit, "dirty": dirty},
    }


def header(m: dict, quick: bool, groups: list[str]) -> str:
    v = m["versions"]
    src = m["pycircuit_source"]
    where = (
        src["path"]
        + (f" @ {src['commit']}" if src["commit"] else "")
        + (" + uncommitted changes" if src["dirty"] else "")
    )
    libs = ", ".join(f"{k} {v[k]}" for k in VERSIONED[1:] if v.get(k)) + (
        f", py-spy {v['py-spy']}" if v.get("py-spy") else ""
    )
    missing = [k for k in ("Pyro5", "execnet", "mitogen", "ray") if not v.get(k)]
    return "\n".join(
        [
            f"pycircuit benchmark suite, {m['date']}{' (--quick)' if quick else ''}; groups: {', '.join(groups)}",
            f"machine: {m['cpu']}, {m['cpus']} logical CPUs ({m['cpus_usable']} usable), {m['memory_gb']} GiB, {m['os']}",
            f"load average at start: {' '.join(map(str, m['loadavg']))}",
            f"{m['python']}; pycircuit {v['pycircuit']} from {where}",
            f"{libs}" + (f"; not installed: {', '.join(missing)}" if missing else ""),
            "ratio = pycircuit / peer (below 1 = pycircuit faster or smaller, except calls/s where above 1 is better)",
        ]
    )


# -- table ----------------------------------------------------------------------------
def table(sections: list[Section]) -> str:
    head = ("metric / peer", "pycircuit", "peer", "ratio", "target")
    lines: list[tuple] = []
    for sec in sections:
        last = None
        for r in sec.rows:
            if r.metric != last:
                lines.append((r.metric,))
                last = r.metric
            if r.note:
                lines.append(("  " + r.peer, r.note))
                continue
            tgt = ""
            if r.target:
                met = r.met
                tgt = f"{r.target.text}: " + {True: "met", False: "NOT MET", None: "n/a"}[met]
            lines.append(
                (
                    "  " + r.peer,
                    fmt(r.pc, r.unit),
                    fmt(r.other, r.unit) if r.other is not None else "",
                    ratio_text(r.ratio) if r.other is not None else "",
                    tgt,
                )
            )
    full = [ln for ln in lines if len(ln) == 5]
    w = [max(len(x[i]) for x in full + [head]) for i in range(5)]
    w[0] = min(w[0], 76)

    def fmt_row(x):
        name = x[0] if len(x[0]) <= w[0] else x[0][: w[0] - 1] + "…"
        return "  ".join(
            [name.ljust(w[0]), x[1].rjust(w[1]), x[2].rjust(w[2]), x[3].rjust(w[3]), x[4]]
        ).rstrip()

    out = [fmt_row(head), "  ".join("-" * x for x in w)]
    for ln in lines:
        if len(ln) == 1:
            out.append(ln[0])
        elif len(ln) == 2:
            out.append(ln[0].ljust(w[0]) + "  " + ln[1])
        else:
            out.append(fmt_row(ln))
    return "\n".join(out)


def targets(sections: list[Section]) -> str:
    rows = [r for s in sections for r in s.rows if r.target]
    if not rows:
        return ""
    out = ["targets (from the issue):"]
    for r in rows:
        got = fmt(r.pc, r.unit)
        if r.target.factor is not None:
            got += f" vs {r.target.factor:g} × {fmt(r.other, r.unit)} ({r.peer})"
        status = {True: "met", False: "NOT MET", None: "n/a"}[r.met]
        out.append(f"  {status:8} {r.metric} — {r.target.text}: {got}")
    return "\n".join(out)


# -- driver ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations and smaller clusters (a few minutes less)",
    )
    ap.add_argument("--json", metavar="FILE", help="also write every measurement to FILE as JSON")
    ap.add_argument(
        "--only", metavar="GROUP,...", help=f"run only these groups ({','.join(ORDER)})"
    )
    args = ap.parse_args(argv)
    groups = ORDER
    if args.only:
        want = [g.strip() for g in args.only.split(",") if g.strip()]
        bad = [g for g in want if g not in ORDER]
        if bad:
            ap.error(f"unknown group(s) {', '.join(bad)}; known: {', '.join(ORDER)}")
        groups = [g for g in ORDER if g in want]

    m = machine()
    tracker = Tracker()
    ctx = Context(args.quick, tracker)
    sections: list[Section] = []
    failures: list[str] = []
    t0 = time.monotonic()
    try:
        for g in groups:
            mod = module({"gc": "gc_churn"}.get(g, g))
            log(f"[{g}] …")
            try:
                sec = mod.run(ctx)
            except KeyboardInterrupt:
                failures.append(f"interrupted during group {g}")
                break
            except Exception as e:
                traceback.print_exc()
                failures.append(f"group {g} failed: {type(e).__name__}: {e}")
                continue
            sections.append(sec)
            failures += sec.failures
            if not set(groups[groups.index(g) + 1 :]) & {"call", "byvalue"}:
                ctx.close_subjects()  # no later group calls the peers: stop them now
    finally:
        try:
            ctx.close()
        finally:
            stray = tracker.reap()
            if stray:
                log(f"note: stopped {len(stray)} process(es) left at the end: {stray}")
    elapsed = time.monotonic() - t0

    out = [header(m, args.quick, groups), "", table(sections), "", targets(sections)]
    out += [f"FAIL: {f}" for f in failures]
    out.append(f"\n(run took {elapsed:.0f} s)")
    print("\n".join(out), flush=True)
    if args.json:
        doc = {
            "meta": m | {"quick": args.quick, "groups": groups, "elapsed_s": round(elapsed, 1)},
            "rows": [r.as_json() for s in sections for r in s.rows],
            "raw": {s.name: s.raw for s in sections},
            "failures": failures,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        log(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
