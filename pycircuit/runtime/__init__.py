"""The runtime: one per process.

Layering inside: ``_addr``, ``_wire`` and ``_codec`` are pure (bytes and
values only); ``_remote_exc`` turns exceptions into bytes and back;
``_threads`` keeps parked threads; ``_link`` names the link's layers:
``_stream`` (RPyC's public stream and channel: frames), ``_connection``
(messages, replies matched to callers) and ``_serve`` (serving threads);
``_peer`` is one connection to another runtime, ``_ctx`` the encoding of
one message's values; ``_runtime`` ties them together
(peers, leases, calls, services). Nothing here is public API: import from
``pycircuit``.
"""
