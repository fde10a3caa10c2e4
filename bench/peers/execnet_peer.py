"""execnet: a ``popen`` gateway (a fresh interpreter talking over pipes)
and channels whose remote end echoes what it receives. Each concurrent
caller thread opens its own channel on the same gateway (execmodel
``thread``: each ``remote_exec`` runs in its own remote thread). A channel
is asynchronous by nature: the pipelined row sends up to a window of values
before it reads the answers.
"""

from __future__ import annotations

import execnet

from common import terminate_all
from peers import CallPeer

ECHO = "for x in channel:\n    channel.send(x)\n"
SIZE = "for x in channel:\n    channel.send(len(x))\n"
PID = "import os\nchannel.send(os.getpid())\n"


def _pid(gw) -> int:
    ch = gw.remote_exec(PID)
    try:
        return ch.receive(30)
    finally:
        ch.close()


def _stop(gw, tracker=None) -> None:
    import psutil

    try:
        proc = psutil.Process(gw._io.popen.pid)  # the gateway's interpreter
    except (AttributeError, psutil.Error):
        proc = None
    try:
        gw.exit()
        gw.join(5)
    except Exception:
        pass
    if proc is not None:
        try:
            proc.wait(2)
        except psutil.Error:
            terminate_all([proc])


class Execnet(CallPeer):
    name = "execnet channel"
    has_async = True

    def __init__(self):
        self.gw = None

    def start(self, tracker):
        self.gw = execnet.makegateway("popen//execmodel=thread")
        self.server_pid = _pid(self.gw)
        tracker.remember(self.server_pid)
        self.echo_ch = self.gw.remote_exec(ECHO)
        self.size_ch = self.gw.remote_exec(SIZE)

    @staticmethod
    def _rt(ch):
        send, receive = ch.send, ch.receive

        def call(x):
            send(x)
            return receive()

        return call

    def caller(self):
        return self._rt(self.echo_ch)

    def thread_caller(self):
        ch = self.gw.remote_exec(ECHO)
        return self._rt(ch), ch.close

    def async_calls(self, n, window):
        ch = self.echo_ch
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                ch.send(sent)
                sent += 1
            ch.receive()
            got += 1

    def value_echo(self, v):
        self.echo_ch.send(v)
        return self.echo_ch.receive()

    def value_send(self, v):
        self.size_ch.send(v)
        return self.size_ch.receive()

    def close(self):
        if self.gw is not None:
            for ch in (self.echo_ch, self.size_ch):
                try:
                    ch.close()
                except Exception:
                    pass
            _stop(self.gw)


def spawn_once() -> None:
    """Spawn to first result: a new popen gateway runs ``channel.send(1)``.
    The gateway is stopped after the clock stops. Returns ns."""
    from common import clock

    t0 = clock()
    gw = execnet.makegateway("popen")
    try:
        ch = gw.remote_exec("channel.send(1)")
        r = ch.receive(60)
        t = clock() - t0
    finally:
        _stop(gw)
    if r != 1:
        raise AssertionError("execnet child returned something else")
    return t


def idle_gateway(tracker):
    """The footprint peer: an idle popen gateway. Returns (pid, stop)."""
    gw = execnet.makegateway("popen")
    pid = _pid(gw)
    tracker.remember(pid)
    return pid, lambda: _stop(gw)
