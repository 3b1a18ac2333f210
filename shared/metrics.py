"""In-process counters and histograms in the Prometheus text format (no dependency needed).

Labels are only ever kinds, routes, statuses, methods and route templates: never anything about a
person or an address. Per-process values (one set per API replica), as Prometheus expects.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms[name]
            # buckets..., +Inf count, sum
            counts = series.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 2))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if value <= bound:
                    counts[i] += 1
            counts[len(LATENCY_BUCKETS)] += 1
            counts[len(LATENCY_BUCKETS) + 1] += value

    def counter_value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> Iterable[str]:
        with self._lock:
            counters = {n: dict(s) for n, s in self._counters.items()}
            histograms = {
                n: {k: list(v) for k, v in s.items()} for n, s in self._histograms.items()
            }
        for name, series in sorted(counters.items()):
            yield from self._header(name, "counter")
            for labels, value in sorted(series.items()):
                yield f"{name}{_labels(labels)} {value:g}"
        for name, hseries in sorted(histograms.items()):
            yield from self._header(name, "histogram")
            for labels, counts in sorted(hseries.items()):
                for i, bound in enumerate(LATENCY_BUCKETS):
                    yield f"{name}_bucket{_labels((*labels, ('le', f'{bound:g}')))} {counts[i]:g}"
                total = counts[len(LATENCY_BUCKETS)]
                yield f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {total:g}"
                yield f"{name}_count{_labels(labels)} {total:g}"
                yield f"{name}_sum{_labels(labels)} {counts[len(LATENCY_BUCKETS) + 1]:.6f}"

    def _header(self, name: str, default_kind: str) -> Iterable[str]:
        kind, text = self._help.get(name, (default_kind, name))
        yield f"# HELP {name} {text}"
        yield f"# TYPE {name} {kind}"


REGISTRY = Registry()
REGISTRY.describe(
    "vroegsignaal_uploads_total", "counter", "Uploads by partner kind, source and outcome"
)
REGISTRY.describe(
    "vroegsignaal_upload_rows_total", "counter", "Rows of accepted uploads by partner kind"
)
REGISTRY.describe(
    "vroegsignaal_http_request_duration_seconds",
    "histogram",
    "API latency by method, route template and status",
)


def gauge_lines(name: str, text: str, values: Iterable[tuple[Labels, float]]) -> list[str]:
    """Lines for a gauge computed at scrape time (from the database)."""
    lines = [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{_labels(labels)} {value:g}" for labels, value in values]
    return lines
