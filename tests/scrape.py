"""Read a Prometheus text exposition into {(name, labels): value} for exact assertions."""
import requests
from prometheus_client.parser import text_string_to_metric_families


class Samples(dict):
    """{(sample name, frozenset(labels.items())): value} with filtering helpers."""

    def sum(self, metric: str, /, **labels) -> float:
        want = set(labels.items())
        return sum(v for (n, lab), v in self.items() if n == metric and want <= lab)

    def by(self, metric: str, label: str, /, **labels) -> dict:
        want = set(labels.items())
        out = {}
        for (n, lab), v in self.items():
            if n == metric and want <= lab:
                key = dict(lab)[label]
                out[key] = out.get(key, 0.0) + v
        return out

    def series(self, name: str) -> int:
        return sum(1 for (n, _) in self if n == name)

    def minus(self, before: "Samples") -> "Samples":
        return Samples({k: v - before.get(k, 0.0) for k, v in self.items()})


def parse(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(url: str) -> Samples:
    resp = requests.get(url, timeout=10)
    resp.raise_for_status()
    return parse(resp.text)
