"""Public value types that the client and the server share: :class:`Cmd`
(what a process element runs) and the checks of the seed's JSON shape that
process and docker specs use alike.

Below the server and the client in the layers: it imports only ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ElementError

__all__ = ["Cmd", "json_fields", "str_list", "env_list"]


def json_fields(
    obj: Any, what: str, keys: dict[str, str], required: tuple[str, str]
) -> dict[str, Any]:
    """The seed's JSON shape → dataclass fields: keys case-insensitive
    (``keys`` maps lowercase key → field), each at most once; JSON null
    means "not given", as in Go's decoder. ``required`` is (field, key)."""
    if not isinstance(obj, dict):
        raise ElementError(f"a {what} is a JSON object")
    fields: dict[str, Any] = {}
    for key, value in obj.items():
        name = keys.get(key.lower()) if isinstance(key, str) else None
        if name is None:
            raise ElementError(f"unknown {what} key {key!r}")
        if name in fields:
            raise ElementError(f"duplicate {what} key {key!r}")
        fields[name] = value
    if fields.get(required[0]) is None:
        raise ElementError(f"{what} has no {required[1]}")
    return {k: v for k, v in fields.items() if v is not None}


_CMD_KEYS = {k: k for k in ("path", "args", "env", "dir", "scrub")}


def str_list(key: str, value: Any) -> tuple[str, ...]:
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) for v in value)
    ):
        raise ElementError(f"{key} must be a list of strings")
    return tuple(value)


def env_list(value: Any) -> tuple[str, ...]:
    """``Env`` of a command or docker spec, checked the same way for both."""
    env = str_list("Env", value)
    for entry in env:
        if "=" not in entry:
            raise ElementError(f"Env entries are KEY=VALUE strings, not {entry!r}")
    return env


@dataclass(frozen=True)
class Cmd:
    """What to execute. ``env=None`` inherits the server's environment; otherwise
    the child sees exactly these ``"KEY=VALUE"`` entries."""

    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] | None = None
    dir: str | None = None
    scrub: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ElementError("Path must be a non-empty string")
        # Lists are accepted for convenience but stored as tuples, keeping Cmd hashable.
        object.__setattr__(self, "args", str_list("Args", self.args))
        if self.env is not None:
            object.__setattr__(self, "env", env_list(self.env))
        if self.dir is not None and not isinstance(self.dir, str):
            raise ElementError("Dir must be a string")
        if not isinstance(self.scrub, bool):
            raise ElementError("Scrub must be true or false")

    @classmethod
    def from_json(cls, obj: dict) -> Cmd:
        """Build from the seed's JSON shape; keys are case-insensitive."""
        return cls(**json_fields(obj, "command", _CMD_KEYS, required=("path", "Path")))

    def to_json(self) -> dict:
        return {
            "Env": None if self.env is None else list(self.env),
            "Dir": self.dir,
            "Path": self.path,
            "Args": list(self.args),
            "Scrub": self.scrub,
        }
