"""Process elements: one OS process started on behalf of a user.

Standalone and thread-safe (no rpyc, no sockets): the server's kernel service
wraps a :class:`ProcElement` and hands its methods to remote callers.

``wait`` returns as soon as the process has exited or was killed by a
signal: the reaper thread waits on the pid (``waitpid``), never on pipe EOF,
so a child left behind holding the pipes open does not hold ``wait`` up, nor
does an open stdin or unread output (which stays readable). The process is
*done* -- and, with ``Scrub``, removed -- only once it has also had its
stdin closed and its stdout and stderr read to EOF or closed, so automatic
scrubbing loses no output.

Stdin is non-blocking: a write goes in as far as the pipe takes it before the
caller's deadline, so a process that never reads pins no server thread, and
a scrub wakes a blocked writer (through an eventfd) with "aborted".
"""

from __future__ import annotations

import math
import os
import select
import signal as _signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO
from collections.abc import Callable

from ..errors import ElementError
from ._stdio import BufferedOutput, StdioElement

__all__ = ["Cmd", "ProcElement", "SIGNAL_NAMES"]

SIGNAL_NAMES = (
    "ABRT",
    "ALRM",
    "BUS",
    "CHLD",
    "CONT",
    "FPE",
    "HUP",
    "ILL",
    "INT",
    "IO",
    "IOT",
    "KILL",
    "PIPE",
    "PROF",
    "QUIT",
    "SEGV",
    "STOP",
    "SYS",
    "TERM",
    "TRAP",
    "TSTP",
    "TTIN",
    "TTOU",
    "URG",
    "USR1",
    "USR2",
    "VTALRM",
    "WINCH",
    "XCPU",
    "XFSZ",
)

# Go's wording (its Linux signal table), so exit strings read like the original's.
_SIGNAL_TEXT = {
    "SIGHUP": "hangup",
    "SIGINT": "interrupt",
    "SIGQUIT": "quit",
    "SIGILL": "illegal instruction",
    "SIGTRAP": "trace/breakpoint trap",
    "SIGABRT": "aborted",
    "SIGBUS": "bus error",
    "SIGFPE": "floating point exception",
    "SIGKILL": "killed",
    "SIGUSR1": "user defined signal 1",
    "SIGSEGV": "segmentation fault",
    "SIGUSR2": "user defined signal 2",
    "SIGPIPE": "broken pipe",
    "SIGALRM": "alarm clock",
    "SIGTERM": "terminated",
    "SIGSTKFLT": "stack fault",
    "SIGCHLD": "child exited",
    "SIGCONT": "continued",
    "SIGSTOP": "stopped (signal)",
    "SIGTSTP": "stopped",
    "SIGTTIN": "stopped (tty input)",
    "SIGTTOU": "stopped (tty output)",
    "SIGURG": "urgent I/O condition",
    "SIGXCPU": "CPU time limit exceeded",
    "SIGXFSZ": "file size limit exceeded",
    "SIGVTALRM": "virtual timer expired",
    "SIGPROF": "profiling timer expired",
    "SIGWINCH": "window changed",
    "SIGIO": "I/O possible",
    "SIGPWR": "power failure",
    "SIGSYS": "bad system call",
}

_FINAL = ("exited", "signaled")
_OUTPUT_LIMIT = 1 << 16  # bytes buffered per output stream before the process feels back-pressure
_CHUNK = 1 << 16


def _signal_text(signum: int) -> str:
    try:
        name = _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    return _SIGNAL_TEXT.get(name, name)


def parse_signal(name: Any) -> int:
    """``"kill"``, ``"KILL"`` or ``"SIGKILL"`` → the signal number."""
    if isinstance(name, str):
        n = name.strip().upper()
        if n.startswith("SIG"):
            n = n[3:]
        if n in SIGNAL_NAMES:
            return int(getattr(_signal, "SIG" + n))
    raise ElementError("signal name not recognized")


# --------------------------------------------------------------------------- Cmd


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


# --------------------------------------------------------------------------- output streams


class _Output(BufferedOutput):
    """One of stdout/stderr, fed from the process's pipe."""

    limit = _OUTPUT_LIMIT

    def __init__(self, name: str, f: BinaryIO, on_change: Callable[[], None]) -> None:
        self._f = f
        self._on_change = on_change  # called (without our lock) when `drained` may have turned true
        super().__init__(f"proc-{name}")

    def _pump(self) -> None:
        try:
            while True:
                self._wait_for_room()
                try:
                    chunk = self._f.read(_CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    self._mark_eof()
                    break
                self._append(chunk)
        finally:
            self._f.close()
        self._on_change()

    def _drained(self) -> None:
        self._on_change()

    def close(self) -> None:
        super().close()
        self._on_change()


# --------------------------------------------------------------------------- the element


def _exec_path(path: str) -> str:
    # Popen searches $PATH for a bare name; the original never did. A bare name is
    # relative to the working directory (Dir), as in Go's os/exec.
    return path if "/" in path else "./" + path


def _exit_of(status: int) -> tuple[str, str | None]:
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return "exited", None if code == 0 else f"exit status {code}"
    text = "signal: " + _signal_text(os.WTERMSIG(status))
    if os.WCOREDUMP(status):
        text += " (core dumped)"
    return "signaled", text


def _open_pidfd(pid: int) -> int | None:
    # A pidfd names exactly our child, so a signal racing the reaper can never hit
    # a recycled pid. Without pidfd support we fall back to os.kill.
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here: the caller falls back to os.kill
        return None


class ProcElement(StdioElement):
    kind = "proc"

    def __init__(self, cmd: Cmd, on_done: Callable[[ProcElement], None] = lambda p: None) -> None:
        if not isinstance(cmd, Cmd):
            raise ElementError("ProcElement needs a Cmd")
        super().__init__(on_done)
        self._cmd = cmd
        self._started = False
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._phase = "unknown"
        self._exit: str | None = None
        self._stdin: BinaryIO | None = None
        self._wake: int | None = None  # eventfd: a scrub wakes a writer blocked on a full pipe

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise ElementError("process already started")
            self._started = True
        cmd = self._cmd
        env = None if cmd.env is None else dict(e.split("=", 1) for e in cmd.env)
        try:
            popen = subprocess.Popen(
                [cmd.path, *cmd.args],
                executable=_exec_path(cmd.path),
                env=env,
                cwd=cmd.dir or None,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as e:
            # Worded like Go's os/exec errors, which the original reported.
            what = (
                f"chdir {cmd.dir}" if cmd.dir and e.filename == cmd.dir else f"fork/exec {cmd.path}"
            )
            raise self._failed(f"{what}: {(e.strerror or str(e)).lower()}") from None
        except (ValueError, TypeError) as e:  # e.g. a NUL byte in an argument
            raise self._failed(str(e)) from None
        with self._lock:
            self._popen = popen
            self._pidfd = _open_pidfd(popen.pid)
            self._phase = "running"
            self._stdin = popen.stdin
            os.set_blocking(popen.stdin.fileno(), False)
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            for name, f in (("stdout", popen.stdout), ("stderr", popen.stderr)):
                self._outputs[name] = _Output(name, f, self._check_done)
        threading.Thread(target=self._reap, name=f"proc-reaper-{popen.pid}", daemon=True).start()

    def _failed(self, reason: str) -> ElementError:
        with self._lock:
            self._exit = f"exec error: {reason}"
            self._done = True  # nothing will ever run: wait returns at once
            self._cond.notify_all()
            return ElementError(self._exit)

    def _reap(self) -> None:
        popen = self._popen
        while True:
            try:
                _, status = os.waitpid(popen.pid, os.WUNTRACED | os.WCONTINUED)
            except ChildProcessError:
                # Someone else reaped our child; its status is lost.
                phase, exit_, code = "exited", "exit status unknown", -1
                break
            if os.WIFSTOPPED(status) or os.WIFCONTINUED(status):
                with self._lock:
                    self._phase = "stopped" if os.WIFSTOPPED(status) else "continued"
                continue
            phase, exit_ = _exit_of(status)
            code = os.waitstatus_to_exitcode(status)
            break
        with self._lock:
            self._phase, self._exit = phase, exit_
            # Popen must never poll (and so never reap) a pid we already reaped.
            popen.returncode = code
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            if self._scrubbed:
                self._shut_stdin_locked()
            self._cond.notify_all()
        self._check_done()

    @property
    def _exited(self) -> bool:
        return self._phase in _FINAL

    @property
    def _auto_scrub(self) -> bool:
        return self._cmd.scrub

    def _what(self) -> str:
        return f"process {self.pid}"

    def _outputs_done_locked(self) -> bool:
        # As in the original circuit, the output won't show until stdin is closed.
        return self._stdin_closed and all(out.drained for out in self._outputs.values())

    def scrub(self) -> None:
        """Detach: waits fail with "aborted". The OS process keeps running, but its
        output is discarded from now on so it never blocks on a pipe nobody reads."""
        self._detach()

    def _scrub_stdin_locked(self) -> None:
        # A live process keeps its stdin (closing it would change what it does);
        # _reap shuts it once the process has ended.
        if self._wake is not None:
            os.eventfd_write(self._wake, 1)  # a writer blocked on a full pipe stops: "aborted"
        if self._exited:
            self._shut_stdin_locked()

    # ----------------------------------------------------------------- queries

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def cmd(self) -> Cmd:
        return self._cmd

    def _peek_locked(self) -> dict:
        return {"Cmd": self._cmd.to_json(), "Exit": self._exit, "Phase": self._phase}

    def peek(self) -> dict:
        with self._lock:
            return self._peek_locked()

    # ----------------------------------------------------------------- control

    def _require_started(self) -> None:
        if self._popen is None:
            raise ElementError("process not started")

    def signal(self, name: str) -> None:
        signum = parse_signal(name)
        with self._lock:
            # Under the lock: _reap closes the pidfd once the process has ended.
            self._check_signalable_locked()
            try:
                if self._pidfd is not None:
                    _signal.pidfd_send_signal(self._pidfd, signum)
                else:
                    os.kill(self._popen.pid, signum)
            except ProcessLookupError:
                raise ElementError("process already finished") from None
            except OSError as e:
                raise ElementError(f"signal: {e.strerror}") from None

    # ----------------------------------------------------------------- standard streams

    def _release_stdin_locked(self) -> None:
        if self._stdin_closed and self._stdin is not None:
            self._stdin.close()
            self._stdin = None
            os.close(self._wake)  # never while a writer polls it: the base calls us only when idle
            self._wake = None

    def _stdin_target_locked(self) -> int:
        return self._stdin.fileno()

    def _stdin_send(self, fd: int, data: memoryview, deadline: float | None) -> int:
        sent = 0
        poller: select.poll | None = None
        while sent < len(data):
            try:
                sent += os.write(fd, data[sent:])
                continue
            except BlockingIOError:
                pass  # the pipe is full: the process is not reading (yet)
            except BrokenPipeError:
                raise ElementError("broken pipe") from None
            except OSError as e:
                raise ElementError(f"stdin: {e.strerror}") from None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.register(self._wake, select.POLLIN)  # steady: released only when idle
            ready = poller.poll(None if left is None else math.ceil(left * 1000))
            if any(f == self._wake for f, _ in ready):
                raise ElementError("aborted")  # scrubbed: nobody can use this stdin any more
        return sent

    def stdin_close(self) -> None:
        """Idempotent; a write in flight finishes first (its writer closes the pipe)."""
        super().stdin_close()
        self._check_done()

    def __repr__(self) -> str:
        return f"<ProcElement pid={self.pid} {self._cmd.path!r} {self._phase}>"
