"""The zygote's cache of compiled worker modules (``pycircuit.spawn._codecache``):
directly on a module file, then end to end with a real server whose workers
import a module from a temporary directory."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from importlib.machinery import SourceFileLoader

import pytest

import pycircuit
from conftest import child_env, start_server, stop_process, wait_until
from pycircuit.spawn import _codecache


def write_module(path, value: int, pad: int = 0) -> None:
    path.write_text(
        textwrap.dedent(f"""
        import os
        from pycircuit.spawn import _codecache
        VALUE = {value}{' ' * pad}

        def value():
            return VALUE

        def cached():
            return __file__ in _codecache._cache

        def has(path):
            return path in _codecache._cache
    """)
    )


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(_codecache, "_cache", {})


def test_cached_code_is_served_until_the_file_changes(tmp_path, fresh_cache):
    path = tmp_path / "ccmod.py"
    write_module(path, 1)
    assert _codecache.remember(str(path))
    loader = SourceFileLoader("ccmod", str(path))
    code = _codecache._cached_get_code(loader, "ccmod")
    assert code is _codecache._cache[str(path)][2]
    write_module(path, 2, pad=3)  # another size: stale
    fresh = _codecache._cached_get_code(loader, "ccmod")
    assert fresh is not code
    ns: dict = {}
    exec(fresh, ns)
    assert ns["VALUE"] == 2


def test_remember_refuses_what_it_cannot_compile_and_stops_at_its_limit(
    tmp_path, fresh_cache, monkeypatch
):
    bad = tmp_path / "bad.py"
    bad.write_text("def (:\n")
    assert not _codecache.remember(str(bad))
    assert not _codecache.remember(str(tmp_path / "missing.py"))
    assert not _codecache.remember(str(tmp_path / "data.txt"))
    monkeypatch.setattr(_codecache, "MAX_MODULES", 1)
    good = tmp_path / "good.py"
    good.write_text("X = 1\n")
    other = tmp_path / "other.py"
    other.write_text("Y = 1\n")
    assert _codecache.remember(str(good)) and not _codecache.remember(str(other))
    monkeypatch.setattr(_codecache, "MAX_MODULES", 10)
    monkeypatch.setattr(_codecache, "MAX_SOURCE", 4)
    assert not _codecache.remember(str(other))  # larger than the bound


def test_new_sources_lists_the_source_modules_imported_without_the_cache(
    tmp_path, monkeypatch, fresh_cache
):
    from importlib.machinery import SourceFileLoader

    (tmp_path / "ccnew.py").write_text("X = 1\n")
    (tmp_path / "cchit.py").write_text("X = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(SourceFileLoader, "get_code", _codecache._cached_get_code)
    assert _codecache.remember(str(tmp_path / "cchit.py"))
    _codecache.reset_misses()
    try:
        importlib.import_module("ccnew")
        importlib.import_module("cchit")
        assert _codecache.new_sources() == [str(tmp_path / "ccnew.py")]
        _codecache.reset_misses()
        assert _codecache.new_sources() == []
    finally:
        sys.modules.pop("ccnew", None)
        sys.modules.pop("cchit", None)
        _codecache.reset_misses()


@pytest.fixture
def module_server(tmp_path, monkeypatch):
    """A server whose workers can import modules from tmp_path, and a client."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    p, url = start_server(env=env)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        c = pycircuit.connect(url)
        try:
            yield c, c.hosts()[0]
        finally:
            c.close()
    finally:
        stop_process(p)
        sys.modules.pop("ccwork", None)


def test_workers_get_the_module_compiled_and_never_a_stale_one(tmp_path, module_server):
    c, host = module_server
    path = tmp_path / "ccwork.py"
    write_module(path, 1)
    mod = importlib.import_module("ccwork")
    assert c.spawn(host, None, mod.value)[0] == 1
    # The first worker reported the module; workers forked after that have
    # its code (spares forked earlier do not: spawn until a new one comes).
    wait_until(
        lambda: c.spawn(host, None, mod.cached)[0], timeout=20, what="a worker with cached code"
    )
    write_module(path, 2, pad=5)
    assert c.spawn(host, None, mod.value)[0] == 2  # the edit is seen, not the cached code


def test_a_daemon_worker_reports_its_module_too(tmp_path, module_server):
    """A worker that stays alive (``run_in_back``) reports what it imported
    once its function's reply has left, not only when it exits."""
    c, host = module_server
    write_module(tmp_path / "ccwork.py", 1)
    daemon_path = tmp_path / "ccdaemon.py"
    daemon_path.write_text(
        "import threading\n"
        "import pycircuit\n\n"
        "def serve():\n"
        "    pycircuit.run_in_back(threading.Event().wait)\n"
        "    return 7\n"
    )
    work = importlib.import_module("ccwork")
    daemon = importlib.import_module("ccdaemon")
    try:
        value, addr = c.spawn(host, None, daemon.serve)
        assert value == 7
        try:
            wait_until(
                lambda: c.spawn(host, None, work.has, str(daemon_path))[0],
                timeout=20,
                what="a worker with the daemon's module compiled",
            )
        finally:
            c.kill(addr)
    finally:
        sys.modules.pop("ccdaemon", None)
