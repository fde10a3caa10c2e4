"""Another local user gets nothing (SPEC §5): a process running as uid 65534
with pycircuit importable and the URLs in hand reaches every port, and is
refused by each runtime before anything of its own is unpickled.

The attacker runs Debian's system ``python3`` (same minor version as the
suite's) as uid 65534, with copies of pycircuit and the packages it imports
in a directory that uid can read (the suite's own interpreter may live under
a home directory it cannot)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import ROOT, child_env, start_server, stop_process, wait_until

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = ("rpyc", "plumbum", "dill", "psutil")
IN_CI = os.environ.get("CI") == "true"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a process as another uid"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON}"
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if out.stdout.strip() != str(sys.version_info[:2]):
        return f"{SYSTEM_PYTHON} is {out.stdout.strip()}, the suite runs {sys.version_info[:2]}"
    return None


@pytest.fixture(scope="module")
def sandbox():
    why = _why_not()
    if why:
        if IN_CI:
            pytest.fail(f"must run in CI: {why}")
        pytest.skip(why)
    top = tempfile.mkdtemp(prefix="pycircuit-other-user-")
    try:
        os.chmod(top, 0o755)
        lib = os.path.join(top, "lib")
        os.makedirs(lib)
        shutil.copytree(
            os.path.join(ROOT, "pycircuit"),
            os.path.join(lib, "pycircuit"),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for name in PACKAGES:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.submodule_search_locations, name
            src = list(spec.submodule_search_locations)[0]
            shutil.copytree(
                src, os.path.join(lib, name), ignore=shutil.ignore_patterns("__pycache__")
            )
        home = os.path.join(top, "home")
        os.makedirs(home)
        os.chown(home, NOBODY, NOBODY)
        for d, dirs, files in os.walk(lib):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)
        marks = os.path.join(
            top, "marks"
        )  # only root may write here: the server, if it ran our code
        os.makedirs(marks, mode=0o700)
        yield {"lib": lib, "home": home, "marks": marks}
    finally:
        shutil.rmtree(top, ignore_errors=True)


ATTACK = textwrap.dedent(r"""
    import json, os, socket, sys
    import pycircuit
    from pycircuit.runtime._addr import WorkerAddr

    plan = json.loads(sys.argv[1])
    out = {"uid": os.getuid(), "imported": pycircuit.__file__}

    def touch(path):
        open(path, "w").close()
        return os.getuid()

    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except pycircuit.CircuitError as e:
            out[name] = f"{type(e).__name__}: {e}"
        except BaseException as e:
            out[name] = f"OTHER {type(e).__name__}: {e}"

    def reach(url):
        a = WorkerAddr.parse(url)
        socket.create_connection((a.host, a.port), timeout=5).close()

    def spawn(url, mark):
        c = pycircuit.connect(url)
        c.spawn(c.hosts()[0], None, touch, mark)

    def make_proc(url, mark):
        c = pycircuit.connect(url)
        c.walk([c.hosts()[0].id, "p"]).make_proc(pycircuit.Cmd("/usr/bin/touch", args=(mark,)))

    def attacks(how):
        for t in plan["servers"]:
            attempt(f"{how} spawn " + t["name"], lambda: spawn(t["url"], t["mark"] + ".spawn"))
            attempt(f"{how} make_proc " + t["name"], lambda: make_proc(t["url"], t["mark"] + ".proc"))
        for t in plan["runtimes"]:
            attempt(f"{how} acid " + t["name"], lambda: pycircuit.dial(t["url"], "acid").ping())
            attempt(f"{how} ref " + t["name"],
                    lambda: pycircuit.import_(bytes.fromhex(t["blob"]))[0][0].mark(t["mark"]))

    for t in plan["servers"] + plan["runtimes"]:
        attempt("reach " + t["name"], lambda: reach(t["url"]))
    # Our own client refuses a runtime that cannot prove this user's secret
    # (it might be a squatter) before the runtime gets to refuse us ...
    attacks("honest")
    # ... so a hostile client skips that check: then the runtime refuses.
    from pycircuit.runtime import _auth, _runtime
    _runtime.current()._auth = _auth.SecretAuth(os.urandom(32), open=True)
    attacks("hostile")
    print(json.dumps(out))
""")

VICTIM = textwrap.dedent(r"""
    import json, sys, threading
    import pycircuit

    class Thing:
        def mark(self, path):
            open(path, "w").close()

    def serve():
        pycircuit.listen("thing", Thing())
        pycircuit.run_in_back(threading.Event().wait)
        return pycircuit.export(pycircuit.perm_ref(Thing())).hex()

    with pycircuit.connect() as c:  # an embedded server, as a program on a fresh machine makes
        blob, worker = pycircuit.spawn(c.hosts()[0], ["victim"], serve)
        mine = pycircuit.export(pycircuit.perm_ref(Thing())).hex()
        rt = pycircuit.dial(worker, "acid")  # the same user reaches its own worker
        print(json.dumps({"embedded": c.url, "client": pycircuit.runtime._runtime.current().url, "client_blob": mine,
                          "worker": worker.url, "worker_blob": blob, "ping": rt.ping()}), flush=True)
        sys.stdin.read()  # until the test is done
        pycircuit.kill(worker)
""")


def _as_nobody(sandbox: dict, plan: dict) -> dict:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": sandbox["home"],
        "PYTHONPATH": sandbox["lib"],
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }

    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", ATTACK, json.dumps(plan)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=drop,
        timeout=90,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture
def victim():
    p = subprocess.Popen(
        [sys.executable, "-c", VICTIM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        yield json.loads(line)
    finally:
        try:
            p.stdin.close()
        except OSError:
            pass  # the victim died already; stop_process reaps it
        stop_process(p, grace=10)


def test_another_user_is_refused_by_servers_workers_and_clients(sandbox, victim):
    server, url = start_server()
    try:
        marks = sandbox["marks"]
        plan = {
            "servers": [
                {"name": "start", "url": url, "mark": os.path.join(marks, "start")},
                {
                    "name": "embedded",
                    "url": victim["embedded"],
                    "mark": os.path.join(marks, "embedded"),
                },
            ],
            "runtimes": [
                {
                    "name": "client",
                    "url": victim["client"],
                    "blob": victim["client_blob"],
                    "mark": os.path.join(marks, "client"),
                },
                {
                    "name": "worker",
                    "url": victim["worker"],
                    "blob": victim["worker_blob"],
                    "mark": os.path.join(marks, "worker"),
                },
            ],
        }
        got = _as_nobody(sandbox, plan)
        # The control: that uid imports pycircuit from the copy and reaches every port ...
        assert got["uid"] == NOBODY and got["imported"].startswith(sandbox["lib"])
        for name in ("start", "embedded", "client", "worker"):
            assert got[f"reach {name}"] == "ok", got
        # ... and is refused there, with a pycircuit error saying why.
        for how, words in (
            ("honest", ("not a runtime of this user",)),
            ("hostile", ("refused", "secret")),
        ):
            attacks = [k for k in got if k.startswith(how)]
            assert len(attacks) == 8
            for k in attacks:
                assert got[k].startswith("NetworkError: "), (k, got[k])
                assert all(w in got[k] for w in words), (k, got[k])
        assert os.listdir(marks) == []  # nothing of theirs ran
        # The same user, with no key and no set-up, still gets through.
        assert victim["ping"] == "pong"
        same = subprocess.run(
            [sys.executable, "-m", "pycircuit.cli", "ls", "-d", url, "/"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert same.returncode == 0 and same.stdout.startswith("/X"), same.stderr
    finally:
        stop_process(server)
    # the keyless server said why it refused
    assert "refused a connection" in server.stderr.read()


def test_secret_file_is_private(tmp_path):
    env = child_env()
    env["HOME"] = str(tmp_path)
    code = "from pycircuit.runtime._auth import user_secret; print(user_secret().hex())"
    first = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    again = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert (
        first.returncode == 0 and first.stdout == again.stdout and len(first.stdout.strip()) == 64
    )
    path = tmp_path / ".config" / "pycircuit" / "secret"
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    path.chmod(0o644)  # readable by others: refused, with the reason
    bad = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert bad.returncode != 0 and "not private to this user" in bad.stderr


def test_server_and_cli_agree_without_any_set_up(tmp_path):
    """A fresh HOME: the server makes the secret, the CLI finds the same one."""
    env = child_env()
    env["HOME"] = str(tmp_path)
    p, url = start_server(env=env)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pycircuit.cli", "ls", "-d", url, "/"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert out.returncode == 0 and out.stdout.startswith("/X"), out.stderr
        wait_until(
            lambda: (tmp_path / ".config" / "pycircuit" / "secret").exists(),
            5,
            what="the secret file",
        )
        other = dict(
            env, HOME=str(tmp_path / "elsewhere")
        )  # another secret: as good as another user
        os.makedirs(other["HOME"])
        out = subprocess.run(
            [sys.executable, "-m", "pycircuit.cli", "ls", "-d", url, "/"],
            capture_output=True,
            text=True,
            env=other,
            timeout=30,
        )
        assert out.returncode != 0 and "Traceback" not in out.stderr and "secret" in out.stderr, (
            out.stderr
        )
    finally:
        stop_process(p)
