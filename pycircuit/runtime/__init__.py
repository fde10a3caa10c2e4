"""The runtime: one per process.

Layering inside: ``_addr``, ``_wire`` and ``_codec`` are pure (bytes and
values only); ``_remote_exc`` turns exceptions into bytes and back;
``_threads`` keeps parked threads; ``_link`` adapts RPyC (frames, messages,
serving threads); ``_peer`` is one connection to another runtime, ``_ctx``
the encoding of one message's values; ``_runtime`` ties them together
(peers, leases, calls, services). Nothing here is public API: import from
``pycircuit``.
"""
