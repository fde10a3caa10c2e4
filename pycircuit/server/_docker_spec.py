"""What a docker element runs: :class:`DockerSpec`, checked from the seed's
JSON shape, and the arguments it gives the docker SDK. Needs no docker SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._spec import env_list, json_fields, str_list
from ..errors import ElementError

__all__ = ["DockerSpec", "LABEL", "NAME_PREFIX"]

LABEL = "pycircuit.element"  # every container we create carries this label ...
NAME_PREFIX = "pycircuit-"  # ... and a name starting with this

_KEYS = {  # lowercase JSON key → field
    "image": "image",
    "memory": "memory",
    "cpushares": "cpu_shares",
    "lxc": "lxc",
    "volume": "volume",
    "dir": "dir",
    "entry": "entry",
    "env": "env",
    "path": "path",
    "args": "args",
    "scrub": "scrub",
}


def _opt_str(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ElementError(f"{key} must be a string")
    return value or None  # "" means "not given", as Go's zero value did


@dataclass(frozen=True)
class DockerSpec:
    """What container to run. ``path``/``args`` form the command (the image's
    default command when both are empty); ``entry`` replaces the image's
    entrypoint; ``env=None`` keeps the image's environment, otherwise these
    ``"KEY=VALUE"`` entries are added to it. ``volume`` entries are container
    paths (anonymous volumes) or ``"host:container[:ro]"`` bind mounts."""

    image: str
    memory: int = 0  # bytes; 0 = no limit
    cpu_shares: int = 0  # 0 = the daemon's default
    lxc: tuple[str, ...] = ()
    volume: tuple[str, ...] = ()
    dir: str | None = None
    entry: str | None = None
    env: tuple[str, ...] | None = None
    path: str | None = None
    args: tuple[str, ...] = ()
    scrub: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if not isinstance(self.image, str) or not self.image:
            raise ElementError("Image must be a non-empty string")
        for key, value in (("Memory", self.memory), ("CpuShares", self.cpu_shares)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ElementError(f"{key} must be a non-negative integer")
        set_("lxc", str_list("Lxc", self.lxc))
        if self.lxc:
            raise ElementError("Lxc options are not supported: LXC no longer exists in Docker")
        set_("volume", str_list("Volume", self.volume))
        for v in self.volume:
            if not v:
                raise ElementError("Volume entries must be non-empty")
        if self.env is not None:
            set_("env", env_list(self.env))
        set_("dir", _opt_str("Dir", self.dir))
        set_("entry", _opt_str("Entry", self.entry))
        set_("path", _opt_str("Path", self.path))
        set_("args", str_list("Args", self.args))
        if not isinstance(self.scrub, bool):
            raise ElementError("Scrub must be true or false")

    @classmethod
    def from_json(cls, obj: dict) -> DockerSpec:
        """Build from the seed's JSON shape; keys are case-insensitive, null means "not given"."""
        return cls(**json_fields(obj, "docker spec", _KEYS, required=("image", "Image")))

    def to_json(self) -> dict:
        return {
            "Image": self.image,
            "Memory": self.memory,
            "CpuShares": self.cpu_shares,
            "Lxc": list(self.lxc),
            "Volume": list(self.volume),
            "Dir": self.dir,
            "Entry": self.entry,
            "Env": None if self.env is None else list(self.env),
            "Path": self.path,
            "Args": list(self.args),
            "Scrub": self.scrub,
        }

    @property
    def command(self) -> list[str] | None:
        cmd = ([self.path] if self.path else []) + list(self.args)
        return cmd or None

    def create_kwargs(self, api: Any, name: str) -> dict:
        """The docker SDK's ``create_container`` arguments for this spec."""
        binds = [v for v in self.volume if ":" in v]
        volumes = [v for v in self.volume if ":" not in v]
        host_config = api.create_host_config(
            network_mode="none",
            mem_limit=self.memory or None,
            cpu_shares=self.cpu_shares or None,
            binds=binds or None,
        )
        return dict(
            image=self.image,
            command=self.command,
            # detach=False with stdin_open=True makes the SDK set StdinOnce and AttachStd*.
            stdin_open=True,
            tty=False,
            detach=False,
            environment=None if self.env is None else list(self.env),
            working_dir=self.dir,
            # A list, so the SDK does not shell-split it: Entry is one executable, as --entrypoint.
            entrypoint=[self.entry] if self.entry else None,
            volumes=volumes or None,
            host_config=host_config,
            labels={LABEL: "docker"},
            name=name,
        )
