"""100 servers on one machine join and list each other (membership over
UDP with the SWIM core). Heavy: started together, with no spare workers."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import pycircuit
from conftest import child_env, stop_process, wait_until

N = 100


@pytest.mark.timeout(900)
def test_hundred_servers_join_and_list_each_other(tmp_path):
    argv = [sys.executable, "-m", "pycircuit.cli", "start", "-a", "127.0.0.1:0", "--spares", "0"]
    procs: list[subprocess.Popen] = []
    clients = []
    try:
        with open(tmp_path / "err", "wb") as err:
            procs.append(
                subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=err, env=child_env(), text=True
                )
            )
            first = procs[0].stdout.readline().strip()
            assert first.startswith("circuit://")
            # everyone joins through server 0 at once; the others are learned by gossip
            procs += [
                subprocess.Popen(
                    argv + ["-j", first],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=child_env(),
                    text=True,
                )
                for _ in range(N - 1)
            ]
            urls = [first] + [p.stdout.readline().strip() for p in procs[1:]]
        assert all(u.startswith("circuit://") for u in urls), (tmp_path / "err").read_text()[-2000:]
        clients = [pycircuit.Client(u) for u in urls]
        want = sorted(c.server_id for c in clients)
        pending = set(range(N))

        def all_list_all():
            for i in list(pending):
                if sorted(h.id for h in clients[i].hosts()) == want:
                    pending.discard(i)
            return not pending

        t0 = time.monotonic()
        wait_until(all_list_all, 300, interval=1.0, what=f"all {N} servers list all {N}")
        print(f"{N} servers listed each other {time.monotonic() - t0:.1f} s after all were up")
    finally:
        for c in clients:
            c.close()
        for p in procs:
            stop_process(p)
