"""Unit tests of the routing file, the deployment folder's versions and the routing decision."""
import hashlib
import json
import math
import random
from fractions import Fraction
from types import SimpleNamespace

import pytest

from webapp.routing import (Router, Routing, RoutingError, UnknownVersion, find_versions, is_deployment,
                            load_routing)

EXAMPLE = {"primary": "1.0.0", "candidates": {"1.1.0": 10}, "shadow": ["1.2.0"], "sticky_header": "X-Routing-Key"}


def write_routing(folder, content) -> str:
    path = folder / "routing.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def refusal(tmp_path, content) -> str:
    """The one-line message load_routing raises for this routing.json."""
    path = write_routing(tmp_path, content)
    with pytest.raises(RoutingError) as info:
        load_routing(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(path) + 2:]


def add_version(folder, name, card) -> None:
    (folder / name).mkdir()
    (folder / name / "model_card.json").write_text(card if isinstance(card, str) else json.dumps(card))


# --- the routing file --------------------------------------------------------------------------------

def test_the_example_file_parses_to_its_values(tmp_path):
    write_routing(tmp_path, EXAMPLE)
    routing = load_routing(tmp_path / "routing.json")
    assert routing == Routing("1.0.0", {"1.1.0": 10}, ("1.2.0",), "X-Routing-Key")
    assert routing.versions == ("1.0.0", "1.1.0", "1.2.0")
    assert routing.live == ("1.0.0", "1.1.0")
    assert [routing.weight(v) for v in routing.versions] == [90.0, 10.0, 0.0]


def test_defaults_and_null_sticky_header(tmp_path):
    write_routing(tmp_path, {"primary": "v1"})
    assert load_routing(tmp_path) == Routing("v1", {}, (), "X-Routing-Key")
    write_routing(tmp_path, {"primary": "v1", "sticky_header": None})
    assert load_routing(tmp_path).sticky_header is None


def test_candidates_keep_the_files_order(tmp_path):
    write_routing(tmp_path, '{"primary": "p", "candidates": {"z": 1, "a": 2, "m": 3}}')
    assert load_routing(tmp_path).versions == ("p", "z", "a", "m")


def test_weights_are_summed_exactly(tmp_path):
    write_routing(tmp_path, {"primary": "p", "candidates": {"a": 33.3, "b": 33.3, "c": 33.4}})
    routing = load_routing(tmp_path)
    assert routing.weight("p") == 0.0
    assert Routing("p", {"a": 0.1, "b": 0.2}).weight("p") == 99.7


def test_weight_of_an_unknown_version_is_refused():
    with pytest.raises(UnknownVersion):
        Routing("p").weight("q")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON: Expecting property name enclosed in double quotes"),
    ("", "not JSON: Expecting value"),
    ('{"primary": "a", "primary": "b"}', "not JSON: key 'primary' appears twice"),
    ('{"primary": "p", "candidates": {"a": NaN}}', "not JSON: NaN is not JSON"),
    ('["1.0.0"]', "must be a JSON object, not list"),
    ('"1.0.0"', "must be a JSON object, not str"),
    ({"primary": "p", "canary": {"a": 1}}, "unknown key 'canary' (known: primary, candidates, shadow, sticky_header)"),
    ({"primary": "p", "a\nb": 1}, "unknown key 'a\\nb'"),
    ({"candidates": {"a": 1}}, "missing primary"),
    ({"primary": 1}, "primary 1 is not a version"),
    ({"primary": None}, "primary None is not a version"),
    ({"primary": "p", "candidates": ["a"]}, "candidates must be an object of version: weight, not list"),
    ({"primary": "p", "shadow": "s"}, "shadow must be a list of versions or an object of version: percent, not str"),
    ({"primary": "p", "shadow": 10}, "shadow must be a list of versions or an object of version: percent, not int"),
    ({"primary": "p", "shadow": None}, "shadow must be a list of versions or an object of version: percent, "
                                       "not NoneType"),
    ({"primary": "p", "shadow": [1]}, "shadow 1 is not a version"),
    ({"primary": "p", "shadow": {"s/1": 5}}, "shadow 's/1' is not a version"),
    ({"primary": "p", "shadow": {"": 5}}, "shadow '' is not a version"),
    ({"primary": "p", "shadow": {"s": "10"}}, "shadow 's' has percent '10': a number from 0 to 100"),
    ({"primary": "p", "shadow": {"s": True}}, "shadow 's' has percent True: a number from 0 to 100"),
    ({"primary": "p", "shadow": {"s": None}}, "shadow 's' has percent None: a number from 0 to 100"),
    ({"primary": "p", "shadow": {"s": [10]}}, "shadow 's' has percent [10]: a number from 0 to 100"),
    ({"primary": "p", "shadow": {"s": -1}}, "shadow 's' has percent -1: a number from 0 to 100"),
    ({"primary": "p", "shadow": {"s": 100.5}}, "shadow 's' has percent 100.5: a number from 0 to 100"),
    ('{"primary": "p", "shadow": {"s": 1e400}}', "shadow 's' has percent inf: a number from 0 to 100"),
    ('{"primary": "p", "shadow": {"s": 10, "s": 20}}', "not JSON: key 's' appears twice"),
    ({"primary": "p", "sticky_header": 5}, "sticky_header 5 is not an HTTP header name"),
    ({"primary": "1.0 beta"}, "primary '1.0 beta' is not a version: 1 to 64 of A-Z a-z 0-9 . _ : + -"),
    ({"primary": ""}, "primary '' is not a version"),
    ({"primary": "v" * 65}, f"primary '{'v' * 65}' is not a version"),
    ({"primary": "1.0.0\n"}, "primary '1.0.0\\n' is not a version"),
    ({"primary": "1.0.0 build"}, "primary '1.0.0 build' is not a version"),
    ({"primary": "p", "candidates": {"c/1": 5}}, "candidate 'c/1' is not a version"),
    ({"primary": "p", "candidates": {"c": "10"}}, "candidate 'c' has weight '10': a number from 0 to 100"),
    ({"primary": "p", "candidates": {"c": True}}, "candidate 'c' has weight True"),
    ({"primary": "p", "candidates": {"c": None}}, "candidate 'c' has weight None"),
    ({"primary": "p", "candidates": {"c": -1}}, "candidate 'c' has weight -1"),
    ({"primary": "p", "candidates": {"c": 100.5}}, "candidate 'c' has weight 100.5"),
    ('{"primary": "p", "candidates": {"c": 1e400}}', "candidate 'c' has weight inf"),
    ({"primary": "p", "candidates": {"a": 60, "b": 60}}, "candidates weights sum to 120 (> 100)"),
    ({"primary": "p", "candidates": {"a": 50, "b": 50.5}}, "candidates weights sum to 100.5 (> 100)"),
    ({"primary": "p", "candidates": {"p": 10}}, "version 'p' is both the primary and a candidate"),
    ({"primary": "p", "shadow": ["p"]}, "version 'p' is both the primary and a shadow"),
    ({"primary": "p", "candidates": {"c": 10}, "shadow": ["c"]}, "version 'c' is both a candidate and a shadow"),
    ({"primary": "p", "shadow": ["s", "t", "s"]}, "shadow lists 's' more than once"),
    ({"primary": "p", "shadow": {"p": 10}}, "version 'p' is both the primary and a shadow"),
    ({"primary": "p", "candidates": {"c": 10}, "shadow": {"s": 5, "c": 5}},
     "version 'c' is both a candidate and a shadow"),
    ({"primary": "p", "sticky_header": "X Routing"}, "sticky_header 'X Routing' is not an HTTP header name"),
    ({"primary": "p", "sticky_header": "X-Key:"}, "sticky_header 'X-Key:' is not an HTTP header name"),
    ({"primary": "p", "sticky_header": ""}, "sticky_header '' is not an HTTP header name"),
    ({"primary": "p", "sticky_header": "X-Key\n"}, "sticky_header 'X-Key\\n' is not an HTTP header name"),
])
def test_a_bad_routing_file_is_refused_in_one_line(tmp_path, content, problem):
    assert refusal(tmp_path, content).startswith(problem)


def test_bytes_that_are_not_utf8_are_refused(tmp_path):
    (tmp_path / "routing.json").write_bytes(b'{"primary": "\xff"}')
    with pytest.raises(RoutingError, match=r"routing\.json: not JSON: 'utf-8' codec can't decode"):
        load_routing(tmp_path)


def test_a_missing_routing_file_is_refused(tmp_path):
    with pytest.raises(RoutingError, match=r"routing\.json: unreadable \(No such file or directory\)$"):
        load_routing(tmp_path)


def test_weights_at_the_bounds_are_accepted(tmp_path):
    write_routing(tmp_path, {"primary": "p", "candidates": {"a": 0, "b": 100}})
    routing = load_routing(tmp_path)
    assert (routing.weight("a"), routing.weight("b"), routing.weight("p")) == (0.0, 100.0, 0.0)


def test_a_shadow_list_copies_every_request_and_an_object_gives_each_its_percent(tmp_path):
    write_routing(tmp_path, {"primary": "p", "shadow": ["a", "b"]})
    listed = load_routing(tmp_path)
    assert listed.shadow == ("a", "b")
    assert [listed.shadow_percent(v) for v in listed.shadow] == [100.0, 100.0]
    write_routing(tmp_path, '{"primary": "p", "candidates": {"c": 20}, "shadow": {"z": 10, "a": 0, "m": 12.5, '
                            '"b": 100}}')
    shared = load_routing(tmp_path)
    assert shared.shadow == ("z", "a", "m", "b")  # the file's order, as a list's
    assert shared.versions == ("p", "c", "z", "a", "m", "b")
    assert "m" in shared.shadow and "c" not in shared.shadow
    assert [shared.shadow_percent(v) for v in shared.shadow] == [10.0, 0.0, 12.5, 100.0]
    # weight() stays the share of live traffic: a shadow answers none, whatever share it copies
    assert [shared.weight(v) for v in shared.versions] == [80.0, 20.0, 0.0, 0.0, 0.0, 0.0]
    for answering in ("p", "c", "unknown"):
        with pytest.raises(KeyError):
            shared.shadow_percent(answering)


def test_a_shadow_list_equals_the_object_at_100_and_no_other():
    assert Routing("p", shadow=["s"]) == Routing("p", shadow={"s": 100})
    assert Routing("p", shadow=["s"]) != Routing("p", shadow={"s": 10})
    assert Routing("p", shadow={"s": 10}) != Routing("p", shadow={"s": 20})
    assert Routing("p", shadow={"s": 10}) == Routing("p", shadow={"s": 10.0})


def test_the_shadow_object_is_not_changed_by_later_edits():
    shadow = {"s": 10}
    routing = Routing("p", shadow=shadow)
    shadow["s"], shadow["t"] = 90, 50
    assert routing.shadow == ("s",) and routing.shadow_percent("s") == 10.0


def test_is_deployment(tmp_path):
    add_version(tmp_path, "single", {"version": "1.0.0"})
    assert not is_deployment(tmp_path / "single")
    assert not is_deployment(tmp_path / "absent")
    write_routing(tmp_path, EXAMPLE)
    assert is_deployment(tmp_path)
    assert is_deployment(str(tmp_path))
    assert not is_deployment(tmp_path / "routing.json")


# --- the deployment folder ---------------------------------------------------------------------------

@pytest.fixture
def deployment(tmp_path):
    write_routing(tmp_path, EXAMPLE)
    add_version(tmp_path, "current", {"version": "1.0.0"})
    add_version(tmp_path, "canary", {"version": "1.1.0", "task": "regression"})
    add_version(tmp_path, "next", {"version": "1.2.0"})
    (tmp_path / "notes").mkdir()  # no card: ignored
    (tmp_path / "README").write_text("not a folder")
    return tmp_path


def versions_refusal(folder) -> str:
    with pytest.raises(RoutingError) as info:
        find_versions(folder, load_routing(folder))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'routing.json'}: ")
    return message


def test_find_versions_maps_each_version_to_its_folder(deployment):
    found = find_versions(deployment, load_routing(deployment))
    assert list(found.items()) == [("1.0.0", deployment / "current"), ("1.1.0", deployment / "canary"),
                                   ("1.2.0", deployment / "next")]


def test_a_routed_version_without_a_folder_is_refused(deployment):
    (deployment / "next" / "model_card.json").unlink()
    assert versions_refusal(deployment).endswith("no sub-folder's card has version '1.2.0'")


def test_two_folders_with_one_version_are_refused(deployment):
    add_version(deployment, "copy", {"version": "1.1.0"})
    assert versions_refusal(deployment).endswith("folders 'canary' and 'copy' both hold version '1.1.0'")


def test_an_unrouted_folder_is_refused(deployment):
    add_version(deployment, "old", {"version": "0.9.0"})
    assert versions_refusal(deployment).endswith("folder 'old' holds version '0.9.0', which no role names")


@pytest.mark.parametrize("card, problem", [
    ("{broken", "is not readable JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ({"name": "x"}, 'has no "version"'),
    ([], 'has no "version"'),
    ({"version": 1}, "has version 1, not a string"),
])
def test_a_bad_card_is_refused_by_name(deployment, card, problem):
    add_version(deployment, "bad", card)
    assert versions_refusal(deployment).endswith(f"the card {deployment / 'bad' / 'model_card.json'} {problem}")


# --- the routing decision ----------------------------------------------------------------------------

def router(candidates, primary="1.0.0", shadow=()) -> Router:
    return Router(Routing(primary, candidates, shadow))


def test_draws_map_to_versions_with_candidates_on_the_low_end():
    route = router({"1.1.0": 10})
    assert [route.choose(None, None, u) for u in (0.0, 0.0999999, 0.1, 0.9999)] == \
        ["1.1.0", "1.1.0", "1.0.0", "1.0.0"]


def test_several_candidates_take_consecutive_intervals_in_file_order():
    route = router({"b": 10, "a": 20, "zero": 0, "c": 0.5})
    draws = (0.0, 0.0999, 0.1, 0.2999, 0.3, 0.3049, 0.305, 0.9999)
    assert [route.choose(None, None, u) for u in draws] == ["b", "b", "a", "a", "c", "c", "1.0.0", "1.0.0"]


def test_interval_bounds_are_exact_sums():
    # in floats 10/100 + 20/100 is 0.30000000000000004 and (0.1 + 0.2)/100 is 0.0030000000000000005:
    # either would hand the primary's first draw to the second candidate
    assert router({"a": 10, "b": 20}).choose(None, None, 0.3) == "1.0.0"
    assert router({"a": 0.1, "b": 0.2}).choose(None, None, 0.003) == "1.0.0"
    assert router({"a": 0.1, "b": 0.2}).choose(None, None, 0.0029999999999999996) == "b"


def test_candidates_with_all_the_traffic_leave_the_primary_none():
    route = router({"a": 60, "b": 40})
    assert {route.choose(None, None, u) for u in (0.0, 0.5999, 0.6, 0.9999999999999999)} == {"a", "b"}


def test_random_split_matches_the_weight(monkeypatch):
    monkeypatch.setattr(random, "random", random.Random(20261206).random)
    route = router({"1.1.0": 10}, shadow=("1.2.0",))
    draws = 100_000
    on_candidate = sum(route.choose(None, None) == "1.1.0" for _ in range(draws))
    # binomial(100,000, 0.1): sd = sqrt(100,000 * 0.1 * 0.9) = 94.9, so 4.5 sd is 427 draws
    assert abs(on_candidate - draws * 0.1) <= 4.5 * math.sqrt(draws * 0.1 * 0.9)


def test_a_key_always_gets_the_same_version():
    route = router({"1.1.0": 10})
    keys = [f"entity-{i}" for i in range(1000)]
    chosen = {key: {route.choose(None, key, draw) for draw in (0.0, 0.05, 0.5, 0.9, 0.9999)} for key in keys}
    assert all(len(versions) == 1 for versions in chosen.values())
    on_candidate = sum(versions == {"1.1.0"} for versions in chosen.values())
    assert on_candidate == 102  # the hash spreads keys like draws: binomial(1,000, 0.1) has mean 100, sd 9.5


def test_the_key_hash_is_the_first_8_bytes_of_sha256():
    digest = hashlib.sha256(b"customer-42").digest()
    assert digest[:8].hex() == "a045eb33f8797f35"  # pinned: a different hash would re-route every sticky key
    top = int.from_bytes(digest[:8], "big")
    u = Router.key_point("customer-42")
    assert u == (top >> 11) / 2**53
    assert 0 <= Fraction(top, 2**64) - Fraction(u) < Fraction(1, 2**53)  # top / 2**64, rounded down
    assert router({"c": 63}).choose(None, "customer-42") == "c"  # u = 0.62607
    assert router({"c": 62}).choose(None, "customer-42") == "1.0.0"


def test_the_largest_hash_stays_below_one(monkeypatch):
    all_ones = SimpleNamespace(sha256=lambda data: SimpleNamespace(digest=lambda: b"\xff" * 32))
    monkeypatch.setattr("webapp.routing.hashlib", all_ones)
    assert (2**64 - 1) / 2**64 == 1.0  # why the point is rounded down, not to the nearest float
    assert Router.key_point("any") == 1 - 2**-53
    assert router({"a": 100}).choose(None, "any") == "a"  # not the primary, whose weight is 0


def test_an_empty_key_is_no_key():
    route = router({"1.1.0": 10})
    assert route.choose(None, "", 0.0) == "1.1.0"
    assert route.choose(None, "", 0.5) == "1.0.0"


def test_raising_a_weight_keeps_the_keys_on_the_candidate():
    keys = [f"entity-{i}" for i in range(10_000)]
    before = [router({"1.1.0": 5}).choose(None, key) for key in keys]
    after = [router({"1.1.0": 50}).choose(None, key) for key in keys]
    # counted with integers, independently of the router: keys whose first 8 hash bytes are below 5% (50%) of 2**64
    tops = [int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") for key in keys]
    assert before.count("1.1.0") == sum(top < 2**64 * 5 // 100 for top in tops) == 477
    assert after.count("1.1.0") == sum(top < 2**64 // 2 for top in tops) == 5026
    assert all(a == "1.1.0" for b, a in zip(before, after) if b == "1.1.0")
    assert {(b, a) for b, a in zip(before, after) if b != a} == {("1.0.0", "1.1.0")}


def test_with_two_candidates_only_the_last_grows_from_the_primary_alone():
    keys = [f"entity-{i}" for i in range(10_000)]
    base = [router({"a": 10, "b": 10}).choose(None, key) for key in keys]
    last_raised = [router({"a": 10, "b": 30}).choose(None, key) for key in keys]
    first_raised = [router({"a": 30, "b": 10}).choose(None, key) for key in keys]
    assert {(b, r) for b, r in zip(base, last_raised) if b != r} == {("1.0.0", "b")}
    assert all(r == "a" for b, r in zip(base, first_raised) if b == "a")
    # a's interval [0, 0.3) now covers b's old one [0.1, 0.2): b's keys move, b takes [0.3, 0.4) from the primary
    assert {(b, r) for b, r in zip(base, first_raised) if b != r} == {("b", "a"), ("1.0.0", "a"), ("1.0.0", "b")}


def test_an_override_names_a_version_that_answers():
    route = router({"1.1.0": 10, "1.3.0": 0}, shadow=("1.2.0",))
    assert route.shadows == ("1.2.0",)
    assert route.choose("1.1.0", "customer-42", 0.99) == "1.1.0"
    assert route.choose("1.0.0", None, 0.0) == "1.0.0"
    assert route.choose("1.3.0", None) == "1.3.0"  # weight 0: reachable only this way
    assert {route.choose(None, None, u) for u in (0.0, 0.05, 0.0999, 0.1, 0.5)} == {"1.1.0", "1.0.0"}
    for refused in ("1.2.0", "9.9.9", ""):
        with pytest.raises(UnknownVersion) as info:
            route.choose(refused, None, 0.0)
        assert isinstance(info.value, ValueError)
        assert info.value.version == refused
        assert str(info.value) == f"unknown version {refused!r}: an override names the primary or a candidate"


def test_a_primary_alone_answers_everything():
    route = router({})
    assert route.shadows == ()
    assert {route.choose(None, None, u) for u in (0.0, 0.5, 0.9999999999999999)} == {"1.0.0"}
    assert {route.choose(None, f"entity-{i}") for i in range(1000)} == {"1.0.0"}
    assert {route.choose(None, None) for _ in range(1000)} == {"1.0.0"}


def test_the_router_is_not_changed_by_later_edits_of_the_candidates():
    candidates = {"1.1.0": 10}
    routing = Routing("1.0.0", candidates)
    candidates["1.1.0"] = 90
    assert Router(routing).choose(None, None, 0.5) == "1.0.0"
    assert routing.weight("1.1.0") == 10.0


# --- which shadows copy a request --------------------------------------------------------------------

def no_draw() -> float:
    raise AssertionError("a draw where the decision needs none")


def binomial_bound(n: int, p: float, sigmas: float = 4.5) -> float:
    """Half-width of the band a binomial count stays in but for a chance below 1e-5 (normal approximation)."""
    return sigmas * math.sqrt(n * p * (1 - p))


def test_a_shadow_at_100_always_copies_and_one_at_0_never_without_a_draw():
    route = Router(Routing("1.0.0", shadow={"never": 0, "always": 100}))
    assert route.shadows == ("never", "always")
    assert route.copying(None, no_draw) == ("always",)
    assert route.copying("customer-42", no_draw) == ("always",)
    assert Router(Routing("1.0.0", shadow=["a", "b"])).copying(None, no_draw) == ("a", "b")
    assert Router(Routing("1.0.0", shadow={"never": 0})).copying(None, no_draw) == ()
    assert Router(Routing("1.0.0", {"1.1.0": 10})).copying("customer-42", no_draw) == ()


def test_a_draw_below_the_percent_copies():
    route = Router(Routing("1.0.0", shadow={"s": 10}))
    assert [route.copying(None, lambda u=u: u) for u in (0.0, 0.0999999, 0.1, 0.9999)] == [("s",), ("s",), (), ()]
    # the bound is the exact decimal: in floats 0.3 / 100 is 0.003 or 0.0029999999999999996 by the route taken
    tiny = Router(Routing("1.0.0", shadow={"s": 0.3}))
    assert tiny.copying(None, lambda: 0.003) == ()
    assert tiny.copying(None, lambda: 0.0029999999999999996) == ("s",)


def test_an_empty_key_is_no_key_for_the_shadows_too():
    route = Router(Routing("1.0.0", shadow={"s": 10}))
    assert route.copying("", lambda: 0.05) == ("s",)
    assert route.copying("", lambda: 0.5) == ()


def test_without_a_draw_given_the_module_draws_from_random(monkeypatch):
    route = Router(Routing("1.0.0", shadow={"s": 10}))
    monkeypatch.setattr(random, "random", lambda: 0.05)
    assert route.copying(None) == ("s",)
    monkeypatch.setattr(random, "random", lambda: 0.5)
    assert route.copying(None) == ()


def test_keyless_requests_are_copied_at_each_shadows_share_independently():
    route = Router(Routing("1.0.0", {"1.1.0": 50}, {"s": 10, "all": 100, "t": 50}))
    rng = random.Random(20261207)
    n = 100_000
    copies = [route.copying(None, rng.random) for _ in range(n)]
    assert set(copies) == {("all",), ("s", "all"), ("all", "t"), ("s", "all", "t")}  # the file's order
    on_s = sum("s" in c for c in copies)
    on_t = sum("t" in c for c in copies)
    on_both = sum(len(c) == 3 for c in copies)
    # binomial(100,000, p): 4.5 sd is 427 copies at 10%, 712 at 50%, 310 for both at 5%
    assert abs(on_s - 0.1 * n) <= binomial_bound(n, 0.1), on_s
    assert abs(on_t - 0.5 * n) <= binomial_bound(n, 0.5), on_t
    assert abs(on_both - 0.05 * n) <= binomial_bound(n, 0.05), on_both


def test_the_shadow_point_is_the_key_salted_with_the_version():
    digest = hashlib.sha256(b"1.2.0\0customer-42").digest()
    top = int.from_bytes(digest[:8], "big")
    u = Router.shadow_point("1.2.0", "customer-42")
    assert u == (top >> 11) / 2**53
    assert 0 <= Fraction(top, 2**64) - Fraction(u) < Fraction(1, 2**53)
    assert u != Router.key_point("customer-42") and u != Router.shadow_point("1.2.1", "customer-42")
    percent = math.ceil(u * 100)  # the least whole percent that copies this key
    assert Router(Routing("1.0.0", shadow={"1.2.0": percent})).copying("customer-42", no_draw) == ("1.2.0",)
    assert Router(Routing("1.0.0", shadow={"1.2.0": percent - 1})).copying("customer-42", no_draw) == ()


def test_a_key_is_always_or_never_copied():
    keys = [f"entity-{i}" for i in range(1000)]
    first = {key: Router(Routing("1.0.0", shadow={"s": 30})).copying(key, no_draw) for key in keys}
    again = Router(Routing("1.0.0", {"1.1.0": 90}, {"s": 30}))  # another router, other candidates: the same keys
    assert all(again.copying(key, no_draw) == first[key] for key in keys for _ in range(3))
    copied = [key for key in keys if first[key] == ("s",)]
    # counted with integers, independently of the router: keys whose salted hash's first 8 bytes are below 30%
    tops = {key: int.from_bytes(hashlib.sha256(f"s\0{key}".encode()).digest()[:8], "big") for key in keys}
    assert copied == [key for key in keys if tops[key] < 2**64 * 30 // 100]
    assert abs(len(copied) - 300) <= binomial_bound(1000, 0.3), len(copied)
    assert len(copied) == 301  # pinned: a different hash or salt would change which entities are copied


def test_raising_a_shadows_percent_only_adds_keys():
    keys = [f"entity-{i}" for i in range(10_000)]
    at_10, at_50 = ({key for key in keys if route.copying(key, no_draw)}
                    for route in (Router(Routing("1.0.0", shadow={"s": p})) for p in (10, 50)))
    assert at_10 < at_50
    assert abs(len(at_10) - 1000) <= binomial_bound(10_000, 0.1), len(at_10)
    assert abs(len(at_50) - 5000) <= binomial_bound(10_000, 0.5), len(at_50)


def test_which_keys_a_shadow_copies_is_independent_of_the_version_that_answers_them():
    route = Router(Routing("1.0.0", {"1.1.0": 50}, {"1.2.0": 50}))
    keys = [f"entity-{i}" for i in range(10_000)]
    combinations = {}
    for key in keys:
        pair = (route.choose(None, key), route.copying(key, no_draw))
        combinations[pair] = combinations.get(pair, 0) + 1
    assert set(combinations) == {(answers, copies) for answers in ("1.0.0", "1.1.0") for copies in ((), ("1.2.0",))}
    # each combination is binomial(10,000, 25%) if the two hashes are independent: 4.5 sd is 195 keys
    for pair, count in combinations.items():
        assert abs(count - 2500) <= binomial_bound(10_000, 0.25), (pair, count)


def test_two_shadows_on_a_share_copy_keys_independently():
    route = Router(Routing("1.0.0", shadow={"a": 50, "b": 50}))
    keys = [f"entity-{i}" for i in range(10_000)]
    copies = [route.copying(key, no_draw) for key in keys]
    for combination in ((), ("a",), ("b",), ("a", "b")):
        count = copies.count(combination)
        assert abs(count - 2500) <= binomial_bound(10_000, 0.25), (combination, count)
