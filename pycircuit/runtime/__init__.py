"""The runtime: one per process.

Layering inside: ``_addr``, ``_wire`` and ``_codec`` are pure (bytes and
values only); ``_remote_exc`` turns exceptions into bytes and back; ``_link``
adapts RPyC (sockets, serving threads); ``_runtime`` ties them together
(peers, leases, calls, services). Nothing here is public API: import from
``pycircuit``.
"""
