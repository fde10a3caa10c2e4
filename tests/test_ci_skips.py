"""CI=true turns skips of tests that need root, netns or dockerd into
failures (tests/ci_skips.py); other skips stay skips, and -rs shows why."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import child_env

SAMPLE = '''
import pytest

@pytest.mark.skipif(True, reason="needs network namespaces: `ip netns add` fails here")
def test_netns(): pass

def test_docker_in_fixture():
    pytest.skip("needs a private dockerd: dockerd is not installed")

@pytest.mark.skipif(True, reason="network namespaces need root (run the tests as root)")
def test_root(): pass

def test_ipv6():
    pytest.skip("no IPv6 loopback")

def test_ok(): pass
'''
MODULE_SKIP = '''
import pytest
pytest.skip("needs nftables in network namespaces: nft missing", allow_module_level=True)
def test_never(): pass
'''


def run(tmp_path, ci: str | None, source: str = SAMPLE):
    (tmp_path / "conftest.py").write_text("pytest_plugins = ['ci_skips']\n")
    (tmp_path / "test_sample.py").write_text(source)
    env = child_env()
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
        cwd=tmp_path,
    )


def test_outside_ci_privileged_tests_skip_with_their_reason_shown(tmp_path):
    r = run(tmp_path, None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 4 skipped" in r.stdout, r.stdout
    assert "SKIPPED" in r.stdout and "needs network namespaces" in r.stdout  # -rs


def test_under_ci_privileged_skips_fail_and_others_still_skip(tmp_path):
    r = run(tmp_path, "true")
    assert r.returncode != 0, r.stdout
    out = r.stdout
    # a skip at setup (skipif, fixtures) is an error there, one in the test body a failure
    for head in (
        "ERROR at setup of test_netns",
        "ERROR at setup of test_root",
        "_ test_docker_in_fixture _",
    ):
        assert head in out, out
    assert out.count("may not skip") == 3, out
    assert "1 failed, 1 passed, 1 skipped, 2 errors" in out, out  # the IPv6 one still skips


def test_under_ci_a_privileged_module_level_skip_fails_the_run(tmp_path):
    r = run(tmp_path, "true", MODULE_SKIP)
    assert r.returncode != 0 and "may not skip (needs nftables" in r.stdout, r.stdout
    r = run(tmp_path, None, MODULE_SKIP)
    assert "1 skipped" in r.stdout and "may not skip" not in r.stdout, r.stdout
