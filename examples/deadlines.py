"""Futures and deadlines: x.call_async gives a concurrent.futures.Future,
pycircuit.call_within bounds a blocking call, pycircuit.acall is the
asyncio form. A call that misses its deadline goes on in its worker; its
late reply is dropped."""

import asyncio
import concurrent.futures as cf
import threading
import time

import pycircuit


class Oracle:
    def think(self, seconds, answer):
        time.sleep(seconds)
        return answer


def serve():
    pycircuit.listen("oracle", Oracle())
    pycircuit.run_in_back(threading.Event().wait)


with pycircuit.connect() as c:
    _, addr = pycircuit.spawn(c.hosts()[0], None, serve)
    oracle = pycircuit.dial(addr, "oracle")

    # Futures: several calls in flight, collected as they complete.
    futures = [oracle.call_async("think", s / 10, s) for s in (3, 1, 2)]
    print("as completed:", [f.result() for f in cf.as_completed(futures, timeout=30)])

    # A bounded blocking call.
    try:
        pycircuit.call_within(0.2, oracle, "think", 2, "too late")
    except TimeoutError as e:
        print("call_within:", e)
    print("still serving:", pycircuit.call_within(5, oracle, "think", 0, "yes"))

    # asyncio: await a call, bound it with wait_for.
    async def main():
        quick = await pycircuit.acall(oracle, "think", 0.1, "awaited")
        try:
            await asyncio.wait_for(pycircuit.acall(oracle, "think", 2, "never seen"), 0.2)
        except asyncio.TimeoutError:
            return quick, "wait_for timed out"

    print("asyncio:", asyncio.run(main()))
    pycircuit.kill(addr)
