"""The team's error rule, checked over the package's source: no ``except``
hides an error silently. A handler whose body only drops the error (``pass``,
``continue``, ``break``, ``...``, a bare or constant ``return``) must say why
in a comment (on the ``except`` line or inside the handler); anything else
logs (once, with its cause, through a ``pycircuit.*`` logger) or raises.
And library code does not print: only the CLI writes to the terminal, and a
worker's own stdout/stderr (saved as its remains) where that is the product.

ALLOWLIST: files owned by others while this rule was applied, not yet
audited; remove a file from it once it is."""

from __future__ import annotations

import ast
import io
import os
import tokenize

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pycircuit")

ALLOWLIST: set[str] = set()

# Output that is the product, not logging: (file, function) -> why.
PRODUCT_OUTPUT = {
    (
        "spawn/_worker.py",
        "body",
    ): "a background function's traceback, kept in the worker's saved stderr",
    ("spawn/_worker.py", "child_main"): "why a worker could not boot, kept in its saved stderr",
}

_NON_REASONS = ("noqa", "type:", "pragma", "fmt:")


def _sources() -> list[str]:
    out = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                out.append(os.path.relpath(os.path.join(root, f), PKG).replace(os.sep, "/"))
    return sorted(out)


def _comments(text: str) -> dict[int, str]:
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def _drops(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Pass, ast.Continue, ast.Break)):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # ``...`` or a string
        return True
    return isinstance(stmt, ast.Return) and (
        stmt.value is None or isinstance(stmt.value, ast.Constant)
    )


def _is_reason(comment: str) -> bool:
    return len(comment.split()) >= 2 and not comment.lower().startswith(_NON_REASONS)


def silent_handlers(rel: str) -> list[str]:
    """``file:line`` of each handler that drops its error without a reason."""
    text = open(os.path.join(PKG, rel), encoding="utf-8").read()
    comments = _comments(text)
    bad = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ExceptHandler) and all(_drops(s) for s in node.body):
            lines = range(node.lineno, node.end_lineno + 1)
            if not any(_is_reason(comments.get(n, "")) for n in lines):
                bad.append(f"{rel}:{node.lineno}")
    return bad


def terminal_writes(rel: str) -> list[str]:
    """``file:line`` of print / sys.stdout|stderr.write / traceback.print_*
    outside PRODUCT_OUTPUT."""
    tree = ast.parse(open(os.path.join(PKG, rel), encoding="utf-8").read())
    bad = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = (
                child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            )
            if (
                isinstance(child, ast.Call)
                and _writes(child.func)
                and (rel, func) not in PRODUCT_OUTPUT
            ):
                bad.append(f"{rel}:{child.lineno}")
            visit(child, name)

    visit(tree, "")
    return bad


def _writes(f: ast.expr) -> bool:
    if isinstance(f, ast.Name):
        return f.id == "print"
    if isinstance(f, ast.Attribute):
        if f.attr in ("print_exc", "print_exception", "print_stack") and isinstance(
            f.value, ast.Name
        ):
            return f.value.id == "traceback"
        if (
            f.attr == "write"
            and isinstance(f.value, ast.Attribute)
            and f.value.attr in ("stdout", "stderr")
        ):
            return isinstance(f.value.value, ast.Name) and f.value.value.id == "sys"
    return False


AUDITED = [f for f in _sources() if f not in ALLOWLIST]


def test_allowlist_names_existing_files():
    assert ALLOWLIST <= set(_sources()), ALLOWLIST - set(_sources())


@pytest.mark.parametrize("rel", AUDITED)
def test_no_handler_drops_an_error_without_a_reason(rel):
    assert silent_handlers(rel) == []


@pytest.mark.parametrize("rel", [f for f in AUDITED if not f.startswith("cli/")])
def test_library_code_does_not_print(rel):
    assert terminal_writes(rel) == []


def test_the_checker_finds_what_it_should(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(
        "def f():\n"
        "    try:\n        g()\n    except OSError:\n        pass\n"  # 4: silent
        "    try:\n        g()\n    except OSError:  # the file may be gone: fine\n        pass\n"
        "    for x in y:\n        try:\n            g()\n        except KeyError:\n            continue\n"  # 13
        "    try:\n        g()\n    except ValueError:\n        # ours to ignore: a retry follows\n        return None\n"
        "    try:\n        g()\n    except ValueError:  # noqa\n        return False\n"  # 22: noqa is no reason
        "    try:\n        g()\n    except ValueError as e:\n        log.debug('x', exc_info=e)\n"
        "    print('hi')\n"
    )
    monkeypatch.setattr(__import__(__name__), "PKG", str(tmp_path))
    assert sorted(silent_handlers("m.py")) == ["m.py:13", "m.py:22", "m.py:4"]
    assert terminal_writes("m.py") == ["m.py:28"]


# What the library logs reaches a CLI user as one line per record.
CLI_LOGGING = """
import logging, sys
from pycircuit.cli import _main
_main._setup_logging()
_main._setup_logging()   # idempotent: main() may run twice in one process
logging.getLogger("pycircuit.server._discovery").warning("discovery on %s fails", "lo")
logging.getLogger("pycircuit.y").info("not shown")
logging.getLogger("zeroconf").warning("not ours: not shown by our handler")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("pycircuit.z").warning("with its cause\\nand more", exc_info=True)
"""


def test_the_cli_shows_library_warnings_as_one_line_each():
    import subprocess
    import sys
    from conftest import child_env

    r = subprocess.run(
        [sys.executable, "-c", CLI_LOGGING],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env() | {"PYCIRCUIT_DEBUG": ""},
    )
    assert r.returncode == 0, r.stderr
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("pycircuit:")]
    assert ours == [
        "pycircuit: discovery on lo fails",
        "pycircuit: with its cause (ZeroDivisionError: division by zero)",
    ], r.stderr
    assert "Traceback" not in r.stderr
