"""Docker elements: one container run on behalf of a user.

Standalone and thread-safe, like :mod:`._proc`: the server's kernel wraps a
:class:`DockerElement` and hands its methods to remote callers. The element
talks to a Docker daemon through the ``docker`` SDK (never the ``docker`` CLI).

Standard streams: the container is created with ``OpenStdin``/``StdinOnce``
and no TTY, and *before* it is started we open three attach connections, one
per stream (stdin only, stdout only, stderr only). Attaching before starting
loses no output: dockerd wires an attach to the container's streams before it
answers the request. One connection per stream keeps the streams independent,
as pipes are for a process: an unread stdout holds up stdout only. Closing
stdin half-closes the stdin connection; because of ``StdinOnce`` dockerd then
closes the container's stdin, which reads EOF.

Differences from :class:`._proc.ProcElement`:

* ``wait`` returns at the container's exit, as for a process; it is *done*
  (auto-scrub removes it) once it has exited and its output has arrived (it
  may still be unread), where a process also needs stdin closed and output read.
* ``peek``/``wait`` give the container's inspect data (``State.ExitCode`` ...).
* ``scrub`` removes the container (killing it if it runs) and its anonymous
  volumes; the process element's OS process, in contrast, kept running.
* Unread output is buffered up to 1 MiB per stream; beyond that the container
  feels back-pressure. dockerd gives a consumer 2 s after the container's exit
  and then drops what it could not deliver, so a container that writes more
  than ~1 MiB nobody reads and then exits loses the rest.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import docker
import requests
from docker import errors as _derrors

from ..errors import ElementError
from ._docker_attach import AttachConn, AttachOutput
from ._docker_spec import LABEL, NAME_PREFIX, DockerSpec
from ._signals import parse_signal
from ._stdio import StdioElement

__all__ = [
    "DockerSpec",
    "DockerConfig",
    "DockerElement",
    "docker_client_factory",
    "LABEL",
    "NAME_PREFIX",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DockerConfig:
    """Bounds of a docker element. ``eof_grace``: after the container's exit,
    how long its output connections get to reach EOF (dockerd itself gives
    a consumer 2 s and then drops the rest) before we cut them."""

    eof_grace: float = 10.0


# Errors the SDK lets through when the daemon is unreachable or misbehaves.
_API_ERRORS = (_derrors.DockerException, requests.RequestException, OSError)


def docker_client_factory(host: str | None = None) -> docker.DockerClient:
    """A client for ``host`` (``"unix:///run/docker.sock"``, ``"tcp://h:2375"``);
    with ``host=None`` the environment decides (``DOCKER_HOST`` etc., as the docker CLI)."""
    try:
        if host is None:
            return docker.from_env()
        return docker.DockerClient(base_url=host)
    except _API_ERRORS as e:
        raise ElementError(f"docker daemon unavailable: {e}") from None


def _explain(e: BaseException) -> str:
    if isinstance(e, _derrors.APIError):
        return str(e.explanation or e)
    return str(e) or type(e).__name__


# --------------------------------------------------------------------------- the element


class DockerElement(StdioElement):
    kind = "docker"

    def __init__(
        self,
        spec: DockerSpec,
        client_factory: Callable[[], docker.DockerClient],
        on_done: Callable[[DockerElement], None] = lambda el: None,
        cfg: DockerConfig = DockerConfig(),
    ) -> None:
        if not isinstance(spec, DockerSpec):
            raise ElementError("DockerElement needs a DockerSpec")
        super().__init__(on_done)
        self._spec = spec
        self._cfg = cfg
        self._factory = client_factory
        self._start_lock = threading.Lock()  # scrub waits for a start in flight
        self._api: Any = None
        self._id: str | None = None
        self._name: str | None = None
        self._started = False
        self._exited = False
        self._last: dict | None = None  # the latest inspect data (final once done)
        self._error: str | None = None  # why start failed
        self._stdin: AttachConn | None = None
        self._stdin_dead = False  # the container exited: writes fail
        self._stdin_shut = False  # EOF sent

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create and start the container; failure raises ElementError and leaves no container."""
        with self._start_lock:
            with self._lock:
                if self._started:
                    raise ElementError("container already started")
                if self._scrubbed:
                    raise ElementError("aborted")
                self._started = True
            try:
                client = self._factory()
            except ElementError as e:
                raise self._failed(str(e)) from None
            except _API_ERRORS as e:
                raise self._failed(f"docker daemon unavailable: {_explain(e)}") from None
            api = self._api = getattr(client, "api", client)  # a DockerClient, or an APIClient
            name = NAME_PREFIX + secrets.token_hex(8)
            try:
                cid = api.create_container(**self._spec.create_kwargs(api, name))["Id"]
            except _derrors.ImageNotFound:
                raise self._failed(f"no such image: {self._spec.image}") from None
            except _API_ERRORS as e:
                raise self._failed(f"docker create: {_explain(e)}") from None
            conns: list[AttachConn] = []
            try:
                stdin = AttachConn(api, cid, stdin=1)
                conns.append(stdin)
                for stream in ("stdout", "stderr"):
                    conns.append(AttachConn(api, cid, **{stream: 1}))
                with self._lock:
                    self._id, self._name = cid, name
                    self._stdin = stdin
                    for stream, conn in zip(("stdout", "stderr"), conns[1:], strict=True):
                        self._outputs[stream] = AttachOutput(stream, conn, self._check_done)
                api.start(cid)
            except BaseException as e:
                for conn in conns:
                    conn.close()
                self._remove_quietly(cid)
                with self._lock:
                    self._id = None
                    self._stdin = None
                    self._outputs.clear()
                if not isinstance(e, _API_ERRORS):
                    self._failed(f"docker start: {_explain(e)}")
                    raise
                raise self._failed(f"docker start: {_explain(e)}") from None
            self._last = self._inspect_quiet() or self._last
            threading.Thread(
                target=self._reap, name=f"docker-reaper-{cid[:12]}", daemon=True
            ).start()

    def _failed(self, reason: str) -> ElementError:
        with self._lock:
            self._error = reason
            self._done = True  # nothing will ever run: wait returns at once
            self._cond.notify_all()
        return ElementError(reason)

    def _inspect_quiet(self) -> dict | None:
        try:
            return self._api.inspect_container(self._id)
        except _API_ERRORS:  # gone, or dockerd unreachable: the caller treats both as "no state"
            return None

    def _remove_quietly(self, cid: str) -> None:
        try:
            self._api.remove_container(cid, v=True, force=True)
        except _derrors.NotFound:  # already removed: that is what we wanted
            pass
        except _API_ERRORS as e:
            _log.warning("could not remove container %s: %s", cid[:12], _explain(e))

    def _attach_outputs(self, outputs: Any) -> list[AttachOutput]:
        """The outputs as this element made them (the base knows them as buffers)."""
        return [out for out in outputs if isinstance(out, AttachOutput)]

    def _reap(self) -> None:
        cid = self._id
        assert cid is not None  # started before this thread
        try:
            self._api.wait(cid)  # no timeout: blocks until the container is not running
        except _derrors.NotFound:  # already removed: that is what we wanted
            pass  # removed (scrubbed)
        except _API_ERRORS as e:
            _log.warning("waiting for container %s failed: %s", cid[:12], _explain(e))
        info = self._inspect_quiet()
        with self._lock:
            self._exited = True
            if info is not None:
                self._last = info
            self._cond.notify_all()  # wait returns at exit, before the output has ended
            self._stdin_dead = True
            if not self._stdin_busy:
                self._release_stdin_locked()
            outputs = self._attach_outputs(self._outputs.values())
        # The container has exited: what is still in flight is bounded, so take it all.
        for out in outputs:
            out.unbound()
        for out in outputs:
            if not out.wait_eof(self._cfg.eof_grace):
                _log.warning("container %s: output did not end after exit", cid[:12])
                out.abort()
        self._check_done()

    @property
    def _auto_scrub(self) -> bool:
        return self._spec.scrub

    def _what(self) -> str:
        return f"container {(self._id or 'unstarted')[:12]}"

    def _outputs_done_locked(self) -> bool:
        # Arrived is enough: unlike a process's, a container's output may still be unread.
        return all(out.arrived for out in self._outputs.values())

    def _before_on_done(self) -> None:
        if self._id is not None:
            self._remove_quietly(self._id)

    def scrub(self) -> None:
        """Detach and remove the container (killing it if it runs) with its
        anonymous volumes; waits then fail with "aborted"."""
        with self._start_lock:
            outputs = self._detach()
            if outputs is None:
                return
            cid = self._id  # steady: holding _start_lock, no start can set or clear it
            if cid is None:
                return
            try:
                self._api.remove_container(cid, v=True, force=True)
            except _derrors.NotFound:  # already removed: that is what we wanted
                pass
            except _derrors.APIError as e:
                if e.status_code != 409:  # 409: a removal (auto-scrub) is already under way
                    raise ElementError(f"docker remove: {_explain(e)}") from None
            except _API_ERRORS as e:
                raise ElementError(f"docker remove: {_explain(e)}") from None
            finally:
                for out in self._attach_outputs(outputs):
                    out.abort()

    # ----------------------------------------------------------------- queries

    @property
    def id(self) -> str | None:
        """The container's ID (None before start)."""
        return self._id

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def spec(self) -> DockerSpec:
        return self._spec

    def _placeholder(self) -> dict:
        state: dict[str, Any] = {"Status": "unknown", "Running": False}
        if self._error is not None:
            state["Error"] = self._error
        return {"Id": None, "Name": None, "Config": {"Image": self._spec.image}, "State": state}

    def _peek_locked(self) -> dict:
        return dict(self._last) if self._last is not None else self._placeholder()

    def peek(self) -> dict:
        """The container's inspect data (``docker inspect``)."""
        with self._lock:
            cid = self._id
            if cid is None or self._done or self._scrubbed:
                return self._peek_locked()
        try:
            info = self._api.inspect_container(cid)
        except _derrors.NotFound:
            with self._lock:
                return self._peek_locked()
        except _API_ERRORS as e:
            raise ElementError(f"docker inspect: {_explain(e)}") from None
        with self._lock:
            if not self._done:
                self._last = info
        return info

    # ----------------------------------------------------------------- control

    def _require_started(self) -> None:
        if self._id is None:
            raise ElementError("container not started")

    def signal(self, name: str) -> None:
        signum = parse_signal(name)
        with self._lock:
            self._check_signalable_locked()
            cid = self._id
        try:
            self._api.kill(cid, signal=signum)
        except _derrors.APIError as e:
            if e.status_code in (404, 409):  # gone, or "is not running"
                raise ElementError("process already finished") from None
            raise ElementError(f"signal: {_explain(e)}") from None
        except _API_ERRORS as e:
            raise ElementError(f"signal: {_explain(e)}") from None

    # ----------------------------------------------------------------- standard streams

    def _scrub_stdin_locked(self) -> None:
        if self._stdin_busy and self._stdin is not None:
            # dockerd keeps the connection of a container that never read: wake the writer
            # ("broken pipe"); shutdown, unlike close, leaves its socket valid.
            self._stdin.shutdown(socket.SHUT_RDWR)
        self._shut_stdin_locked()

    def _release_stdin_locked(self) -> None:
        """Send EOF if the user closed stdin, and drop the connection once nothing needs it."""
        conn = self._stdin
        if conn is None:
            return
        if self._stdin_closed and not self._stdin_shut:
            self._stdin_shut = True
            conn.shutdown(socket.SHUT_WR)  # dockerd closes the container's stdin (StdinOnce)
        if self._stdin_dead or self._scrubbed:
            self._stdin = None
            conn.close()

    def _stdin_target_locked(self) -> socket.socket:
        if self._stdin_dead or self._stdin is None:
            raise ElementError("broken pipe")
        return self._stdin.sock

    def _stdin_send(self, sock: socket.socket, data: memoryview, deadline: float | None) -> int:
        sent = 0
        try:
            while sent < len(data):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                sock.settimeout(left)  # the stdin connection is ours alone: nobody reads it
                try:
                    sent += sock.send(data[sent:])
                except (
                    TimeoutError
                ):  # the deadline: the caller gets what was sent and writes the rest again
                    break
            return sent
        except (BrokenPipeError, ConnectionResetError):
            raise ElementError("broken pipe") from None
        except OSError as e:
            raise ElementError(f"stdin: {e.strerror or e}") from None

    def __repr__(self) -> str:
        state = (
            "done"
            if self._done
            else "exited"
            if self._exited
            else "running"
            if self._id
            else "unstarted"
        )
        return f"<DockerElement {self._id and self._id[:12]} {self._spec.image!r} {state}>"
