"""Reading a ridesync server's `/metrics` from outside: the campaigns and benchmarks check what a real
server counted. The text is parsed with prometheus_client's own exposition parser (the library that
writes it), not with ad-hoc line matching, so label order, escaping and `_total`/`_bucket` suffixes are
read the way Prometheus reads them."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape: (sample name, labels) -> value. Sample names carry their suffix
    (`ridesync_sync_closes_total`, `ridesync_sync_message_seconds_bucket`)."""

    samples: Mapping[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
        return cls(samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The sample `name` with exactly these labels (None if the server has not exported it yet)."""
        return self.samples.get((name, frozenset(labels.items())))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Every sample of `name`, keyed by the value of its `label` (a labelled counter's series)."""
        return {
            dict(labels)[label]: v
            for (n, labels), v in self.samples.items()
            if n == name and label in dict(labels)
        }

    def total(self, name: str) -> float:
        """The sum of every series of `name`, whatever its labels."""
        return sum(v for (n, _labels), v in self.samples.items() if n == name)

    def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """A histogram's cumulative buckets as (upper bound, count), smallest bound first (+Inf last)."""
        out = [
            (math.inf if dict(labels)["le"] == "+Inf" else float(dict(labels)["le"]), v)
            for (n, labels), v in self.samples.items()
            if n == f"{histogram}_bucket"
        ]
        return sorted(out)


def scrape(url: str, timeout_s: float = 30.0) -> Scrape:
    """`url`'s /metrics, blocking (benchmarks that run between subprocesses)."""
    with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as resp:
        return Scrape.parse(resp.read().decode())


async def scrape_async(url: str, http: aiohttp.ClientSession | None = None) -> Scrape:
    """`url`'s /metrics on the running loop; raises aiohttp.ClientError when the server does not answer."""
    if http is None:
        async with aiohttp.ClientSession() as own:
            return await scrape_async(url, own)
    async with http.get(url + "/metrics") as resp:
        resp.raise_for_status()
        return Scrape.parse(await resp.text())
