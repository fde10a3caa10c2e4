"""The static checks gate the suite: ``ruff check``, ``ruff format --check``
and ``mypy``, with the configuration committed in ``pyproject.toml``. They run
here, inside the README's one test command, so a type error or an undefined
name fails CI like a failing test does. Each check is skipped (with the reason
shown by ``-rs``) only where its tool is not installed; under ``CI=true`` a
missing tool fails instead."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest
from ci_skips import in_ci

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _tool(name: str) -> list[str]:
    exe = shutil.which(name)
    if exe is None:
        if in_ci():
            pytest.fail(f"CI=true: {name} must be installed (it is in the test extra)")
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return [exe]


def test_ruff_lint():
    r = _run([*_tool("ruff"), "check", "--no-cache", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = _run([*_tool("ruff"), "format", "--check", "--no-cache", "."])
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    _tool("mypy")
    r = _run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_wheel_ships_py_typed():
    # setuptools includes package data named in setup.cfg; the marker must be among it,
    # or users' type checkers ignore our hints.
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    data = cfg.get("options.package_data", "pycircuit", fallback="")
    assert "py.typed" in data.split()
    assert (ROOT / "pycircuit" / "py.typed").is_file()
