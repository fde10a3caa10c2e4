"""Quick start: spawn functions in new worker processes on the local circuit.

Run:  python examples/hello_spawn.py
With no $CIRCUIT set, connect() starts an embedded local server owned by this
program and stops it on exit.
"""

import os

import pycircuit


def where(greeting: str) -> str:
    # Runs in a fresh worker process, forked from the host's warm zygote.
    return f"{greeting} from worker pid {os.getpid()}"


def main() -> None:
    with pycircuit.connect() as c:
        host = c.hosts()[0]
        print("host:", host.id, host.url)

        out, addr = pycircuit.spawn(host, None, where, "hello")
        print(out, "| this program is pid", os.getpid())
        print("worker address:", addr)

        # Lambdas and closures travel by value.
        base = 40
        out, _ = pycircuit.spawn(host, None, lambda n: base + n, 2)
        print("closure result:", out)

        # The worker has exited; the server keeps its remains.
        print("remains:", c.walk([host.id]).view() or "(no live workers)")


if __name__ == "__main__":
    main()
