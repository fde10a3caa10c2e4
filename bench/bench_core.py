#!/usr/bin/env python
"""Core micro-benchmarks of pycircuit against raw RPyC and local peers.

    python bench/bench_core.py [--quick] [--json] [--label TEXT]

Measures, in one run, on this machine and on loopback only:

1. trivial cross-call round trip (echo of a small int): a cached pycircuit
   ``X`` to an object in a spawned worker vs a cached RPyC bound method
   (``conn.root.echo``) of a ``rpyc.ThreadedServer`` in another process;
2. by-value round trip of a list of 100k ints: pycircuit echo of the list vs
   raw RPyC echo of its pickle (``pickle.loads(echo(pickle.dumps(lst)))``),
   plus informational raw-RPyC rows (bytes only, with and without RPyC's
   default zlib compression; the same four pickle operations as pycircuit
   without zlib; brine passing a tuple of 100k ints);
3. spawn on the local host to the first result (warm) vs a
   ``multiprocessing`` fork-context ``Process`` returning its result through
   a ``Pipe``, and (informational) a cold ``python -c "import rpyc"``.

See bench/README.md for what each row means and results from a real run.
Every process this script starts is stopped in ``finally`` blocks.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import platform
import select
import socket
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# Workers import bench_helpers by name: put this directory on our sys.path
# (the embedded server passes sys.path on as its and its workers' PYTHONPATH)
# and on $PYTHONPATH for any other child.
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [BENCH_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
# Always an embedded local server on 127.0.0.1, never a configured circuit.
os.environ.pop("CIRCUIT", None)
os.environ.pop("CIRCUIT_DISCOVER", None)

import multiprocessing  # noqa: E402

import psutil  # noqa: E402 - a dependency of pycircuit
import rpyc  # noqa: E402

import bench_helpers as H  # noqa: E402
import pycircuit  # noqa: E402

GRACE = 5.0  # seconds between terminate and kill
LIST_LEN = 100_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- statistics ---------------------------------------------------------------
def stats(samples_ns: list[int]) -> dict:
    """Summary in microseconds; p99 is nearest-rank."""
    s = sorted(samples_ns)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n, max(1, math.ceil(p * n))) - 1] / 1e3

    mid = n // 2
    median = (s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2) / 1e3
    return {
        "n": n,
        "median_us": round(median, 2),
        "p99_us": round(q(0.99), 2),
        "mean_us": round(sum(s) / n / 1e3, 2),
        "min_us": round(s[0] / 1e3, 2),
        "max_us": round(s[-1] / 1e3, 2),
    }


def fmt(us: float | None) -> str:
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


# -- process control ------------------------------------------------------------
def stop_popen(p: subprocess.Popen | None) -> None:
    if p is None:
        return
    try:
        if p.stdin:
            p.stdin.close()
    except OSError:
        pass
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(GRACE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for f in (p.stdout, p.stderr):
        if f:
            f.close()


def stop_mp(p) -> None:
    if p is None:
        return
    if p.is_alive():
        p.terminate()
        p.join(GRACE)
        if p.is_alive():
            p.kill()
            p.join()
    try:
        p.close()
    except ValueError:
        pass


def embedded_tree(c) -> list:
    """The processes under the client's embedded server (its zygote and
    workers), to check after close() that none is left behind."""
    emb = getattr(c, "_embedded", None)
    if emb is None:
        return []
    try:
        return psutil.Process(emb.proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def reap(procs: list) -> list[int]:
    """Wait for ``procs`` to exit; terminate, then kill, what stays. Returns
    the pids that had to be signalled."""
    _, alive = psutil.wait_procs(procs, timeout=GRACE)
    hit = [p.pid for p in alive]
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=GRACE)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=GRACE)
    return hit


def start_rpyc_server() -> tuple[subprocess.Popen, int]:
    """The raw-RPyC peer in its own process; returns (process, port)."""
    p = subprocess.Popen(
        [sys.executable, os.path.join(BENCH_DIR, "bench_helpers.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ), close_fds=True,
    )
    try:
        deadline = time.monotonic() + 30
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                raise RuntimeError("the raw RPyC server did not start")
            r, _, _ = select.select([p.stdout], [], [], left)
            if r:
                chunk = os.read(p.stdout.fileno(), 64)
                if not chunk:
                    raise RuntimeError("the raw RPyC server did not start")
                buf += chunk
        return p, int(buf.split(b"\n", 1)[0])
    except BaseException:
        stop_popen(p)
        raise


def rpyc_connect(port: int):
    conn = rpyc.connect("127.0.0.1", port, config={"sync_request_timeout": None})
    conn._channel.stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


# -- 1. trivial cross-call ----------------------------------------------------------
def bench_call(x, echo, n: int, warm: int, block: int = 250) -> dict:
    """Interleaved blocks of pycircuit and raw calls, so that drift of the
    machine (other load, frequency) hits both alike."""
    call = x.call
    for i in range(warm):
        assert call("echo", i) == i
        assert echo(i) == i
    clock = time.perf_counter_ns
    pc: list[int] = []
    raw: list[int] = []
    i = 0
    while i < n:
        k = min(block, n - i)
        for j in range(i, i + k):
            t0 = clock()
            r = call("echo", j)
            t1 = clock()
            pc.append(t1 - t0)
            if r != j:
                raise AssertionError(f"pycircuit echo returned {r!r}, not {j!r}")
        for j in range(i, i + k):
            t0 = clock()
            r = echo(j)
            t1 = clock()
            raw.append(t1 - t0)
            if r != j:
                raise AssertionError(f"RPyC echo returned {r!r}, not {j!r}")
        i += k
    # For information: the attribute sugar (a _BoundCall made per call).
    attr: list[int] = []
    for j in range(min(n, 1000)):
        t0 = clock()
        x.echo(j)
        attr.append(clock() - t0)
    return {"pycircuit": stats(pc), "rpyc": stats(raw), "pycircuit_attr": stats(attr)}


# -- 2. by-value round trip ------------------------------------------------------------
def bench_list(x, echo, echo_nocomp, echo_pickle_nocomp, n: int, warm: int, brine_n: int) -> dict:
    lst = list(range(LIST_LEN))
    proto = pickle.HIGHEST_PROTOCOL
    blob = pickle.dumps(lst, proto)
    clock = time.perf_counter_ns

    def check(r):
        if type(r) is not list or len(r) != LIST_LEN or r[-1] != LIST_LEN - 1:
            raise AssertionError("by-value echo returned something else")

    for _ in range(warm):
        check(x.call("echo", lst))
        check(pickle.loads(echo(pickle.dumps(lst, proto))))
    pc: list[int] = []
    raw: list[int] = []
    for _ in range(n):  # alternate, same reason as bench_call
        t0 = clock()
        r = x.call("echo", lst)
        pc.append(clock() - t0)
        check(r)
        t0 = clock()
        r = pickle.loads(echo(pickle.dumps(lst, proto)))
        raw.append(clock() - t0)
        check(r)

    def only(fn, arg, count):
        out = []
        for _ in range(max(1, warm // 2)):
            fn(arg)
        for _ in range(count):
            t0 = clock()
            fn(arg)
            out.append(clock() - t0)
        return out

    raw_bytes = only(echo, blob, n)
    raw_bytes_nc = only(echo_nocomp, blob, n)
    # RPyC doing all the work a pycircuit echo does (4 pickle operations),
    # without zlib: what is left of the difference is the transport.
    same_work = only(lambda l: pickle.loads(echo_pickle_nocomp(pickle.dumps(l, proto))), lst, n)
    tup = tuple(lst)
    brine: list[int] = []
    for _ in range(brine_n):
        t0 = clock()
        r = echo(tup)
        brine.append(clock() - t0)
        if len(r) != LIST_LEN:
            raise AssertionError("brine echo returned something else")
    pk: list[int] = []
    for _ in range(n):  # the serialisation alone, for reference
        t0 = clock()
        pickle.loads(pickle.dumps(lst, proto))
        pk.append(clock() - t0)
    return {
        "pickled_bytes": len(blob),
        "pycircuit": stats(pc),
        "rpyc_pickle": stats(raw),
        "rpyc_bytes_only": stats(raw_bytes),
        "rpyc_bytes_only_nocompress": stats(raw_bytes_nc),
        "rpyc_same_work_nocompress": stats(same_work),
        "rpyc_brine_tuple": stats(brine),
        "pickle_dumps_loads_local": stats(pk),
    }


# -- 3. spawn ---------------------------------------------------------------------------
def bench_mp_fork(n: int, warm: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    clock = time.perf_counter_ns
    out: list[int] = []
    for i in range(warm + n):
        p = None
        a = b = None
        try:
            t0 = clock()
            a, b = ctx.Pipe(duplex=False)
            p = ctx.Process(target=H.mp_child, args=(b,))
            p.start()
            r = a.recv()
            p.join()
            t1 = clock()
            if r != 1:
                raise AssertionError("fork child returned something else")
            if i >= warm:
                out.append(t1 - t0)
        finally:
            for c in (a, b):
                if c is not None:
                    c.close()
            stop_mp(p)
    return stats(out)


def bench_cold(n: int) -> dict:
    clock = time.perf_counter_ns
    out: list[int] = []
    for _ in range(n):
        t0 = clock()
        subprocess.run([sys.executable, "-c", "import rpyc"], check=True, timeout=60,
                       stdin=subprocess.DEVNULL, env=dict(os.environ))
        out.append(clock() - t0)
    return stats(out)


def bench_spawn(c, host, n: int, warm: int) -> dict:
    clock = time.perf_counter_ns
    out: list[int] = []
    for i in range(warm + n):
        t0 = clock()
        v, _addr = c.spawn(host, None, H.one)
        t1 = clock()
        if v != 1:
            raise AssertionError("spawned function returned something else")
        if i >= warm:
            out.append(t1 - t0)
    return stats(out)


# -- driver -------------------------------------------------------------------------------
def pycircuit_source() -> dict:
    """Which pycircuit is measured: its directory and, inside a git work
    tree, the commit and whether pycircuit/ has uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pycircuit.__file__)))
    info: dict = {"path": root}
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        if rev.returncode == 0:
            info["commit"] = rev.stdout.strip()
            st = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "pycircuit"],
                                capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            info["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run(quick: bool, label: str = "") -> dict:
    n_call = 500 if quick else 5000
    warm_call = 100 if quick else 500
    n_list = 20 if quick else 200
    warm_list = 3 if quick else 10
    n_brine = 2 if quick else 5
    n_spawn = 10 if quick else 50
    warm_spawn = 3 if quick else 5
    n_cold = 5 if quick else 20

    res: dict = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "quick": quick,
            "python": platform.python_version(),
            "rpyc": rpyc.__version__,
            "pycircuit": pycircuit.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "list_len": LIST_LEN,
            "pycircuit_source": pycircuit_source(),
            "label": label,
        }
    }
    # Fork peers first, while this process has no pycircuit threads
    # (forking a threaded process is what pycircuit's zygote avoids, too).
    log(f"spawn peers: multiprocessing fork ×{n_spawn}, cold interpreter ×{n_cold} …")
    res["spawn_mp_fork"] = bench_mp_fork(n_spawn, warm_spawn)
    res["spawn_cold_python"] = bench_cold(n_cold)

    srv = conn = conn_nc = c = None
    daemon_addr = None
    try:
        srv, port = start_rpyc_server()
        conn = rpyc_connect(port)
        echo = conn.root.echo  # cached bound method: one HANDLE_CALL per call
        conn_nc = rpyc_connect(port)
        conn_nc.root.no_compression()
        conn_nc._channel.compress = False
        echo_nc = conn_nc.root.echo
        echo_pickle_nc = conn_nc.root.echo_pickle

        log("starting pycircuit (embedded local server) …")
        c = pycircuit.connect()
        host = c.hosts()[0]
        if not host.url.startswith("circuit://127.0.0.1:"):
            raise RuntimeError(f"refusing a non-loopback host {host.url}")
        theirs, _ = c.spawn(host, None, H.where)
        res["meta"]["worker_pycircuit"] = theirs
        if theirs != os.path.abspath(pycircuit.__file__):
            # The server runs `python -m`, which puts its working directory
            # first on sys.path: a pycircuit/ there wins over $PYTHONPATH.
            log(f"warning: workers run {theirs}, this process {pycircuit.__file__} "
                "(run from a directory without a pycircuit/ in it)")
        x, daemon_addr = c.spawn(host, None, H.echo_daemon)

        log(f"cross-call echo(int) ×{n_call} each …")
        res["call_int"] = bench_call(x, echo, n_call, warm_call)
        log(f"by-value echo of list[{LIST_LEN} ints] ×{n_list} each, brine tuple ×{n_brine} …")
        res["echo_list"] = bench_list(x, echo, echo_nc, echo_pickle_nc, n_list, warm_list, n_brine)
        log(f"pycircuit spawn ×{n_spawn} …")
        res["spawn_pycircuit"] = bench_spawn(c, host, n_spawn, warm_spawn)
        del x
    finally:
        if c is not None:
            if daemon_addr is not None:
                try:
                    c.kill(daemon_addr)
                except Exception as e:  # noqa: BLE001 - cleanup goes on
                    log(f"warning: could not kill the daemon worker: {e}")
            tree = embedded_tree(c)
            c.close()  # stops the embedded server; its zygote and workers follow
            stray = reap(tree)
            if stray:
                log(f"warning: had to signal {len(stray)} leftover pycircuit process(es): {stray}")
        for cn in (conn, conn_nc):
            if cn is not None:
                try:
                    cn.close()
                except Exception:  # noqa: BLE001
                    pass
        stop_popen(srv)
    return res


def table(res: dict) -> str:
    ci, el = res["call_int"], res["echo_list"]
    sp, mp, cold = res["spawn_pycircuit"], res["spawn_mp_fork"], res["spawn_cold_python"]
    kb = el["pickled_bytes"] / 1024
    rows = [
        ("echo(int) round trip, median", ci["pycircuit"]["median_us"], ci["rpyc"]["median_us"], "raw RPyC"),
        ("echo(int) round trip, p99", ci["pycircuit"]["p99_us"], ci["rpyc"]["p99_us"], "raw RPyC"),
        ("  (info) echo(int) via x.echo(i) sugar, median", ci["pycircuit_attr"]["median_us"], ci["rpyc"]["median_us"], "raw RPyC"),
        ("echo list[100k int], median", el["pycircuit"]["median_us"], el["rpyc_pickle"]["median_us"],
         "RPyC: loads(echo(dumps(l)))"),
        ("echo list[100k int], p99", el["pycircuit"]["p99_us"], el["rpyc_pickle"]["p99_us"],
         "RPyC: loads(echo(dumps(l)))"),
        (f"  (info) RPyC echo of the {kb:.0f} KiB pickle, zlib on", el["pycircuit"]["median_us"],
         el["rpyc_bytes_only"]["median_us"], "RPyC default, no pickling"),
        (f"  (info) RPyC echo of the {kb:.0f} KiB pickle, zlib off", el["pycircuit"]["median_us"],
         el["rpyc_bytes_only_nocompress"]["median_us"], "RPyC, no pickling"),
        ("  (info) RPyC, same 4 pickle ops, zlib off, median", el["pycircuit"]["median_us"],
         el["rpyc_same_work_nocompress"]["median_us"], "RPyC: srv loads+dumps"),
        ("  (info) RPyC brine tuple[100k int], median", el["pycircuit"]["median_us"],
         el["rpyc_brine_tuple"]["median_us"], "RPyC brine"),
        ("  (info) local pickle dumps+loads only, median", el["pycircuit"]["median_us"],
         el["pickle_dumps_loads_local"]["median_us"], "no I/O"),
        ("spawn → first result (warm), median", sp["median_us"], mp["median_us"], "mp fork+Pipe"),
        ("spawn → first result (warm), max", sp["max_us"], mp["max_us"], "mp fork+Pipe"),
        ("  (info) cold `python -c 'import rpyc'`, median", sp["median_us"], cold["median_us"], "subprocess"),
    ]
    head = ("metric", "pycircuit", "raw RPyC / peer", "ratio", "peer")
    body = [(m, fmt(a), fmt(b), ratio(a, b), p) for m, a, b, p in rows]
    w = [max(len(r[i]) for r in body + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(  # noqa: E731
        r[i].ljust(w[i]) if i in (0, 4) else r[i].rjust(w[i]) for i in range(len(r))
    ).rstrip()
    out = [line(head), "  ".join("-" * x for x in w)] + [line(r) for r in body]
    m = res["meta"]
    src = m["pycircuit_source"]
    what = src.get("commit", "") + (" + uncommitted changes" if src.get("dirty") else "")
    out.append("")
    out.append(f"pycircuit from {src['path']}" + (f" ({what})" if what else "")
               + (f" [{m['label']}]" if m.get("label") else ""))
    out.append(
        f"n: echo(int) {ci['pycircuit']['n']}, list {el['pycircuit']['n']}, brine {el['rpyc_brine_tuple']['n']}, "
        f"spawn {sp['n']}, mp fork {mp['n']}, cold {cold['n']}; ratio = pycircuit / peer; "
        f"Python {m['python']}, rpyc {m['rpyc']}, {m['cpus']} CPUs, {m['date']}"
        + (" (--quick)" if m["quick"] else "")
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (about 10× faster)")
    ap.add_argument("--json", action="store_true", help="print all results as one JSON object")
    ap.add_argument("--label", default="", help="free text recorded with the results (e.g. the commit measured)")
    args = ap.parse_args(argv)
    res = run(args.quick, args.label)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
