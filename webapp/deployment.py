"""What MODEL_DIR serves: one model, or several versions of it live at once.

A model folder (a card and its pickle) is served alone, with today's metric series. A
deployment folder (webapp.routing: a routing.json beside one folder per version) is served
whole: every version is loaded and checked as a single model is, and the request schema must
be the same for all of them, since one validation serves every version. Each request is then
answered by the version the router picks (an explicit X-Model-Version, the sticky key's
version, or a weighted draw), and each shadow version the router picks for it (every request, or
a share: by the sticky key, or a draw) predicts on a copy after the answer.
With several versions every model metric carries a model_version label, bounded by the
versions the routing file names.
"""
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from model.card import ModelIntegrityError

from .openapi import with_routing
from .routing import (OVERRIDE_HEADER, Router, RoutingError, UnknownVersion, find_versions, is_deployment,
                      load_routing)


@dataclass
class Deployment:
    services: dict  # version -> webapp.ModelService: the primary first, then candidates, then shadows
    router: Router = None  # None: one model folder, whose version answers everything

    @property
    def primary(self):
        return next(iter(self.services.values()))

    @property
    def several(self) -> bool:
        """Several versions: metrics carry model_version."""
        return len(self.services) > 1

    @property
    def shadows(self) -> tuple:
        return self.router.shadows if self.router is not None else ()

    @property
    def answering(self) -> tuple:
        """The versions a request may be answered by (feedback may name them)."""
        if self.router is None:
            return (self.primary.version,)
        return tuple(v for v in self.services if v not in self.router.shadows)

    def choose(self, headers) -> str:
        """The version that answers a request with these headers; routing.UnknownVersion for an override
        naming no answering version."""
        override = headers.get(OVERRIDE_HEADER) or None  # an empty header says nothing
        if self.router is None:
            if override is not None and override != self.primary.version:
                raise UnknownVersion(override)
            return self.primary.version
        return self.router.choose(override, self._sticky_key(headers))

    def copying(self, headers) -> tuple:
        """The shadow versions that predict a copy of an answered request with these headers; () for none."""
        if self.router is None:
            return ()
        return self.router.copying(self._sticky_key(headers))

    def _sticky_key(self, headers) -> "str | None":
        header = self.router.routing.sticky_header
        return headers.get(header) if header else None

    @cached_property
    def spec(self) -> dict:
        """/openapi.json: the primary card's document with the routing this deployment applies, built once (a
        reload makes a new Deployment)."""
        sticky = self.router.routing.sticky_header if self.router is not None else None
        return with_routing(self.primary.spec, self.answering, sticky)

    def role(self, version: str) -> str:
        """primary, candidate or shadow."""
        if version == self.primary.version:
            return "primary"
        return "shadow" if version in self.shadows else "candidate"

    def reference_cards(self) -> list:
        """(leading labels, card) of every version, as webapp.reference_metrics takes them."""
        if not self.several:
            return [({}, self.primary.card)]
        return [({"model_version": version}, service.card) for version, service in self.services.items()]

    def describe(self):
        """The routing as /model shows it; None for one model folder."""
        if self.router is None:
            return None
        routing = self.router.routing
        return {"primary": routing.primary, "sticky_header": routing.sticky_header,
                "override_header": OVERRIDE_HEADER,
                "versions": [self._version(service, self.role(version), routing)
                             for version, service in self.services.items()]}

    @staticmethod
    def _version(service, role: str, routing) -> dict:
        # weight_percent stays the share of live traffic (a shadow's is 0): what a shadow copies is a key of its own
        described = {"version": service.version, "role": role, "weight_percent": routing.weight(service.version)}
        if role == "shadow":
            described["shadow_percent"] = routing.shadow_percent(service.version)
        described["serving_path"] = service.predictor.path
        return described


def _request_schema(card: dict) -> list:
    return [(f["name"], f["kind"]) for f in card["features"]]


def _check_shared(services: dict) -> None:
    """Every version takes the same request, validated alike, and answers the same kind of thing, or
    ModelIntegrityError: which version answers must never decide whether a request is refused."""
    primary = next(iter(services.values()))
    for version, service in services.items():
        card = service.card
        if _request_schema(card) != _request_schema(primary.card):
            raise ModelIntegrityError(f"version {version} does not share the request schema of the primary "
                                      f"{primary.version} (features and kinds must be the same, in the same order)")
        schema, primary_schema = getattr(service, "schema", None), getattr(primary, "schema", None)
        if schema is not None and primary_schema is not None and schema._specs != primary_schema._specs:
            differing = next(a[0] for a, b in zip(schema._specs, primary_schema._specs) if a != b)
            raise ModelIntegrityError(f"version {version} validates feature {differing!r} otherwise than the primary "
                                      f"{primary.version} (bounds, integer, nullable or closed categories): every "
                                      "version must accept the same requests")
        if card["target"].get("probabilities") != primary.card["target"].get("probabilities"):
            raise ModelIntegrityError(f"version {version} answers with{'' if card['target'].get('probabilities') else 'out'}"
                                      f" probabilities, the primary {primary.version} otherwise")
        if (card["task"], card["target"]["name"]) != (primary.card["task"], primary.card["target"]["name"]):
            raise ModelIntegrityError(f"version {version} predicts {card['task']} of {card['target']['name']!r}, "
                                      f"the primary {primary.card['task']} of {primary.card['target']['name']!r}")
        if card["task"] == "classification" and card["target"]["classes"] != primary.card["target"]["classes"]:
            raise ModelIntegrityError(f"version {version} has other classes than the primary {primary.version}")


def load_deployment(cfg, load_service) -> Deployment:
    """Every version MODEL_DIR names, each loaded by load_service(cfg with its folder); ModelIntegrityError
    with one line when any version fails its checks, or the routing file its own."""
    folder = Path(cfg["MODEL_DIR"])
    if not is_deployment(folder):
        service = load_service(cfg)
        return Deployment({service.version: service})
    try:
        routing = load_routing(folder)
        folders = find_versions(folder, routing)
    except RoutingError as exc:
        raise ModelIntegrityError(str(exc)) from None
    services = {}
    for version in routing.versions:
        service = load_service({**cfg, "MODEL_DIR": str(folders[version])})
        services[version] = service
    _check_shared(services)
    return Deployment(services, Router(routing))
