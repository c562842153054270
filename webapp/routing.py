"""Several live model versions in one MODEL_DIR: the routing file, its checks, and the routing decision.

A deployment folder holds `routing.json` and one sub-folder per version, each a normal model folder whose
model_card.json "version" names it:

    {"primary": "1.0.0", "candidates": {"1.1.0": 10}, "shadow": ["1.2.0"], "sticky_header": "X-Routing-Key"}

Candidates get their weight in percent of the live traffic, the primary the rest; shadow versions predict
on a copy of answered requests and are never answered: a list names shadows that copy every request, an
object ({"1.2.0": 10}) gives each the percent of the answered requests it copies. Every problem with the
file or the folders is a RoutingError whose message is one line naming the file. Standard library only:
the app, the metrics and gunicorn are wired elsewhere.
"""
import bisect
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from model.card import CARD_FILE, ROUTING_FILE

DEFAULT_STICKY_HEADER = "X-Routing-Key"
OVERRIDE_HEADER = "X-Model-Version"  # names the answering version outright (for tests)
_KEYS = ("primary", "candidates", "shadow", "sticky_header")
_VERSION = re.compile(r"[A-Za-z0-9._:+-]{1,64}")  # as a card's version (model_card.schema.json label_value)
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


class RoutingError(ValueError):
    """routing.json or the deployment folder is unusable; the message is one line naming the file."""


class UnknownVersion(ValueError):
    """An override names no version that answers (the primary or a candidate)."""

    def __init__(self, version: str):
        super().__init__(f"unknown version {version[:64]!r}: an override names the primary or a candidate")
        self.version = version


def _exact(weight) -> Decimal:
    # repr gives back the decimal text a float was parsed from, so 0.1 + 0.2 sums to exactly 0.3
    return Decimal(repr(weight)) if isinstance(weight, float) else Decimal(weight)


def _check_percent(weight, role: str, version: str, what: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
        raise RoutingError(f"{role} {version!r} has {what} {weight!r}: a number from 0 to 100")


def _point(text: str) -> float:
    """A point in [0, 1) for a text: the first 8 bytes of its sha256 / 2**64, the same in every process.

    The 64-bit integer keeps its top 53 bits (a float's precision) so the point rounds down and stays below 1.
    """
    return (int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 11) / 2**53


def _check_version(version, role: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise RoutingError(f"{role} {version!r} is not a version: 1 to 64 of A-Z a-z 0-9 . _ : + -")


@dataclass(frozen=True)
class Routing:
    """A checked routing file: constructing one with anything invalid raises RoutingError."""
    primary: str
    candidates: dict = field(default_factory=dict)
    shadow: tuple = ()  # a list or an object {version: percent} here; the versions in order once checked
    sticky_header: "str | None" = DEFAULT_STICKY_HEADER
    _primary_weight: float = field(init=False, repr=False, compare=False)  # what the candidates leave
    # version -> percent of the answered requests it copies; compared, so ["s"] equals {"s": 100} and not {"s": 10}
    _shadow_percents: dict = field(init=False, repr=True, compare=True)

    def __post_init__(self):
        _check_version(self.primary, "primary")
        if not isinstance(self.candidates, dict):
            raise RoutingError(f"candidates must be an object of version: weight, not {type(self.candidates).__name__}")
        for version, weight in self.candidates.items():
            _check_version(version, "candidate")
            _check_percent(weight, "candidate", version, "weight")
        total = sum((_exact(w) for w in self.candidates.values()), Decimal(0))
        if total > 100:
            raise RoutingError(f"candidates weights sum to {total} (> 100)")
        object.__setattr__(self, "_primary_weight", float(100 - total))
        if isinstance(self.shadow, dict):
            for version, percent in self.shadow.items():  # a JSON object's keys are unique (load_routing)
                _check_version(version, "shadow")
                _check_percent(percent, "shadow", version, "percent")
            percents = {version: float(percent) for version, percent in self.shadow.items()}
        elif isinstance(self.shadow, (list, tuple)):
            for version in self.shadow:
                _check_version(version, "shadow")
            if len(set(self.shadow)) != len(self.shadow):
                twice = next(v for v in self.shadow if self.shadow.count(v) > 1)
                raise RoutingError(f"shadow lists {twice!r} more than once")
            percents = dict.fromkeys(self.shadow, 100.0)
        else:
            raise RoutingError("shadow must be a list of versions or an object of version: percent, "
                               f"not {type(self.shadow).__name__}")
        roles = [(self.primary, "the primary"), *((v, "a candidate") for v in self.candidates),
                 *((v, "a shadow") for v in self.shadow)]
        first_role = {}
        for version, role in roles:
            if version in first_role:
                raise RoutingError(f"version {version!r} is both {first_role[version]} and {role}")
            first_role[version] = role
        header = self.sticky_header
        if header is not None and (not isinstance(header, str) or not _HEADER_TOKEN.fullmatch(header)):
            raise RoutingError(f"sticky_header {header!r} is not an HTTP header name (or null)")
        object.__setattr__(self, "candidates", dict(self.candidates))  # later edits of the caller's dict can't leak in
        object.__setattr__(self, "shadow", tuple(percents))
        object.__setattr__(self, "_shadow_percents", percents)

    @property
    def live(self) -> tuple:
        """The versions that answer: the primary, then the candidates."""
        return (self.primary, *self.candidates)

    @property
    def versions(self) -> tuple:
        return (*self.live, *self.shadow)

    def weight(self, version: str) -> float:
        """Percent of live traffic: a candidate's own, the primary's the remainder, a shadow's 0."""
        if version == self.primary:
            return self._primary_weight
        if version in self.candidates:
            return float(self.candidates[version])
        if version in self.shadow:
            return 0.0
        raise UnknownVersion(version)

    def shadow_percent(self, version: str) -> float:
        """Percent of the answered requests a shadow predicts a copy of; KeyError for a version that is no shadow."""
        return self._shadow_percents[version]


def is_deployment(path) -> bool:
    """True for a folder holding routing.json; a single model folder (a card and no routing.json) is not."""
    path = Path(path)
    return path.is_dir() and (path / ROUTING_FILE).is_file()


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i]))
        raise ValueError(f"key {twice!r} appears twice")
    return obj


def load_routing(path) -> Routing:
    """The routing file (or the folder holding it), parsed as strict JSON and checked."""
    path = Path(path)
    if path.is_dir():
        path = path / ROUTING_FILE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except OSError as exc:
        raise RoutingError(f"{path}: unreadable ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError, a duplicate key, NaN, bytes that are not UTF-8
        raise RoutingError(f"{path}: not JSON: {exc}") from None
    try:
        if not isinstance(obj, dict):
            raise RoutingError(f"must be a JSON object, not {type(obj).__name__}")
        unknown = [key for key in obj if key not in _KEYS]
        if unknown:
            raise RoutingError(f"unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
        if "primary" not in obj:
            raise RoutingError("missing primary")
        return Routing(**obj)
    except RoutingError as exc:
        raise RoutingError(f"{path}: {exc}") from None


def find_versions(folder, routing: Routing) -> dict:
    """version -> its sub-folder, in routing.versions order; every carded sub-folder must be routed.

    Only each card's "version" is read; no pickle is loaded. Sub-folders without a card are ignored.
    """
    folder = Path(folder)
    where = folder / ROUTING_FILE
    found = {}
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError as exc:
        raise RoutingError(f"{where}: cannot list the folder ({exc.strerror or exc})") from None
    for sub in subs:
        card = sub / CARD_FILE
        if not card.is_file():
            continue
        try:
            version = json.loads(card.read_text(encoding="utf-8"))["version"]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            problem = 'has no "version"' if isinstance(exc, (KeyError, TypeError)) else f"is not readable JSON ({exc})"
            raise RoutingError(f"{where}: the card {card} {problem}") from None
        if not isinstance(version, str):
            raise RoutingError(f"{where}: the card {card} has version {version!r}, not a string")
        if version in found:
            raise RoutingError(f"{where}: folders {found[version].name!r} and {sub.name!r} "
                               f"both hold version {version!r}")
        if version not in routing.versions:
            raise RoutingError(f"{where}: folder {sub.name!r} holds version {version!r}, which no role names")
        found[version] = sub
    missing = [v for v in routing.versions if v not in found]
    if missing:
        raise RoutingError(f"{where}: no sub-folder's card has version {missing[0]!r}")
    return {v: found[v] for v in routing.versions}


class Router:
    """Picks the version that answers a request, and the shadows that predict a copy of it.

    A point u in [0, 1) maps to a version with the candidates on the low end, in their order in the file:
    [0, w1/100) is candidate 1, [w1/100, (w1+w2)/100) candidate 2, ..., the rest the primary. Raising a
    candidate's weight therefore only grows its own interval: sticky keys already on it stay, and with one
    candidate (or when the last one grows) every key it gains comes from the primary. Growing an earlier
    candidate shifts the later candidates' intervals, so some of their keys move; new candidates go last.

    A shadow at p% copies a request when its own point is below p/100: for a sticky key the point of the
    key salted with the shadow's version, so an entity is always or never copied, whichever version answers
    it (the unsalted point decides that), and raising p only adds entities; without a key, a draw.
    """

    def __init__(self, routing: Routing):
        self.routing = routing
        self.shadows = routing.shadow
        cumulative, bounds = Decimal(0), []
        for weight in routing.candidates.values():  # exact sums, so 10 + 20 ends at 0.3, not 0.30000000000000004
            cumulative += _exact(weight)
            bounds.append(float(cumulative / 100))
        self._bounds = tuple(bounds)
        self._answers = (*routing.candidates, routing.primary)
        self._live = frozenset(routing.live)
        # (version, bound) in the file's order, the bound None at 100% (no draw); 0% never copies, so is left out
        self._copies = tuple((v, None if p == 100 else float(_exact(p) / 100))
                             for v, p in ((v, routing.shadow_percent(v)) for v in routing.shadow) if p > 0)
        self._always = tuple(v for v, bound in self._copies if bound is None)
        self._on_a_share = any(bound is not None for _, bound in self._copies)

    @staticmethod
    def key_point(key: str) -> float:
        """u for a sticky key: the first 8 bytes of sha256(key) / 2**64, the same in every process.

        The 64-bit integer keeps its top 53 bits (a float's precision) so u rounds down and stays below 1.
        """
        return _point(key)

    @staticmethod
    def shadow_point(version: str, key: str) -> float:
        """A shadow's point for a sticky key: as key_point, of sha256(version + NUL + key), so which keys a
        shadow copies does not follow which version answers them (nor which keys another shadow copies)."""
        return _point(f"{version}\0{key}")

    def choose(self, override: "str | None", key: "str | None", draw: "float | None" = None) -> str:
        """The answering version: the override if given, else by the sticky key's hash, else by chance.

        An override must name the primary or a candidate (a shadow never answers), else UnknownVersion.
        An empty key counts as none, so keyless clients are not all pinned to one version.
        """
        if override is not None:
            if override not in self._live:
                raise UnknownVersion(override)
            return override
        if key:
            u = self.key_point(key)
        else:
            u = random.random() if draw is None else draw
        return self._answers[bisect.bisect_right(self._bounds, u)]

    def copying(self, key: "str | None", draw=None) -> tuple:
        """The shadows that predict a copy of an answered request, in the file's order.

        With a sticky key, each shadow's decision is a function of the key and its version; without one (or
        an empty key), each shadow on a share draws on its own from `draw()` (random.random if None), a
        callable returning points in [0, 1). A shadow at 100% always copies and one at 0% never: no draw.
        """
        if not self._on_a_share:
            return self._always
        if key:
            return tuple(v for v, bound in self._copies if bound is None or self.shadow_point(v, key) < bound)
        draw = draw or random.random
        return tuple(v for v, bound in self._copies if bound is None or draw() < bound)
