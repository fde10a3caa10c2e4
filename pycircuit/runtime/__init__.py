"""The runtime: one per process.

Layering inside: ``_addr``, ``_wire`` and ``_codec`` are pure (bytes and
values only); ``_remote_exc`` turns exceptions into bytes and back;
``_threads`` keeps parked threads and ``_reactor`` the one thread that
watches idle sockets and runs timers; the link is three modules: ``_stream``
(RPyC's public stream and channel: frames), ``_connection`` (messages,
replies matched to callers) and ``_serve`` (serving threads; ``_watchdog``); ``_peer`` is
one connection to another runtime, ``_ctx`` the encoding of one message's
values; ``_config`` holds ``RuntimeConfig`` and the well-known handles. The
``Runtime`` class is built up in layers: ``_refs`` (leases, proxies,
releases) < ``_conns`` (accept, dial, HELLO, lost peers) < ``_calls``
(making and serving calls) < ``_runtime`` (services, export, this process's
runtime). Upper layers hook in through ``_hooks.CallObserver``,
``on_refused``, ``on_peer_lost``, ``add_static`` and ``on_install``; nothing
here imports them. Nothing here is public API: import from ``pycircuit``.
"""
