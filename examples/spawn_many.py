"""A batch: one function over many argument tuples, a new worker for each.

Run:  python examples/spawn_many.py
spawn_many asks the server for the workers a batch at a time (spares it
has ready, forks for the rest), sends each its call, and returns the
results in the order of the arguments, like asyncio.gather.
"""

import os
import time

import pycircuit


def shard_sum(lo: int, hi: int) -> int:
    # Each shard runs in its own worker process.
    return sum(i * i for i in range(lo, hi))


def check(n: int) -> int:
    if n % 7 == 0:
        raise ValueError(f"{n} is a multiple of 7")
    return n


def main() -> None:
    with pycircuit.connect() as c:
        host = c.hosts()[0]
        shards = [(lo, lo + 100_000) for lo in range(0, 1_000_000, 100_000)]
        t = time.perf_counter()
        out = c.spawn_many(host, "shards", shard_sum, shards)
        took = time.perf_counter() - t
        pids = {addr.pid for _, addr in out}
        print(f"{len(out)} shards in {len(pids)} workers, {took * 1e3:.0f} ms")
        print("sum of squares below 1e6:", sum(v for v, _ in out))
        assert sum(v for v, _ in out) == sum(i * i for i in range(1_000_000))
        assert os.getpid() not in pids

        # Errors: the first (in argument order) is raised once all have
        # answered; return_exceptions=True puts each in place of its value.
        try:
            c.spawn_many(host, None, check, [(n,) for n in range(5, 10)])
        except ValueError as e:
            print("first error:", e)
        out = c.spawn_many(host, None, check, [(n,) for n in range(5, 10)], return_exceptions=True)
        print("with return_exceptions:", [repr(v) for v, _ in out])


if __name__ == "__main__":
    main()
