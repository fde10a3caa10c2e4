"""Links between runtimes: the names the rest of the runtime uses.

One connection per pair of runtimes, used in both directions, in three
layers, bottom up:

* ``_stream``: RPyC's framing (its public ``SocketStream`` and ``Channel``
  classes) over a buffered socket stream: one ``recv`` usually brings a
  whole small frame, large bodies are read and written without copies,
  compressed and oversized frames are refused; ``tune_socket`` (no Nagle,
  blocking, death detected by the socket: EOF/RST, TCP keepalive and
  TCP_USER_TIMEOUT, never by a request timeout).
* ``_connection``: one pycircuit message (``_wire.MSG_*``: request, reply,
  fault, with a sequence number and an operation) per frame, matched to
  its caller's ``Pending``; its own locks and send queue. RPyC's protocol
  (brine, netrefs, its handler tables) never runs; a frame that is not a
  pycircuit message fails the connection.
* ``_serve``: the threads that read a connection (``ServeGroup``) and the
  watchdog that appoints a new reader when a request runs long, so a slow
  call never blocks the rest of the connection.
"""

from ._connection import Connection, Pending, RequestFailed, make_connection, refusal_frame
from ._serve import WATCHDOG, ServeConfig, ServeGroup, Watchdog
from ._stream import tune_socket

__all__ = [
    "Connection",
    "Pending",
    "RequestFailed",
    "ServeConfig",
    "ServeGroup",
    "WATCHDOG",
    "Watchdog",
    "make_connection",
    "refusal_frame",
    "tune_socket",
]
