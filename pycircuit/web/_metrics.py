"""``/metrics``: each host's ``metrics()`` in the Prometheus text format,
labelled by host ID. Read from the circuit at each scrape, never between."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, kind, help, value of one host's metrics()
_FAMILIES: list[tuple[str, str, str, Callable[[dict], float]]] = [
    ("pycircuit_workers", "gauge", "live workers", lambda m: len(m["workers"])),
    ("pycircuit_spawns", "counter", "workers spawned through this server", lambda m: m["spawns"]),
    (
        "pycircuit_calls_served",
        "counter",
        "calls served by the server's runtime",
        lambda m: m["runtime"]["calls_served"],
    ),
    (
        "pycircuit_leases_owned",
        "gauge",
        "leases granted to others on objects the server owns",
        lambda m: m["runtime"]["leases_owned"],
    ),
    (
        "pycircuit_objects_owned",
        "gauge",
        "objects (services included) the server owns",
        lambda m: m["runtime"]["objects_owned"],
    ),
    (
        "pycircuit_leases_held",
        "gauge",
        "proxies the server holds on others' objects",
        lambda m: m["runtime"]["leases_held"],
    ),
    (
        "pycircuit_connections",
        "gauge",
        "open connections of the server's runtime",
        lambda m: m["runtime"]["connections"],
    ),
    (
        "pycircuit_members",
        "gauge",
        "live servers this server sees (itself included)",
        lambda m: m["members"],
    ),
    ("pycircuit_remains", "gauge", "remains of dead workers kept", lambda m: m["remains"]),
    (
        "pycircuit_server_cpu_seconds",
        "counter",
        "CPU time of the server process",
        lambda m: m["server"]["cpu_seconds"],
    ),
    (
        "pycircuit_server_rss_bytes",
        "gauge",
        "resident memory of the server process",
        lambda m: m["server"]["rss"],
    ),
    (
        "pycircuit_workers_rss_bytes",
        "gauge",
        "resident memory of the live workers",
        lambda m: sum(w["rss"] or 0 for w in m["workers"]),
    ),
    (
        "pycircuit_workers_cpu_percent",
        "gauge",
        "CPU use of the live workers since the previous reading (%)",
        lambda m: sum(w["cpu_percent"] or 0.0 for w in m["workers"]),
    ),
    (
        "pycircuit_host_cpu_percent",
        "gauge",
        "CPU use of the machine since the previous reading (%)",
        lambda m: m["host"]["cpu_percent"],
    ),
    (
        "pycircuit_host_memory_total_bytes",
        "gauge",
        "memory of the machine",
        lambda m: m["host"]["mem_total"],
    ),
    (
        "pycircuit_host_memory_available_bytes",
        "gauge",
        "available memory of the machine",
        lambda m: m["host"]["mem_available"],
    ),
]


class _Collector:
    def __init__(self, read: Callable[[], list[dict]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        hosts = self._read()
        for name, kind, help_, value in _FAMILIES:
            cls: Any = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            fam = cls(name, help_, labels=["host"])
            for m in hosts:
                fam.add_metric([m["id"]], float(value(m)))
            yield fam


def render(read: Callable[[], list[dict]]) -> bytes:
    """The text of one scrape; ``read`` returns each host's metrics()."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(read))
    return generate_latest(registry)
