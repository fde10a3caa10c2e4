"""Under ``CI=true`` a test that needs root, network namespaces, nftables or
a dockerd may not skip: its skip is reported as a failure, so a CI machine
that lacks them cannot pass while testing less. Elsewhere such tests skip,
with their reason shown (``-rs``). Loaded by ``conftest.py``."""

from __future__ import annotations

import os
import re

import pytest

PRIVILEGED = re.compile(r"\b(root|netns|network namespaces?|nftables|dockerd?)\b", re.IGNORECASE)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _reason(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)


def _fail_if_privileged(rep) -> None:
    if rep.skipped and not hasattr(rep, "wasxfail") and in_ci():
        reason = _reason(rep)
        if PRIVILEGED.search(reason):
            rep.outcome = "failed"
            rep.longrepr = (
                f"CI=true: a test that needs root, netns or dockerd may not skip ({reason})"
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_privileged(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_if_privileged(outcome.get_result())
