"""The anchor tree of one server (pure: no sockets, threads or rpyc).

Paths are lists of names below the server's own anchor ``/X…``. An anchor
exists while it holds an element or has descendants: an anchor left empty
disappears, as in the original circuit.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterator

from ..errors import ElementError

__all__ = ["AnchorTree", "parse_path", "check_name"]


def check_name(name: str) -> str:
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or name in (".", "..")
        or name.strip() != name
    ):
        raise ElementError(f"bad anchor name {name!r}")
    return name


def parse_path(path: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"/X…/a/b"`` or ``["X…", "a", "b"]`` → ``["X…", "a", "b"]``."""
    if isinstance(path, str):
        if not path.startswith("/"):
            raise ElementError(f"anchor paths start with '/': {path!r}")
        parts = [p for p in path.split("/") if p]
    elif isinstance(path, (list, tuple)):
        parts = list(path)
    else:
        raise ElementError(f"an anchor path is a str or a list of names, not {type(path).__name__}")
    return [check_name(p) for p in parts]


class _Node:
    __slots__ = ("children", "element")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.element: Any = None


class AnchorTree:
    def __init__(self) -> None:
        self._root = _Node()

    def _find(self, path: list[str]) -> _Node | None:
        node = self._root
        for name in path:
            child = node.children.get(name)
            if child is None:
                return None
            node = child
        return node

    def get(self, path: list[str]) -> Any:
        node = self._find(path)
        return None if node is None else node.element

    def children(self, path: list[str]) -> dict[str, Any]:
        """Child name → that child's element (or None)."""
        node = self._find(path)
        if node is None:
            return {}
        return {name: child.element for name, child in sorted(node.children.items())}

    def set(self, path: list[str], element: Any) -> None:
        if not path:
            raise ElementError("the server anchor itself cannot hold an element")
        if element is None:
            raise ValueError("element is None")
        for name in path:  # validate first: a bad name must not leave empty anchors
            check_name(name)
        node = self._root
        for name in path:
            node = node.children.setdefault(name, _Node())
        if node.element is not None:
            raise ElementError("anchor already has an element")  # the original's words
        node.element = element

    def remove(self, path: list[str], element: Any = None) -> Any:
        """Remove the element at ``path`` (only if it is ``element``, when
        given); prune anchors left empty. Returns the removed element."""
        trail = [self._root]
        for name in path:
            nxt = trail[-1].children.get(name)
            if nxt is None:
                return None
            trail.append(nxt)
        node = trail[-1]
        old = node.element
        if old is None or (element is not None and old is not element):
            return None
        node.element = None
        for i in range(len(path), 0, -1):
            n = trail[i]
            if n.element is None and not n.children:
                del trail[i - 1].children[path[i - 1]]
            else:
                break
        return old

    def walk(self) -> Iterator[tuple[list[str], Any]]:
        """Every (path, element) holding an element, depth first."""
        stack: list[tuple[list[str], _Node]] = [([], self._root)]
        while stack:
            path, node = stack.pop()
            if node.element is not None:
                yield path, node.element
            for name in sorted(node.children, reverse=True):
                stack.append((path + [name], node.children[name]))

    def check(self) -> None:
        """Invariant: no empty anchor below the root."""

        def rec(node: _Node, depth: int) -> None:
            if depth and node.element is None and not node.children:
                raise AssertionError("empty anchor kept")
            for c in node.children.values():
                rec(c, depth + 1)

        rec(self._root, 0)
