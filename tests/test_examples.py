"""The examples in examples/ run as written (each as its own __main__, with an
embedded local server), so the README and examples stay true to the code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, child_env

EXPECT = {
    "hello_spawn.py": ["hello from worker pid", "closure result: 42"],
    "service_refs.py": [
        "bank open at circuit://",
        "balance after 5: 5",
        "balance after a second worker paid in 3×10: 35",
        "no method 'withdraw' on type Account",
    ],
    "deadlines.py": [
        "as completed: [1, 2, 3]",
        "call_within: 'think'",
        "no reply within 0.2 s",
        "still serving: yes",
        "asyncio: ('awaited', 'wait_for timed out')",
    ],
    "spawn_many.py": [
        "10 shards in 10 workers",
        "sum of squares below 1e6: 333332833333500000",
        "first error: 7 is a multiple of 7",
        "with return_exceptions: ['5', '6', \"ValueError('7 is a multiple of 7')\", '8', '9']",
    ],
    "export_import.py": [
        "imported: registry v1 XPERM://",
        "registry says: hello",
        "export of a plain ref refuses: only permanent references",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name):
    # Functions in __main__ travel by value with dill: this also covers a
    # by-value function whose globals include project modules and locks.
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    for text in EXPECT[name]:
        assert text in p.stdout, p.stdout


def test_every_example_is_tested():
    assert sorted(
        f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")
    ) == sorted(EXPECT)


def test_readme_example_runs(tmp_path):
    import re

    text = open(os.path.join(ROOT, "README.md")).read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    p = subprocess.run(
        [sys.executable, str(script)], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "5" and "/demo/Q" in lines[1]
