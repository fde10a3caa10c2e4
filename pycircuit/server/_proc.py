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
from typing import IO
from collections.abc import Callable

from .._spec import Cmd
from ..errors import ElementError
from ._signals import exit_of, parse_signal
from ._stdio import BufferedOutput, StdioElement

__all__ = ["ProcElement"]

_OUTPUT_LIMIT = 1 << 16  # bytes buffered per output stream before the process feels back-pressure
_CHUNK = 1 << 16


# --------------------------------------------------------------------------- output streams


class _Output(BufferedOutput):
    """One of stdout/stderr, fed from the process's pipe."""

    limit = _OUTPUT_LIMIT

    def __init__(self, name: str, f: IO[bytes], on_change: Callable[[], None]) -> None:
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
        self._stdin: IO[bytes] | None = None
        self._exited = False  # the process has ended (set by the reaper)
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
        stdin, stdout, stderr = popen.stdin, popen.stdout, popen.stderr
        assert stdin is not None and stdout is not None and stderr is not None  # PIPE above
        with self._lock:
            self._popen = popen
            self._pidfd = _open_pidfd(popen.pid)
            self._phase = "running"
            self._stdin = stdin
            os.set_blocking(stdin.fileno(), False)
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            for name, f in (("stdout", stdout), ("stderr", stderr)):
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
        assert popen is not None  # started before this thread
        exit_: str | None
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
            phase, exit_ = exit_of(status)
            code = os.waitstatus_to_exitcode(status)
            break
        with self._lock:
            self._phase, self._exit = phase, exit_
            self._exited = True
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
                elif self._popen is not None:  # started: checked above
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
            if (
                self._wake is not None
            ):  # never while a writer polls it: the base calls us only when idle
                os.close(self._wake)
                self._wake = None

    def _stdin_target_locked(self) -> int:
        assert self._stdin is not None  # the base asks only while stdin is open
        return self._stdin.fileno()

    def _stdin_send(self, fd: int, data: memoryview, deadline: float | None) -> int:
        sent = 0
        wake = self._wake
        assert wake is not None  # steady while a write is in flight: released only when idle
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
                poller.register(wake, select.POLLIN)
            ready = poller.poll(None if left is None else math.ceil(left * 1000))
            if any(f == wake for f, _ in ready):
                raise ElementError("aborted")  # scrubbed: nobody can use this stdin any more
        return sent

    def stdin_close(self) -> None:
        """Idempotent; a write in flight finishes first (its writer closes the pipe)."""
        super().stdin_close()
        self._check_done()

    def __repr__(self) -> str:
        return f"<ProcElement pid={self.pid} {self._cmd.path!r} {self._phase}>"
