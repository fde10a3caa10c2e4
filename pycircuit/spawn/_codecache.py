"""Compiled code of the modules workers import, kept by the zygote.

A worker imports the module of the function it runs (``myproject.tasks``,
say) after it is forked: the zygote could not know it. That import reads
and unmarshals a ``.pyc``, or compiles the source (``PYTHONDONTWRITEBYTECODE``,
a read-only tree: ~1 ms for a small module). Workers tell their server which
source modules they imported; the server passes the paths to the zygote,
which compiles them (compiling runs nothing) and keeps the code objects, so
the next workers, forked with the cache in memory, only run the module body.

A cached code object is used only while the file's size and modification
time are those it was compiled from (the ``.pyc`` rule). Layer: spawn (no
pycircuit imports; used by ``_zygote`` and ``_worker``).
"""

from __future__ import annotations

import os
from importlib.machinery import SourceFileLoader
from types import CodeType

MAX_MODULES = 512  # compiled code is a few KB to a few hundred KB a module
MAX_REPORT = 64  # paths a worker reports
MAX_SOURCE = 4 << 20  # bytes: anyone who can call the kernel can name files, so bound the work

_cache: dict[str, tuple[int, int, CodeType]] = {}
# Source files this process imported without the cache's help since
# ``reset_misses``: what a worker reports. Recorded as the imports happen, so
# that reporting never walks ``sys.modules`` (in a fork, touching every
# module object copies the pages they live on).
_misses: list[str] = []
_original_get_code = SourceFileLoader.get_code


def _cached_get_code(self: SourceFileLoader, fullname: str) -> CodeType | None:
    path = self.get_filename(fullname)
    hit = _cache.get(path)
    if hit is not None:
        try:
            st = os.stat(path)
        except OSError:  # gone or unreadable: a miss, and the import reports what is wrong
            pass
        else:
            if (st.st_mtime_ns, st.st_size) == hit[:2]:
                return hit[2]
    if len(_misses) < MAX_REPORT and path.endswith(".py"):
        _misses.append(path)
    return _original_get_code(self, fullname)


def install() -> None:
    """In the zygote, before it forks: imports consult the cache."""
    # Patching the class is the point: every import of a source file in
    # this process (and its forks) goes through the cache.
    SourceFileLoader.get_code = _cached_get_code  # type: ignore[method-assign,assignment]


def remember(path: str) -> bool:
    """Compile ``path`` (a ``.py`` file) into the cache; False if it cannot be."""
    if path in _cache or len(_cache) >= MAX_MODULES or not path.endswith(".py"):
        return False
    try:
        st = os.stat(path)
        if st.st_size > MAX_SOURCE:
            return False
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec", dont_inherit=True)
    except (
        OSError,
        SyntaxError,
        ValueError,
    ):  # not cached: the worker's own import compiles it and reports errors
        return False
    _cache[path] = (st.st_mtime_ns, st.st_size, code)
    return True


def reset_misses() -> None:
    """In the zygote, before it forks: its own imports are not the workers'."""
    _misses.clear()


def new_sources() -> list[str]:
    """Source files imported since ``reset_misses`` that the cache does not hold."""
    out: list[str] = []
    for path in _misses:
        if path not in _cache and path not in out:
            out.append(path)
    return out
