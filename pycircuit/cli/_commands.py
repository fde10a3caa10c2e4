"""Client subcommands of ``pycircuit``: the anchor namespace, elements,
membership and worker tools. Each takes parsed args and a connected Client.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

from .._client import Anchor, Client
from .._elements import Chan, Element, Nameserver, ProcStat, Stdio, Subscription
from ..errors import CircuitError, ElementError
from ..runtime._addr import WorkerAddr, is_server_id
from ..server._anchors import parse_path

from ._util import UsageError


@dataclass(frozen=True)
class ToolConfig:
    """``stack_timeout``: how long ``stk`` waits for a worker's own answer
    before it asks the worker's server for a faulthandler dump (a worker
    stuck in C code holding the GIL never answers)."""

    stack_timeout: float = 3.0


TOOLS = ToolConfig()


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    sys.stdout.flush()


def _json(value: Any) -> str:
    import json  # only the commands that read or print JSON pay its import

    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _path(text: str) -> tuple[list[str], bool]:
    """'/X…/a/...' → (['X…', 'a'], recursive)."""
    if not text.startswith("/"):
        raise UsageError(f"anchor paths start with '/': {text!r}")
    parts = [p for p in text.split("/") if p]
    recursive = bool(parts) and parts[-1] == "..."
    if recursive:
        parts = parts[:-1]
    try:
        return parse_path(parts), recursive
    except CircuitError as e:
        raise UsageError(str(e)) from None


def _anchor(c: Client, text: str, element: bool = True) -> Anchor:
    parts, rec = _path(text)
    if rec:
        raise UsageError(f"'...' is only for ls: {text!r}")
    if element and len(parts) < 2:
        raise ElementError(
            "cannot create elements outside of servers"
            if not parts
            else f"{text} is a server anchor"
        )
    if parts and not is_server_id(parts[0]):
        raise ElementError(f"no server {parts[0]!r}: the first part of a path is a server ID (X…)")
    return c.walk(parts)


def _element(c: Client, text: str, cls: type[Element]) -> Any:
    el = _anchor(c, text).get()
    if el is None:
        raise ElementError(f"no element at {text}")
    if not isinstance(el, cls):
        raise ElementError(f"{text} is not a {cls.kind} element")
    return el


# -- the namespace -----------------------------------------------------------------
def cmd_ls(c: Client, args) -> int:
    for text in args.paths or ["/"]:
        parts, rec = _path(text)
        rows: list[tuple[list[str], str | None]] = []
        hosts = c.hosts()
        if not parts:
            for h in hosts:
                rows.append(([h.id], "server"))
                if rec:
                    rows += [([h.id] + p, k) for p, k in c.kernel(h).tree([])]
        else:
            if not any(h.id == parts[0] for h in hosts):
                raise ElementError(f"no server {parts[0]} in this circuit")
            k = c.kernel(parts[0])
            if rec:
                rows += [([parts[0]] + p, kind) for p, kind in k.tree(parts[1:])]
            else:
                rows += [(parts + [name], kind) for name, kind in k.view(parts[1:]).items()]
        if args.depth:  # children before their parents
            rows.sort(key=lambda r: (r[0][:1], -len(r[0]), r[0]))
        for p, kind in rows:
            _out(f"{kind or '·':8} /{'/'.join(p)}" if args.long else f"/{'/'.join(p)}")
    return 0


def cmd_peek(c: Client, args) -> int:
    a = _anchor(c, args.path, element=False)
    if not a.parts:
        raise UsageError("peek needs a server or element path, not /")
    _out(_json(a.peek()))
    return 0


def cmd_scrub(c: Client, args) -> int:
    _anchor(c, args.path).scrub()
    return 0


# -- processes -----------------------------------------------------------------------
def _read_spec(what: str, scrub: bool) -> dict:
    """The element's JSON from stdin; ``--scrub`` overrides its Scrub key."""
    import json  # only the commands that read or print JSON pay its import

    text = sys.stdin.read()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"parse error in the {what} JSON: {e}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"parse error: the {what} JSON is an object")
    if scrub:
        spec = {k: v for k, v in spec.items() if k.lower() != "scrub"} | {"Scrub": True}
    return spec


def cmd_mkproc(c: Client, args) -> int:
    _anchor(c, args.path).make_proc(_read_spec("command", args.scrub))
    return 0


def cmd_mkdkr(c: Client, args) -> int:
    _anchor(c, args.path).make_docker(_read_spec("container", args.scrub))
    return 0


def cmd_mkdns(c: Client, args) -> int:
    ns = _anchor(c, args.path).make_nameserver(args.addr)
    _out(ns.peek()["Address"])
    return 0


def cmd_set(c: Client, args) -> int:
    _element(c, args.path, Nameserver).set(" ".join(args.rr))
    return 0


def cmd_unset(c: Client, args) -> int:
    _element(c, args.path, Nameserver).unset(args.name)
    return 0


def cmd_signal(c: Client, args) -> int:
    _element(c, args.path, Stdio).signal(args.signal)
    return 0


def _print_stat(st: Any) -> None:
    if isinstance(st, ProcStat):
        st = {"Cmd": st.cmd, "Exit": st.exit, "Phase": st.phase}
    _out(_json(st))


def cmd_wait(c: Client, args) -> int:
    _print_stat(_element(c, args.path, Stdio).wait())
    return 0


def cmd_waitall(c: Client, args) -> int:
    paths = [ln.strip() for ln in sys.stdin if ln.strip()]
    procs = [_element(c, p, Stdio) for p in paths]
    errors: list[str] = []

    def wait(p: Stdio) -> None:
        try:
            p.wait()
        except CircuitError as e:
            errors.append(f"{p.path}: {e}")

    threads = [threading.Thread(target=wait, args=(p,), daemon=True) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise ElementError("; ".join(errors))
    return 0


def cmd_stdin(c: Client, args) -> int:
    w = _element(c, args.path, Stdio).stdin
    src = sys.stdin.buffer
    while True:
        chunk = src.read1(1 << 16) if hasattr(src, "read1") else src.read(1 << 16)
        if not chunk:
            break
        w.write(chunk)
    w.close()
    return 0


def _copy_out(reader) -> int:
    dst = sys.stdout.buffer
    while True:
        chunk = reader.read(1 << 16)
        if not chunk:
            return 0
        dst.write(chunk)
        dst.flush()


def cmd_stdout(c: Client, args) -> int:
    return _copy_out(_element(c, args.path, Stdio).stdout)


def cmd_stderr(c: Client, args) -> int:
    return _copy_out(_element(c, args.path, Stdio).stderr)


# -- channels and subscriptions ----------------------------------------------------
def cmd_mkchan(c: Client, args) -> int:
    try:
        cap = int(args.cap)
    except ValueError:
        raise UsageError(f"channel capacity is an integer, not {args.cap!r}") from None
    _anchor(c, args.path).make_chan(cap)
    return 0


def cmd_send(c: Client, args) -> int:
    _element(c, args.path, Chan).send(sys.stdin.buffer.read())
    return 0


def cmd_recv(c: Client, args) -> int:
    el = _anchor(c, args.path).get()
    if isinstance(el, Chan):
        sys.stdout.buffer.write(el.recv())
        sys.stdout.flush()
    elif isinstance(el, Subscription):
        _out(el.recv())
    else:
        raise ElementError(f"no channel or subscription at {args.path}")
    return 0


def cmd_close(c: Client, args) -> int:
    _element(c, args.path, Chan).close()
    return 0


def cmd_mkjoin(c: Client, args) -> int:
    _anchor(c, args.path).make_on_join()
    return 0


def cmd_mkleave(c: Client, args) -> int:
    _anchor(c, args.path).make_on_leave()
    return 0


# -- servers -------------------------------------------------------------------------
def _server_kernel(c: Client, text: str) -> Any:
    if text.startswith("circuit://"):
        return c.kernel(text)
    parts, _ = _path(text)
    if len(parts) != 1 or not is_server_id(parts[0]):
        raise UsageError(f"{text!r} is not a server (want /X… or a circuit URL)")
    return c.kernel(parts[0])


def cmd_join(c: Client, args) -> int:
    WorkerAddr.parse(args.url)
    _server_kernel(c, args.server).join(args.url)
    return 0


def cmd_suicide(c: Client, args) -> int:
    _server_kernel(c, args.server).suicide()
    return 0


# -- worker and server tools ----------------------------------------------------------
def _target(c: Client, text: str) -> tuple[WorkerAddr, Any]:
    """A server or worker by path or URL → (its address, its server's kernel)."""
    if text.startswith("circuit://"):
        addr = WorkerAddr.parse(text)
        return addr, None
    parts, _ = _path(text)
    if not parts:
        raise UsageError("name a server (/X…) or a worker (its path or URL)")
    kernel = c.kernel(parts[0])
    if len(parts) == 1:
        return WorkerAddr.parse(kernel.info()["url"]), kernel
    el = c.walk(parts).get()
    if not isinstance(el, WorkerAddr):
        raise ElementError(f"no worker at {text}")
    return el, kernel


def _with_deadline(fn, timeout: float) -> tuple[bool, Any]:
    box: list = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:  # handed to the caller's thread
            box.append((False, e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if not box:
        return False, None
    ok, val = box[0]
    if not ok:
        raise val
    return True, val


def cmd_stk(c: Client, args) -> int:
    import pycircuit

    addr, kernel = _target(c, args.target)
    done, text = _with_deadline(lambda: pycircuit.dial(addr, "acid").stack(), TOOLS.stack_timeout)
    if not done:  # stuck holding the GIL: ask its server for a faulthandler dump
        kernel = kernel or _kernel_hosting(c, addr)
        text = kernel.fault_stack(addr.id)
    _out(text)
    return 0


def _kernel_hosting(c: Client, addr: WorkerAddr) -> Any:
    for h in c.hosts():
        k = c.kernel(h)
        if any(w["id"] == addr.id for w in k.workers()):
            return k
    raise CircuitError(f"worker {addr} did not answer and no server hosts it")


def cmd_cpu(c: Client, args) -> int:
    import pycircuit

    try:
        seconds = float(args.seconds)
    except ValueError:
        raise UsageError(f"SECONDS is a number, not {args.seconds!r}") from None
    addr, _ = _target(c, args.target)
    _out(pycircuit.dial(addr, "acid").cpu_profile(seconds))
    return 0


def cmd_mem(c: Client, args) -> int:
    import pycircuit

    addr, _ = _target(c, args.target)
    acid = pycircuit.dial(addr, "acid")
    _out(_json(acid.stat()))
    _out(acid.runtime_profile("heap"))
    return 0


def cmd_kill(c: Client, args) -> int:
    """Kill workers: by URL, by a worker's path, or every worker under a
    path ending in '/...'."""
    victims: list[WorkerAddr] = []
    for text in args.targets:
        if text.startswith("circuit://"):
            victims.append(WorkerAddr.parse(text))
            continue
        parts, rec = _path(text)
        if rec or len(parts) <= 1:
            hosts = [parts[0]] if parts else [h.id for h in c.hosts()]
            for hid in hosts:
                for p, kind in c.kernel(hid).tree(parts[1:]):
                    if kind == "worker":
                        el = c.walk([hid] + p).get()
                        if isinstance(el, WorkerAddr):
                            victims.append(el)
        else:
            el = c.walk(parts).get()
            if not isinstance(el, WorkerAddr):
                raise ElementError(f"no worker at {text}")
            victims.append(el)
    for v in {v.id: v for v in victims}.values():
        c.kill(v)  # quiet for a worker that died meanwhile (or before, given by URL)
    return 0
