"""The card's distribution constants as gauges, read from the live card at each scrape.

Each numeric quantity with a `distribution` (model.drift) brings two gauges per edge (its
reference cdf and trapezoid weight) and six more (reference mean and deviation, center, and
three thresholds): about 570 series for the Ames example. As multiprocess gauges they would
be stored in every process's files and parsed from each at every scrape, which made a scrape
several times slower. They are constants of the card, so the process that serves the scrape
(the gunicorn master, or the app itself in single-process mode) makes them from the card it
serves: after a reload the new card's values replace the old ones at the next scrape, and a
series the new card lacks disappears, which the rules' `max by` reads as the new card only.
"""
from typing import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from model.drift import STATISTICS, edge_weights


def distributions(card: dict) -> Iterator[tuple]:
    """(metric prefix, label names, label values, distribution) of every quantity the card has one for."""
    refs = card["reference"]
    for f in card["features"]:
        dist = refs["features"][f["name"]].get("distribution")
        if dist is not None:
            yield "model_feature", ["feature"], [f["name"]], dist
    for key, prefix in (("prediction", "model_prediction"), ("confidence", "model_confidence")):
        dist = refs.get(key, {}).get("distribution")
        if dist is not None:
            yield prefix, [], [], dist


class ReferenceCollector:
    """model_{feature,prediction,confidence}_{reference_cdf, edge_weight, reference_mean, reference_stddev,
    center, drift_threshold} of the cards `cards()` returns: (leading labels, card) pairs, the labels
    ({"model_version": ...} in a deployment of several versions, else empty) ahead of each series' own."""

    def __init__(self, cards: Callable[[], list]):
        self.cards = cards

    def describe(self):
        return []  # the families depend on the card: a registry must not reserve their names

    def collect(self):
        families = {}

        def family(prefix, name, documentation, labels):
            key = f"{prefix}_{name}"
            if key not in families:
                families[key] = GaugeMetricFamily(key, documentation, labels=labels)
            return families[key]

        for leading, card in self.cards():
            self._add_card(family, list(leading), list(leading.values()), card)
        yield from families.values()

    @staticmethod
    def _add_card(family, leading_names: list, leading_values: list, card: dict) -> None:
        for prefix, names, values, dist in distributions(card):
            names, values = leading_names + names, leading_values + values
            les = [floatToGoString(e) for e in dist["edges"]]
            cdf = family(prefix, "reference_cdf", "Share of the reference values <= le (model card distribution)",
                         names + ["le"])
            weight = family(prefix, "edge_weight", "Trapezoid weight of each distribution edge: half the distance "
                            "between its neighbours (model.drift.edge_weights)", names + ["le"])
            for le, share, w in zip(les, dist["cdf"], edge_weights(dist["edges"])):
                cdf.add_metric(values + [le], share)
                weight.add_metric(values + [le], w)
            for name, documentation, value in (
                    ("reference_mean", "Mean of the winsorized reference values (model card)", dist["mean"]),
                    ("reference_stddev", "Standard deviation of the winsorized reference values (model card)",
                     dist["std"]),
                    ("center", "What the centered sums are taken from (model card)", dist["center"])):
                family(prefix, name, documentation, names).add_metric(values, value)
            threshold = family(prefix, "drift_threshold", "Calibrated threshold of each drift score (model card)",
                               names + ["statistic"])
            for statistic in STATISTICS:
                threshold.add_metric(values + [statistic], dist["thresholds"][statistic])
