"""``pycircuit web``: a live web view of the circuit and Prometheus
``/metrics``. Layer: top, beside ``cli``; it reads the circuit through the
public client (plus the kernel calls the client and the CLI already make:
``tree``, ``peek``, ``remains``, ``metrics``, ``kill``, ``fault_stack``) and
acid. Needs the ``web`` extra (aiohttp, prometheus_client), which nothing
else imports.
"""

from ._serve import WebConfig, serve

__all__ = ["WebConfig", "serve"]
