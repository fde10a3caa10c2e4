"""By-value transfer of a list of 100k ints and of 1 MiB of random bytes.

* echo: the value there and back (``x.call("echo", v)``);
* send: the value there, only its ``len()`` back (``x.call("size", v)``);
* reference: ``pickle.loads(pickle.dumps(v, HIGHEST_PROTOCOL))`` in this
  process, no I/O: a *bare pickle round trip*.

A one-way transfer does the work of one bare pickle round trip (dumps here,
loads there) plus the transport, an echo does it twice; the issue's target
("by-value within 1.3× of a bare pickle round trip") is checked as
send ≤ 1.3 × bare and echo ≤ 1.3 × 2 × bare.

Subjects take turns one call at a time, n calls each (100; quick 15),
except that a subject stops after a time budget (4 s; quick 1 s) once it
has 5 samples (serpent is slow on these values).
"""

from __future__ import annotations

import os
import pickle

from common import Section, Target, clock, log, stats

LIST_LEN = 100_000
BYTES_LEN = 1 << 20


def _values() -> list[tuple[str, object]]:
    return [("list[100k int]", list(range(LIST_LEN))), ("1 MiB bytes", os.urandom(BYTES_LEN))]


def _same(r, v) -> bool:
    if isinstance(v, bytes):
        return type(r) is bytes and r == v
    return (
        isinstance(r, (list, tuple))
        and len(r) == len(v)
        and r[-1] == v[-1]
        and r[12345] == v[12345]
    )


def measure(live, value, n: int, warm: int, budget_s: float) -> dict:
    out: dict[str, dict[str, list[int]]] = {name: {"echo": [], "send": []} for name, _, _ in live}
    for name, peer, _ in live:
        for _ in range(warm):
            if not _same(peer.value_echo(value), value) or peer.value_send(value) != len(value):
                raise AssertionError(f"{name}: by-value call returned something else")
    for kind in ("echo", "send"):
        spent = {name: 0 for name, _, _ in live}
        for i in range(n):
            for name, peer, _ in live:
                s = out[name][kind]
                if len(s) >= 5 and spent[name] > budget_s * 1e9:
                    continue
                fn = peer.value_echo if kind == "echo" else peer.value_send
                t0 = clock()
                r = fn(value)
                t = clock() - t0
                s.append(t)
                spent[name] += t
                if (kind == "echo" and not _same(r, value)) or (kind == "send" and r != len(value)):
                    raise AssertionError(f"{name}: by-value {kind} returned something else")
    return {name: {k: stats(v) for k, v in d.items()} for name, d in out.items()}


def bare_pickle(value, n: int) -> dict:
    proto = pickle.HIGHEST_PROTOCOL
    for _ in range(3):
        pickle.loads(pickle.dumps(value, proto))
    s = []
    for _ in range(n):
        t0 = clock()
        pickle.loads(pickle.dumps(value, proto))
        s.append(clock() - t0)
    return stats(s)


def run(ctx) -> Section:
    sec = Section("byvalue")
    subjects = ctx.subjects()
    live = [s for s in subjects if s[1] is not None]
    n, warm, budget = ctx.n(100, 15), 2, ctx.n(4.0, 1.0)
    for label, value in _values():
        log(f"by-value {label}: {len(live)} subjects × {n} echo + {n} send …")
        res = measure(live, value, n, warm, budget)
        bare = bare_pickle(value, max(n, 50))
        sec.raw[label] = {
            "subjects": res,
            "bare_pickle": bare,
            "pickled_bytes": len(pickle.dumps(value, pickle.HIGHEST_PROTOCOL)),
        }
        pc = res["pycircuit"]
        for kind, what, factor in (("echo", "there and back", 2), ("send", "there, len() back", 1)):
            m = f"by-value {kind} {label} ({what}), median"
            ref = "bare pickle dumps+loads, in-process" + (
                " (×2 for the target)" if factor == 2 else ""
            )
            sec.add(
                m,
                ref,
                pc[kind]["median_us"],
                bare["median_us"],
                target=Target(
                    f"≤ 1.3×{' 2×' if factor == 2 else ''} bare pickle", factor=1.3 * factor
                ),
            )
            for name, peer, why in subjects:
                if name == "pycircuit":
                    continue
                if peer is None:
                    sec.skip(m, name, why)
                    continue
                note = peer.value_note(value)
                sec.add(
                    m,
                    name + (f" [{note}]" if note else ""),
                    pc[kind]["median_us"],
                    res[name][kind]["median_us"],
                    info=peer.info,
                )
    return sec
