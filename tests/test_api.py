"""The public surface: ``pycircuit.__all__``, the one exception tree, and
private implementation modules."""

from __future__ import annotations

import inspect
import pathlib
import sys

import pytest

import pycircuit
from pycircuit import errors

PKG_DIR = pathlib.Path(pycircuit.__file__).resolve().parent
SUBPACKAGES = ["runtime", "xref", "spawn", "acid", "server", "cli"]


def test_every_public_name_exists():
    missing = [name for name in pycircuit.__all__ if not hasattr(pycircuit, name)]
    assert not missing


def test_dir_lists_every_public_name():
    assert set(pycircuit.__all__) <= set(dir(pycircuit))


def test_import_is_lazy_and_the_spawn_function_is_not_shadowed_by_its_package():
    import subprocess

    code = (
        "import sys, pycircuit\n"
        "assert 'pycircuit.runtime._runtime' not in sys.modules, 'runtime loaded eagerly'\n"
        "import pycircuit.spawn._worker\n"  # the subpackage, loaded before the name is used
        "assert callable(pycircuit.spawn) and pycircuit.spawn.__module__ == 'pycircuit._api'\n"
        "from pycircuit import *\n"
        "assert Cmd is pycircuit.Cmd and spawn is pycircuit.spawn\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_all_has_no_duplicates():
    names = sorted(pycircuit.__all__)
    dups = sorted({a for a, b in zip(names, names[1:]) if a == b})
    assert not dups
    assert all(isinstance(n, str) for n in names)


def test_errors_all_is_exactly_its_exception_classes():
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert defined  # the scan found the tree
    assert sorted(errors.__all__) == sorted(defined)
    assert len(errors.__all__) == len(set(errors.__all__))


def test_every_exception_in_errors_derives_from_circuit_error():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert inspect.isclass(cls) and issubclass(cls, errors.CircuitError), name
    assert errors.CircuitError.__bases__ == (Exception,)


def test_exceptions_reexported_at_top_level_are_the_same_objects():
    for name in pycircuit.__all__:
        obj = getattr(pycircuit, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert getattr(errors, name) is obj, name
            assert issubclass(obj, errors.CircuitError), name


def test_public_exceptions_anywhere_in_the_package_are_circuit_errors():
    # every pycircuit module the public names load (they are imported on first use)
    for name in pycircuit.__all__:
        getattr(pycircuit, name)
    mods = [
        m
        for n, m in sorted(sys.modules.items())
        if (n == "pycircuit" or n.startswith("pycircuit.")) and m
    ]
    assert any(n.endswith("._wire") for n in (m.__name__ for m in mods))
    found = []
    for mod in mods:
        for name, obj in vars(mod).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == mod.__name__
                and not name.startswith(
                    "_"
                )  # private control flow (e.g. _codec._NeedDill) never escapes
            ):
                found.append(obj)
                assert issubclass(obj, errors.CircuitError), f"{mod.__name__}.{name}"
    assert len(found) > len(errors.__all__)  # at least one outside errors (WireError)


def test_documented_multiple_inheritance():
    # catchable both as a circuit error and as the matching builtin
    assert issubclass(errors.RemoteImportError, errors.SerializationError)
    assert issubclass(errors.RemoteImportError, ImportError)
    assert issubclass(errors.NoSuchMethodError, AttributeError)
    assert issubclass(errors.StaleAddressError, errors.NetworkError)


def test_remote_error_survives_pickling():
    import pickle

    e = errors.RemoteError("mod.Kind", "went wrong")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is errors.RemoteError
    assert (e2.remote_type, e2.message, str(e2)) == (
        "mod.Kind",
        "went wrong",
        "mod.Kind: went wrong",
    )


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_implementation_modules_are_private(sub):
    d = PKG_DIR / sub
    assert (d / "__init__.py").is_file(), sub
    public = sorted(
        p.name
        for p in d.iterdir()
        if p.name != "__pycache__"
        and (p.suffix == ".py" or p.is_dir())
        and p.name not in ("__init__.py", "__main__.py")
        and not p.name.startswith("_")
    )
    assert not public, f"public modules in pycircuit/{sub}: {public}"
    # and there is something to check
    assert any(
        p.name.startswith("_") and p.suffix == ".py" and p.stem not in ("__init__", "__main__")
        for p in d.iterdir()
    )
