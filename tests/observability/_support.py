"""Helpers of the observability tests: scrape and parse /metrics with the official parser."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``url``/metrics by sample name (``statefleet_turns_total``, ``..._bucket``, ...)."""
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          where: Mapping[str, str | tuple[str, ...]] | None = None) -> float:
    """The sum of the samples of ``name`` whose labels match ``where`` (a value or a tuple of values)."""
    def matches(labels: dict[str, str]) -> bool:
        for key, wanted in (where or {}).items():
            values = (wanted,) if isinstance(wanted, str) else wanted
            if labels.get(key) not in values:
                return False
        return True

    return sum(value for labels, value in samples.get(name, []) if matches(labels))
