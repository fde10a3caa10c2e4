"""Process elements: one OS process started on behalf of a user.

Standalone and thread-safe (no rpyc, no sockets): the server's kernel service
wraps a :class:`ProcElement` and hands its methods to remote callers.

A process is *done* once it has exited, its stdin has been closed and its
stdout and stderr have been read to EOF or closed -- only then do ``wait``
and automatic scrubbing complete (as in the original circuit, where "the
output won't show until you close the standard input").
"""
from __future__ import annotations

import logging
import os
import signal as _signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from ..errors import ElementError

__all__ = ["Cmd", "ProcElement", "SIGNAL_NAMES"]

_log = logging.getLogger(__name__)

SIGNAL_NAMES = (
    "ABRT", "ALRM", "BUS", "CHLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "PROF", "QUIT", "SEGV", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
    "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
)

# Go's wording (its Linux signal table), so exit strings read like the original's.
_SIGNAL_TEXT = {
    "SIGHUP": "hangup", "SIGINT": "interrupt", "SIGQUIT": "quit",
    "SIGILL": "illegal instruction", "SIGTRAP": "trace/breakpoint trap", "SIGABRT": "aborted",
    "SIGBUS": "bus error", "SIGFPE": "floating point exception", "SIGKILL": "killed",
    "SIGUSR1": "user defined signal 1", "SIGSEGV": "segmentation fault",
    "SIGUSR2": "user defined signal 2", "SIGPIPE": "broken pipe", "SIGALRM": "alarm clock",
    "SIGTERM": "terminated", "SIGSTKFLT": "stack fault", "SIGCHLD": "child exited",
    "SIGCONT": "continued", "SIGSTOP": "stopped (signal)", "SIGTSTP": "stopped",
    "SIGTTIN": "stopped (tty input)", "SIGTTOU": "stopped (tty output)",
    "SIGURG": "urgent I/O condition", "SIGXCPU": "CPU time limit exceeded",
    "SIGXFSZ": "file size limit exceeded", "SIGVTALRM": "virtual timer expired",
    "SIGPROF": "profiling timer expired", "SIGWINCH": "window changed",
    "SIGIO": "I/O possible", "SIGPWR": "power failure", "SIGSYS": "bad system call",
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

def wait_done(el: Any, timeout: float | None) -> dict:
    """``wait`` of process-like elements (this one and docker's): the state
    once done; "aborted" after a scrub, "timeout" when time runs out."""
    with el._lock:
        if el._scrubbed:
            raise ElementError("aborted")
        # A scrub that comes after completion does not rob pending waiters of the result.
        if not el._cond.wait_for(lambda: el._done or el._scrubbed, timeout):
            raise ElementError("timeout")
        if not el._done:
            raise ElementError("aborted")
        return el._peek_locked()


def str_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise ElementError(f"{key} must be a list of strings")
    return tuple(value)


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
            env = str_list("Env", self.env)
            for entry in env:
                if "=" not in entry:
                    raise ElementError(f"Env entries are KEY=VALUE strings, not {entry!r}")
            object.__setattr__(self, "env", env)
        if self.dir is not None and not isinstance(self.dir, str):
            raise ElementError("Dir must be a string")
        if not isinstance(self.scrub, bool):
            raise ElementError("Scrub must be true or false")

    @classmethod
    def from_json(cls, obj: dict) -> "Cmd":
        """Build from the seed's JSON shape; keys are case-insensitive."""
        if not isinstance(obj, dict):
            raise ElementError("a command is a JSON object")
        fields: dict[str, Any] = {}
        for key, value in obj.items():
            name = key.lower() if isinstance(key, str) else None
            if name not in ("path", "args", "env", "dir", "scrub"):
                raise ElementError(f"unknown command key {key!r}")
            if name in fields:
                raise ElementError(f"duplicate command key {key!r}")
            fields[name] = value
        if fields.get("path") is None:
            raise ElementError("command has no Path")
        # JSON null means "not given", as in Go's decoder.
        return cls(**{k: v for k, v in fields.items() if v is not None})

    def to_json(self) -> dict:
        return {
            "Env": None if self.env is None else list(self.env),
            "Dir": self.dir,
            "Path": self.path,
            "Args": list(self.args),
            "Scrub": self.scrub,
        }


# --------------------------------------------------------------------------- output streams

class _Output:
    """One of stdout/stderr: a pump thread moves the pipe into a bounded buffer.

    Closing discards buffered and future data while the pump keeps draining the
    pipe, so the process never blocks on output nobody will read.
    """

    def __init__(self, name: str, f: BinaryIO, on_change: Callable[[], None]) -> None:
        self._f = f
        self._on_change = on_change  # called (without our lock) when `drained` may have turned true
        self._cond = threading.Condition()
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        threading.Thread(target=self._pump, name=f"proc-{name}", daemon=True).start()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed or (self._eof and not self._buf)

    def _pump(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or len(self._buf) < _OUTPUT_LIMIT)
                try:
                    chunk = self._f.read(_CHUNK)
                except OSError:
                    chunk = b""
                with self._cond:
                    if not chunk:
                        self._eof = True
                    elif not self._closed:
                        self._buf += chunk
                    self._cond.notify_all()
                if not chunk:
                    break
        finally:
            self._f.close()
        self._on_change()

    def read(self, max_bytes: int, timeout: float | None) -> bytes:
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ElementError("max_bytes must be a positive integer")
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._eof or self._closed, timeout):
                raise ElementError("timeout")
            if self._closed:
                return b""
            data = bytes(self._buf[:max_bytes])
            del self._buf[:max_bytes]
            self._cond.notify_all()
            drained = self._eof and not self._buf
        if drained:
            self._on_change()
        return data

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._buf.clear()
            self._cond.notify_all()
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
    except (AttributeError, OSError):
        return None


class ProcElement:
    kind = "proc"

    def __init__(self, cmd: Cmd, on_done: Callable[["ProcElement"], None] = lambda p: None) -> None:
        if not isinstance(cmd, Cmd):
            raise ElementError("ProcElement needs a Cmd")
        self._cmd = cmd
        self._on_done = on_done
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._started = False
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._phase = "unknown"
        self._exit: str | None = None
        self._done = False
        self._scrubbed = False
        self._stdin: BinaryIO | None = None
        self._stdin_closed = False
        self._stdin_busy = False  # a write is in flight: its writer closes stdin afterwards
        self._stdin_wlock = threading.Lock()  # one writer at a time keeps writes whole and ordered
        self._outputs: dict[str, _Output] = {}

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
                [cmd.path, *cmd.args], executable=_exec_path(cmd.path), env=env,
                cwd=cmd.dir or None, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        except OSError as e:
            # Worded like Go's os/exec errors, which the original reported.
            what = f"chdir {cmd.dir}" if cmd.dir and e.filename == cmd.dir else f"fork/exec {cmd.path}"
            raise self._failed(f"{what}: {(e.strerror or str(e)).lower()}") from None
        except (ValueError, TypeError) as e:  # e.g. a NUL byte in an argument
            raise self._failed(str(e)) from None
        with self._lock:
            self._popen = popen
            self._pidfd = _open_pidfd(popen.pid)
            self._phase = "running"
            self._stdin = popen.stdin
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

    def _check_done(self) -> None:
        with self._lock:
            if self._done or self._phase not in _FINAL or not self._stdin_closed:
                return
            if not all(out.drained for out in self._outputs.values()):
                return
            self._done = True
            self._cond.notify_all()
            # A user scrub already detached us: the anchor may hold something else now.
            fire = self._cmd.scrub and not self._scrubbed
        if fire:
            try:
                self._on_done(self)
            except Exception:
                _log.exception("on_done callback of process %s failed", self.pid)

    def scrub(self) -> None:
        """Detach: waits fail with "aborted". The OS process keeps running, but its
        output is discarded from now on so it never blocks on a pipe nobody reads."""
        with self._lock:
            if self._scrubbed:
                return
            self._scrubbed = True
            if self._phase in _FINAL:
                self._shut_stdin_locked()
            self._cond.notify_all()
            outputs = list(self._outputs.values())
        for out in outputs:
            out.close()

    # ----------------------------------------------------------------- queries

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    @property
    def cmd(self) -> Cmd:
        return self._cmd

    def _peek_locked(self) -> dict:
        return {"Cmd": self._cmd.to_json(), "Exit": self._exit, "Phase": self._phase}

    def peek(self) -> dict:
        with self._lock:
            return self._peek_locked()

    def describe(self) -> dict:
        return {"kind": self.kind, **self.peek()}

    def wait(self, timeout: float | None = None) -> dict:
        return wait_done(self, timeout)

    # ----------------------------------------------------------------- control

    def _require_started(self) -> None:
        if self._popen is None:
            raise ElementError("process not started")

    def signal(self, name: str) -> None:
        signum = parse_signal(name)
        with self._lock:
            self._require_started()
            if self._phase in _FINAL:
                raise ElementError("process already finished")
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

    def _shut_stdin_locked(self) -> None:
        self._stdin_closed = True
        if not self._stdin_busy and self._stdin is not None:
            self._stdin.close()
            self._stdin = None

    def stdin_write(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ElementError("stdin takes bytes")
        self._require_started()
        with self._stdin_wlock:
            with self._lock:
                if self._stdin_closed:
                    raise ElementError("stdin closed")
                self._stdin_busy = True
                fd = self._stdin.fileno()
            try:
                view = memoryview(data).cast("B")
                while view:
                    view = view[os.write(fd, view):]
            except BrokenPipeError:
                raise ElementError("broken pipe") from None
            except OSError as e:
                raise ElementError(f"stdin: {e.strerror}") from None
            finally:
                with self._lock:
                    self._stdin_busy = False
                    if self._stdin_closed:
                        self._shut_stdin_locked()

    def stdin_close(self) -> None:
        """Idempotent; a write in flight finishes first (its writer closes the pipe)."""
        self._require_started()
        with self._lock:
            self._shut_stdin_locked()
        self._check_done()

    def _output(self, stream: str) -> _Output:
        self._require_started()
        out = self._outputs.get(stream)
        if out is None:
            raise ElementError(f"unknown output stream {stream!r} (stdout or stderr)")
        return out

    def read(self, stream: str, max_bytes: int = 65536, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` of ``stream``; blocks until some data or EOF (``b""``).
        After ``close_stream`` it returns ``b""``."""
        return self._output(stream).read(max_bytes, timeout)

    def close_stream(self, stream: str) -> None:
        """Discard the rest of ``stream`` ("stdin" closes standard input)."""
        if stream == "stdin":
            self.stdin_close()
        else:
            self._output(stream).close()

    def __repr__(self) -> str:
        return f"<ProcElement pid={self.pid} {self._cmd.path!r} {self._phase}>"
