"""Signals of process and docker elements: the names a user may send, and
the exit text of a process, worded as the original (Go) circuit did."""

from __future__ import annotations

import os
import signal as _signal
from typing import Any

from ..errors import ElementError

__all__ = ["SIGNAL_NAMES", "parse_signal", "exit_of"]

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


def exit_of(status: int) -> tuple[str, str | None]:
    """A wait status → (phase, exit text or None for a clean exit)."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return "exited", None if code == 0 else f"exit status {code}"
    text = "signal: " + _signal_text(os.WTERMSIG(status))
    if os.WCOREDUMP(status):
        text += " (core dumped)"
    return "signaled", text
