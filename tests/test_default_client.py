"""`default_client()` from many threads at once makes one client and one
embedded server (single flight)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import child_env

# A fresh process with nothing configured: threads released together ask for
# the default client; prints the distinct clients and embedded servers seen.
RACE = """
import json, threading, psutil
from pycircuit._client import default_client
n = 8
go = threading.Barrier(n)
got = [None] * n
def ask(i):
    go.wait()
    got[i] = default_client()
ts = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join(60)
embedded = [p.pid for p in psutil.Process().children()
            if "--embedded" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE]
print(json.dumps({"clients": len({id(c) for c in got}), "none": got.count(None), "embedded": len(embedded)}))
got[0].close()
"""


def test_default_client_from_many_threads_starts_one_embedded_server():
    r = subprocess.run(
        [sys.executable, "-c", RACE], capture_output=True, text=True, timeout=110, env=child_env()
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out == {"clients": 1, "none": 0, "embedded": 1}, out
