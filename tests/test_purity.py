"""The pure modules stay pure: read with ``ast`` (nothing is imported), none
of them imports sockets, threads, processes, event loops or rpyc, directly or
through a non-pure pycircuit module. The one exception is ``_codec``, which
may use ``threading.local`` (its per-thread pickler) and nothing else of
``threading``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import pycircuit

PKG_DIR = pathlib.Path(pycircuit.__file__).resolve().parent

PURE = {
    "pycircuit.errors": "errors.py",
    "pycircuit.runtime._wire": "runtime/_wire.py",
    "pycircuit.runtime._codec": "runtime/_codec.py",
    "pycircuit.runtime._addr": "runtime/_addr.py",
    "pycircuit.xref._leases": "xref/_leases.py",
    "pycircuit.server._members": "server/_members.py",
    "pycircuit.server._swim": "server/_swim.py",
    "pycircuit.server._swim_view": "server/_swim_view.py",
    "pycircuit.server._swim_queue": "server/_swim_queue.py",
    "pycircuit.server._swim_wire": "server/_swim_wire.py",
    "pycircuit.server._anchors": "server/_anchors.py",
}

FORBIDDEN = {
    "socket",
    "socketserver",
    "ssl",
    "select",
    "selectors",
    "threading",
    "_thread",
    "concurrent",
    "subprocess",
    "multiprocessing",
    "asyncio",
    "rpyc",
}

# module -> names of ``threading`` it may use (as ``threading.<name>``)
THREADING_ALLOWED = {"pycircuit.runtime._codec": {"local"}}


def parse(modname: str) -> ast.Module:
    path = PKG_DIR / PURE[modname]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(modname: str, tree: ast.Module) -> list[tuple[str, int]]:
    """Absolute names of every module imported anywhere in the file (also
    inside functions), with line numbers. For ``from X import a`` both ``X``
    and ``X.a`` are listed (``a`` may be a submodule)."""
    package = modname.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                assert base, f"relative import above the top package in {modname}"
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            if node.module:
                out.append((mod, node.lineno))
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call):
            # __import__("x") / importlib.import_module("x") with a literal name
            f = node.func
            name = (
                f.id
                if isinstance(f, ast.Name)
                else f.attr
                if isinstance(f, ast.Attribute)
                else None
            )
            if (
                name in ("__import__", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                if isinstance(node.args[0].value, str):
                    out.append((node.args[0].value, node.lineno))
    return out


def root(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("modname", sorted(PURE))
def test_pure_module_imports_nothing_impure(modname):
    tree = parse(modname)
    allowed = {"threading"} if modname in THREADING_ALLOWED else set()
    bad = [
        (n, line) for n, line in imported_modules(modname, tree) if root(n) in FORBIDDEN - allowed
    ]
    assert not bad, f"{modname} imports {bad}"


@pytest.mark.parametrize("modname", sorted(PURE))
def test_pure_module_imports_only_pure_pycircuit_modules(modname):
    tree = parse(modname)
    for name, line in imported_modules(modname, tree):
        if root(name) != "pycircuit":
            continue
        # ``from ..errors import X`` lists pycircuit.errors and pycircuit.errors.X
        if name in PURE or name.rpartition(".")[0] in PURE:
            continue
        pytest.fail(f"{modname}:{line} imports {name}, which is not a pure module")


@pytest.mark.parametrize("modname", sorted(THREADING_ALLOWED))
def test_codec_uses_only_threading_local(modname):
    tree = parse(modname)
    allowed = THREADING_ALLOWED[modname]
    # only ``import threading`` (no ``from threading import ...``, no alias)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and root(node.module) == "threading":
            pytest.fail(f"{modname}:{node.lineno}: from threading import ...")
        if isinstance(node, ast.Import):
            for a in node.names:
                if root(a.name) == "threading":
                    assert a.name == "threading" and a.asname is None, ast.dump(node)
    used_attrs = set()
    attr_values = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "threading"
        ):
            used_attrs.add(node.attr)
            attr_values.add(id(node.value))
    assert used_attrs <= allowed, used_attrs - allowed
    # ``threading`` itself is never passed around (it only appears as threading.<allowed>)
    bare = [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id == "threading" and id(n) not in attr_values
    ]
    assert not bare, f"bare uses of threading at lines {bare}"


def test_import_scanner_sees_what_it_should():
    # guard against a scanner that finds nothing: it must see _codec's imports
    names = {
        n
        for n, _ in imported_modules("pycircuit.runtime._codec", parse("pycircuit.runtime._codec"))
    }
    assert {"threading", "pickle", "dill", "pycircuit.errors"} <= names
    src = "import socket\nfrom ..errors import X\ndef f():\n    from rpyc.core import brine\n    __import__('select')\n"
    found = {n for n, _ in imported_modules("pycircuit.runtime._wire", ast.parse(src))}
    assert {"socket", "pycircuit.errors", "rpyc.core", "select"} <= found


@pytest.mark.parametrize("modname", sorted(PURE))
def test_pure_module_is_documented_as_pure(modname):
    # every pure module but the exception tree says so in its docstring
    doc = ast.get_docstring(parse(modname)) or ""
    if modname != "pycircuit.errors":
        assert "pure" in doc.lower(), modname


# -- the layer order ---------------------------------------------------------
# The package docstring's layers, bottom up; a module imports only from its
# own layer or below (also inside functions and under TYPE_CHECKING: a lazy
# import is still a dependency). ``_elements`` (the client's element
# handles) and ``web`` (a front end on the client API, started by the CLI)
# sit with the client API; the top package ``pycircuit`` re-exports that
# API, so it sits there too.
LAYERS: list[set[str]] = [
    {"pycircuit.errors"},
    {"pycircuit.runtime", "pycircuit.xref"},
    {"pycircuit.acid", "pycircuit.spawn"},
    {
        "pycircuit",
        "pycircuit.server",
        "pycircuit._client",
        "pycircuit._api",
        "pycircuit._elements",
        "pycircuit.web",
    },
    {"pycircuit.cli"},
]

# Known violations in modules this test's authors do not own, each to be
# fixed where it is: (importing module, imported module).
LAYER_EXCEPTIONS: set[tuple[str, str]] = set()


def layer_of(modname: str) -> int:
    """The layer of a pycircuit module: that of its longest listed prefix."""
    best, rank = "", -1
    for i, names in enumerate(LAYERS):
        for n in names:
            if (modname == n or modname.startswith(n + ".")) and len(n) > len(best):
                best, rank = n, i
    assert rank >= 0, f"{modname} is in no layer: add it to LAYERS"
    return rank


def all_modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PKG_DIR.rglob("*.py")):
        rel = path.relative_to(PKG_DIR).with_suffix("")
        parts = ["pycircuit", *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def module_imports(modname: str, path: pathlib.Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # imported_modules resolves relative imports against the parent
    # package; a package's __init__ is its own parent.
    anchor = modname + "._" if path.name == "__init__.py" else modname
    return [(n, line) for n, line in imported_modules(anchor, tree) if root(n) == "pycircuit"]


def test_every_module_imports_only_its_own_layer_or_below():
    bad = []
    mods = all_modules()
    assert len(mods) > 50 and "pycircuit.runtime._runtime" in mods  # the walk found the package
    for modname, path in mods.items():
        mine = layer_of(modname)
        for name, line in module_imports(modname, path):
            # ``from . import x`` names pycircuit.pkg.x, which may be a
            # function, not a module: its layer is its package's either way.
            if layer_of(name) > mine and (modname, name) not in LAYER_EXCEPTIONS:
                bad.append(f"{path.relative_to(PKG_DIR)}:{line} ({modname}) imports {name}")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_layer_exceptions_are_still_needed():
    # an exception whose import is gone must leave the list, so it only shrinks
    found = {
        (modname, name)
        for modname, path in all_modules().items()
        for name, _ in module_imports(modname, path)
    }
    assert LAYER_EXCEPTIONS <= found, LAYER_EXCEPTIONS - found


def test_layer_scanner_sees_lazy_and_relative_imports():
    src = "from ..acid import install\ndef f():\n    from ..cli import _main\n"
    found = {n for n, _ in imported_modules("pycircuit.runtime._x", ast.parse(src))}
    assert {"pycircuit.acid", "pycircuit.cli._main"} <= found
    assert all(layer_of(n) > layer_of("pycircuit.runtime._x") for n in found)
    assert layer_of("pycircuit") == layer_of("pycircuit._api") < layer_of("pycircuit.cli._main")
