"""Idle worker footprint: RSS and USS (``psutil.Process.memory_full_info``;
USS is the memory only that process holds, what killing it gives back).

Each process is made fresh, used once, left idle for 1 s, then measured:

* pycircuit: a worker forked by the server's zygote running
  ``run_in_back(Event().wait)`` (``bench_helpers.idle_daemon``);
* multiprocessing: a forked ``Process`` idling on a ``Pipe``;
* execnet: an idle ``popen`` gateway (a fresh interpreter);
* Pyro5: a daemon process serving one object, called once;
* (information) mitogen ``router.fork()`` child, raw RPyC ThreadedServer,
  and pycircuit's own server and zygote.
"""

from __future__ import annotations

import time

import bench_helpers as H
from common import Section, Target, log, memory


def run(ctx) -> Section:
    sec = Section("footprint")
    circuit = ctx.circuit()
    procs: dict[str, tuple] = {}  # name -> (pid, stop) or skip reason
    stops = []

    def make(name, fn):
        try:
            pid, stop = fn()
        except ImportError as e:
            procs[name] = f"skipped: {e}"
            return
        except Exception as e:
            procs[name] = f"skipped: {type(e).__name__}: {e}"
            return
        stops.append(stop)
        procs[name] = pid

    log("footprint: idle processes …")
    try:
        pid, addr = circuit.spawn(H.idle_daemon)
        procs["pycircuit"] = pid
        stops.append(lambda: circuit.kill(addr))

        def mp_():
            from peers import mp_peer

            return mp_peer.idle_process(ctx.tracker)

        def execnet_():
            from peers import execnet_peer

            return execnet_peer.idle_gateway(ctx.tracker)

        def pyro_():
            from peers import pyro_peer

            return pyro_peer.idle_daemon(ctx.tracker)

        def mitogen_():
            from peers import mitogen_peer

            return mitogen_peer.idle_fork(ctx.tracker)

        def rpyc_():
            from peers import rpyc_peer

            return rpyc_peer.idle_server(ctx.tracker)

        make("multiprocessing fork Process", mp_)
        make("execnet popen gateway", execnet_)
        make("Pyro5 daemon process", pyro_)
        make("(info) mitogen router.fork() child", mitogen_)
        make("(info) raw RPyC ThreadedServer process", rpyc_)
        time.sleep(1.0)
        mem = {name: memory(pid) if isinstance(pid, int) else pid for name, pid in procs.items()}
        for role, pid in circuit.processes().items():
            if pid:
                mem[f"(info) pycircuit {role}"] = memory(pid)
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as e:
                log(f"warning: footprint cleanup: {e}")
    sec.raw = mem
    pc = mem["pycircuit"]
    sec.add(
        "idle worker USS",
        "— (absolute target)",
        pc["uss_mb"],
        None,
        unit="MB",
        target=Target("< 15 MB", limit=15.0),
    )
    for key, label in (("uss_mb", "USS"), ("rss_mb", "RSS")):
        m = f"idle worker {label} (pycircuit: forked worker, run_in_back)"
        for name, v in mem.items():
            if name == "pycircuit" or name.startswith("(info) pycircuit"):
                continue
            if isinstance(v, str):
                sec.skip(m, name, v)
            else:
                sec.add(m, name, pc[key], v[key], unit="MB", info=name.startswith("(info)"))
    for role in ("server", "zygote"):
        v = mem.get(f"(info) pycircuit {role}")
        if v:
            for key, label in (("uss_mb", "USS"), ("rss_mb", "RSS")):
                sec.add(
                    "(info) pycircuit's own processes",
                    f"{role} {label}",
                    v[key],
                    None,
                    unit="MB",
                    info=True,
                )
    return sec
