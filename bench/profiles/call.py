#!/usr/bin/env python
"""Where the time of a cross-call goes.

    python bench/profiles/call.py [--value int|list|bytes] [--op echo|send] [--calls N] [--seconds S]

1. CPU per call: N sequential calls (echo of a small int by default; with
   --value list|bytes the by-value payloads of metrics/byvalue.py, echoed or
   sent one way); wall time, and the CPU time of the calling process and of
   the serving process per call, for pycircuit, raw RPyC, Pyro5 msgpack and
   a plain socket (the floor).
2. py-spy --gil (if installed): the calling and serving processes of
   pycircuit, raw RPyC and Pyro5 msgpack sampled for S seconds of calls.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: F401 - environment
from common import Tracker, clock
from metrics import Context
from profiles._pyspy import cpu_seconds, fold, minor_faults, record


def server_pid(name, peer):
    if name == "pycircuit":
        return peer.addr.pid
    return peer.proc.pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--value", choices=("int", "list", "bytes"), default="int")
    ap.add_argument("--op", choices=("echo", "send"), default="echo")
    args = ap.parse_args()
    if args.value != "int" and args.calls == 10000:
        args.calls = 300
    payload = {"int": None, "list": list(range(100_000)), "bytes": os.urandom(1 << 20)}[args.value]

    def make(p):
        """A one-argument call for ``p`` (``p.thread_caller`` when ``thread``)."""
        if payload is None:
            return p.caller()
        fn = p.value_echo if args.op == "echo" else p.value_send
        return lambda _i: fn(payload)

    tracker = Tracker()
    ctx = Context(False, tracker)
    try:
        from peers.pycircuit_peer import Pycircuit
        from peers.pyro_peer import PyroMsgpack
        from peers.rpyc_peer import RawRpyc
        from peers.socket_peer import PlainSocket

        subjects = [
            ("pycircuit", Pycircuit(ctx.circuit())),
            ("raw RPyC", RawRpyc()),
            ("Pyro5 msgpack", PyroMsgpack()),
            ("plain socket", PlainSocket()),
        ]
        for _, p in subjects:
            p.start(tracker)
        me = os.getpid()
        what = "echo(int)" if payload is None else f"{args.op} {args.value}"
        print(
            f"{'':16} {'wall/call':>10} {'client CPU':>11} {'server CPU':>11}  (µs; {args.calls} × {what})"
            f"  {'client faults':>13} {'server faults':>13} (minor page faults per call)"
        )
        for name, p in subjects:
            call = make(p)
            for i in range(min(500, args.calls)):
                call(i)
            spid = server_pid(name, p)
            f0, g0 = minor_faults(me), minor_faults(spid)
            c0, s0, t0 = cpu_seconds(me), cpu_seconds(spid), clock()
            for i in range(args.calls):
                call(i)
            t1, c1, s1 = clock(), cpu_seconds(me), cpu_seconds(spid)
            f1, g1 = minor_faults(me), minor_faults(spid)
            n = args.calls
            print(
                f"{name:16} {(t1 - t0) / 1e3 / n:10.1f} {(c1 - c0) * 1e6 / n:11.1f} {(s1 - s0) * 1e6 / n:11.1f}"
                f"  {(f1 - f0) / n:13.1f} {(g1 - g0) / n:13.1f}"
            )
        for name, p in subjects[:3]:
            seq = iter(range(10**9))

            def work(p=p, box=[], seq=seq):
                if not box:  # in the workload thread (a Pyro5 proxy belongs to one thread)
                    if hasattr(p, "proxy"):
                        p.proxy._pyroClaimOwnership()
                    box.append(make(p))
                call = box[0]
                for _ in range(100 if payload is None else 2):
                    call(next(seq))

            res = record({"client": me, "server": server_pid(name, p)}, args.seconds, work)
            for side in ("client", "server"):
                print(f"\n== {name}, {side} (py-spy --gil, {args.seconds:g} s of {what})")
                print(fold(res[side]))
    finally:
        for _, p in subjects:
            try:
                p.close()
            except Exception:
                pass
        ctx.close()
        tracker.reap()


if __name__ == "__main__":
    main()
