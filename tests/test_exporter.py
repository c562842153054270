"""Unit tests of the exporter: the generic CSV reader, the card, the scenarios on any card, the Collector,
the command line."""
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from exporter import scenarios
from exporter.card import CardError, check_card, read_card
from exporter.cli import build_parser
from exporter.collector import ReplayCollector
from exporter.replay import Replayer, ReplayConfig
from exporter.scenarios import ScenarioError
from exporter.source import SourceError, project_rows, read_table, table_rows
from exporter.state import ReplayState
from model.features import FEATURES
from tests.scrape import parse
from tests.servers import ROOT, free_port

# the example's features as its card lists them (model.train copies the feature spec, every one nullable)
AMES_FEATURES = [dict(f.to_dict(), nullable=True) for f in FEATURES]
RECORD = {"area": 1076.39, "lot_area": 10763.9, "total_bsmt_sf": None, "garage_area": 215.278, "garage_cars": 2,
          "overall_qual": 6, "overall_cond": 5, "year_built": 1979, "year_remod": 1998, "full_bath": 2,
          "bedrooms": 3, "fireplaces": 1, "neighborhood": "NWAmes", "ms_zoning": "RL", "bldg_type": "1Fam",
          "house_style": "1Story", "kitchen_qual": "TA", "central_air": "Y"}

# a made-up model with every kind of feature: two lengths in cm (one whole), a mass, a bounded score,
# an unbounded number, a required (non-nullable) count, two categoricals and a boolean
SYNTHETIC = [
    {"name": "required_count", "kind": "numeric", "integer": True, "minimum": 0, "nullable": False},
    {"name": "width", "kind": "numeric", "unit": "cm", "minimum": 0, "maximum": 500},
    {"name": "mass", "kind": "numeric", "unit": "kg", "minimum": 0},
    {"name": "height", "kind": "numeric", "unit": "cm", "integer": True, "minimum": 0, "maximum": 300},
    {"name": "score", "kind": "numeric", "maximum": 10},
    {"name": "drift", "kind": "numeric"},
    {"name": "colour", "kind": "categorical", "categories": ["red", "unseen-category"]},
    {"name": "shape", "kind": "categorical", "categories": ["round", "square"]},
    {"name": "is_new", "kind": "boolean"},
]
SYNTHETIC_RECORD = {"required_count": 3, "width": 123.0, "mass": 70.5, "height": 180, "score": 7.5, "drift": -2.25,
                    "colour": "red", "shape": None, "is_new": True}


def build(name, features=SYNTHETIC, chosen=None, factor=scenarios.UNIT_CHANGE_FACTOR, **kwargs):
    return scenarios.build(name, features, chosen, factor, **kwargs)


# -- scenarios ------------------------------------------------------------------------------------

def test_scale_multiplies_the_first_numeric_feature_keeping_integers_integer_and_nulls_null():
    scale = build("scale", scenario_factor=1.1)
    assert scale.features == ("required_count",) and scale.description == "required_count multiplied by 1.1"
    assert scale(0, SYNTHETIC_RECORD, 1.0)[0] == dict(SYNTHETIC_RECORD, required_count=3)  # round(3.3)
    wide = build("scale", chosen=("width", "height"))
    assert wide(0, SYNTHETIC_RECORD, 1.0)[0] == dict(SYNTHETIC_RECORD, width=135.3, height=198)  # default 1.1
    assert wide(0, dict(SYNTHETIC_RECORD, width=None), 1.0)[0]["width"] is None
    with pytest.raises(scenarios.ScenarioError, match="not 1, got 1"):
        build("scale", scenario_factor=1.0)
    with pytest.raises(scenarios.ScenarioError, match="'colour' is categorical"):
        build("scale", chosen=("colour",))


def test_stretch_tail_multiplies_only_values_at_or_above_the_cards_top_decile_edge():
    reference = {"width": {"edges": [50.0, 100.0, 150.0]}}
    stretch = build("stretch-tail", chosen=("width",), reference=reference)
    assert stretch.description == "width >= 150 multiplied by 1.5"
    assert stretch(0, dict(SYNTHETIC_RECORD, width=149.5), 1.0)[0]["width"] == 149.5
    assert stretch(0, dict(SYNTHETIC_RECORD, width=150.0), 1.0)[0]["width"] == 225.0
    assert build("stretch-tail", chosen=("width",), reference=reference, scenario_factor=2)(
        0, dict(SYNTHETIC_RECORD, width=300.0), 1.0)[0]["width"] == 600.0
    with pytest.raises(scenarios.ScenarioError, match="no decile edges for 'width'"):
        build("stretch-tail", chosen=("width",))
    with pytest.raises(scenarios.ScenarioError, match="stretches the top decile: more than 1, got 0.5"):
        build("stretch-tail", chosen=("width",), reference=reference, scenario_factor=0.5)


def test_baseline_is_the_identity_and_changes_no_feature():
    assert build("baseline")(3, RECORD, 100.0) == (RECORD, 100.0)
    with pytest.raises(ScenarioError, match="^--scenario-features: baseline changes no feature$"):
        build("baseline", chosen=("width",))


def test_unit_change_on_the_example_divides_the_features_of_its_most_common_unit():
    scenario = build("unit-change", AMES_FEATURES)
    # ft2 (4 features) over year (2): dividing years would only give refused requests, not drift
    assert scenario.features == ("area", "lot_area", "total_bsmt_sf", "garage_area")
    payload, actual = scenario(0, RECORD, 100.0)
    assert (payload["area"], payload["lot_area"], payload["garage_area"]) == (100.0, 1000.0, 20.0)
    assert payload["total_bsmt_sf"] is None  # unknown stays unknown
    assert {k: v for k, v in payload.items() if k not in scenario.features} == \
        {k: v for k, v in RECORD.items() if k not in scenario.features}
    assert actual == 100.0 and RECORD["area"] == 1076.39  # pure: the input is untouched


def test_unit_change_on_any_card_keeps_whole_features_whole_and_six_significant_digits():
    scenario = build("unit-change", factor=2.54)
    assert scenario.features == ("width", "height")  # cm twice, kg once
    payload, _ = scenario(0, SYNTHETIC_RECORD, 1.0)
    assert payload["width"] == 48.4252 == float(f"{123.0 / 2.54:.6g}")
    assert payload["height"] == 71 and type(payload["height"]) is int  # 70.87 rounded: an integer feature
    assert payload["mass"] == 70.5 and scenario.description == "width, height divided by 2.54"


def test_unit_change_of_chosen_features_and_without_units():
    payload, _ = build("unit-change", chosen=("mass", "drift"), factor=10)(0, SYNTHETIC_RECORD, 1.0)
    assert (payload["mass"], payload["drift"], payload["width"]) == (7.05, -0.225, 123.0)
    no_units = [dict(f, unit=None) for f in SYNTHETIC]
    assert build("unit-change", no_units).features == ("required_count",)  # the first numeric feature


@pytest.mark.parametrize("scenario,chosen,message", [
    ("unit-change", ("shape",), "--scenario-features: unit-change changes numeric features; 'shape' is categorical"),
    ("unit-change", ("is_new",), "--scenario-features: unit-change changes numeric features; 'is_new' is boolean"),
    ("unit-change", ("width", "depth"), "--scenario-features: the model has no feature 'depth' (its features: "
                                        "required_count, width, mass, height, score, drift, colour, shape, is_new)"),
    ("missing", ("required_count",), "--scenario-features: missing sends null; 'required_count' is not nullable "
                                     "(the API refuses null for it)"),
    ("new-category", ("width",), "--scenario-features: new-category changes categorical features; 'width' is numeric"),
    ("target-shock", ("width",), "--scenario-features: target-shock changes no feature"),
    ("price-shock", ("width",), "--scenario-features: price-shock changes no feature"),
    ("bad-requests", ("colour",), "--scenario-features: bad-requests changes one numeric feature; 'colour' is "
                                  "categorical"),
    ("bad-requests", ("width", "mass"), "--scenario-features: bad-requests changes one numeric feature, not 2"),
])
def test_a_scenario_asked_to_change_what_it_cannot_is_refused_in_one_line(scenario, chosen, message):
    with pytest.raises(ScenarioError) as info:
        build(scenario, chosen=chosen)
    assert str(info.value) == message


@pytest.mark.parametrize("scenario,message", [
    ("unit-change", "unit-change changes numeric features; the model has none"),
    ("bad-requests", "bad-requests needs a numeric feature; the model has none"),
    ("new-category", "new-category changes categorical features; the model has none that takes new categories"),
])
def test_a_scenario_without_a_feature_to_change_on_this_card_is_refused(scenario, message):
    only = [f for f in SYNTHETIC if f["kind"] == "boolean"] if scenario != "new-category" else SYNTHETIC[:6]
    with pytest.raises(ScenarioError) as info:
        build(scenario, only)
    assert str(info.value) == message
    with pytest.raises(ScenarioError, match="^no scenario 'earthquake'; one of baseline, unit-change"):
        build("earthquake")


def test_missing_nulls_the_first_nullable_features_half_of_them_at_most_four():
    scenario = build("missing")
    assert scenario.features == ("width", "mass", "height", "score")  # required_count is not nullable
    payload, _ = scenario(0, SYNTHETIC_RECORD, 1.0)
    assert [k for k, v in payload.items() if v is None] == ["width", "mass", "height", "score", "shape"]
    assert list(payload) == list(SYNTHETIC_RECORD)  # sent but empty: an absent key is bad-requests' business
    assert build("missing", SYNTHETIC[1:4]).features == ("width", "mass")  # half of 3, rounded up
    assert build("missing", AMES_FEATURES).features == ("area", "lot_area", "total_bsmt_sf", "garage_area")
    payload, _ = build("missing", chosen=("shape", "is_new"))(0, SYNTHETIC_RECORD, 1.0)
    assert payload == dict(SYNTHETIC_RECORD, is_new=None)


def test_new_category_leaves_closed_features_alone():
    """A closed feature refuses unlisted categories with a 400: new-category would be bad-requests there."""
    colour, shape = ({"name": "colour", "kind": "categorical", "categories": ["red"], "closed": True},
                     {"name": "shape", "kind": "categorical", "categories": ["round"]})
    assert build("new-category", [colour, shape]).features == ("shape",)
    with pytest.raises(ScenarioError, match=r"^--scenario-features: new-category changes categorical features; "
                                            r"'colour' is closed \(the API refuses"):
        build("new-category", [colour, shape], chosen=("colour",))
    with pytest.raises(ScenarioError, match="the model has none that takes new categories"):
        build("new-category", [colour])


def test_new_category_sends_a_category_the_card_does_not_list():
    scenario = build("new-category")
    assert scenario.features == ("colour",)
    payload, _ = scenario(0, SYNTHETIC_RECORD, 1.0)
    assert payload == dict(SYNTHETIC_RECORD, colour="unseen-category-2")  # the card knows "unseen-category"
    payload, _ = build("new-category", chosen=("shape", "colour"))(0, SYNTHETIC_RECORD, 1.0)
    assert (payload["shape"], payload["colour"]) == ("unseen-category", "unseen-category-2")
    ames, _ = build("new-category", AMES_FEATURES)(0, RECORD, 1.0)
    assert ames == dict(RECORD, neighborhood="unseen-category") and RECORD["neighborhood"] == "NWAmes"


@pytest.mark.parametrize("name", ["target-shock", "price-shock"])
def test_target_shock_changes_only_the_actual(name):
    payload, actual = build(name, AMES_FEATURES)(0, RECORD, 200_000.0)
    assert payload == RECORD and actual == pytest.approx(260_000.0)
    assert build(name).features == ()


def test_bad_requests_one_row_in_five_cycling_through_five_mistakes_on_the_example():
    scenario = build("bad-requests", AMES_FEATURES)
    outputs = [scenario(i, RECORD, 1.0)[0] for i in range(50)]
    bad = [i for i, p in enumerate(outputs) if isinstance(p, bytes)]
    assert bad == list(range(0, 50, 5))
    assert all(outputs[i] == RECORD for i in range(50) if i not in bad)
    with pytest.raises(ValueError):
        json.loads(outputs[0])  # the first kind is not JSON at all
    kinds = [json.loads(outputs[i]) for i in bad[1:5]]
    assert kinds[0] == dict(RECORD, area="1076.39")
    assert kinds[1] == dict(RECORD, area=-1076.39)  # the minimum, 0, less the value
    assert kinds[2] == dict(RECORD, colour="blue")
    assert kinds[3] == {k: v for k, v in RECORD.items() if k != "area"}
    assert outputs[25] == outputs[0] and outputs[30] == outputs[5]  # the kinds cycle


def test_bad_requests_out_of_bounds_follows_the_card_and_the_unknown_field_is_unknown():
    record = dict(SYNTHETIC_RECORD, width=None)
    out_of_bounds = {name: json.loads(build("bad-requests", chosen=(name,))(10, record, 1.0)[0])[name]
                     for name in ("width", "score", "drift", "required_count")}
    assert out_of_bounds == {"width": -1, "score": 17.5, "drift": math.inf, "required_count": -3}
    assert b'"drift": 1e999' in build("bad-requests", chosen=("drift",))(10, record, 1.0)[0]
    unknown = json.loads(build("bad-requests")(15, record, 1.0)[0])
    assert unknown == dict(record, colour_="blue")  # "colour" is a feature of this model
    assert json.loads(build("bad-requests")(5, record, 1.0)[0])["required_count"] == "3"
    assert build("bad-requests").features == ("required_count",)  # the first numeric feature with a minimum
    assert build("bad-requests", [SYNTHETIC[5], SYNTHETIC[4]]).features == ("drift",)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 10 ** 6), actual=st.floats(1, 1e7),
       area=st.one_of(st.none(), st.floats(0, 1e5)), width=st.one_of(st.none(), st.floats(0, 500)),
       name=st.sampled_from(scenarios.SCENARIOS + tuple(scenarios.ALIASES)))
def test_every_scenario_is_pure_and_deterministic_on_both_cards(index, actual, area, width, name):
    for features, record in ((AMES_FEATURES, dict(RECORD, area=area)), (SYNTHETIC, dict(SYNTHETIC_RECORD,
                                                                                          width=width))):
        before = json.dumps(record, sort_keys=True)
        reference = {f["name"]: {"edges": [10.0, 1000.0]} for f in features if f["kind"] == "numeric"}
        first = build(name, features, reference=reference)(index, record, actual)
        assert first == build(name, features, reference=reference)(index, record, actual)
        assert json.dumps(record, sort_keys=True) == before
        payload, new_actual = first
        assert new_actual == (actual * scenarios.TARGET_SHOCK if "shock" in name else actual)
        assert isinstance(payload, dict if name != "bad-requests" or index % 5 else bytes)
        if isinstance(payload, dict):
            assert set(payload) == set(record)


def reason_refused(schema, payload):
    """The reason the API's validator gives for `payload` (bytes or a record), or None if it accepts it."""
    from webapp.errors import ApiError
    from webapp.jsonbody import loads_strict

    try:
        schema.parse_predict(loads_strict(payload if isinstance(payload, bytes) else json.dumps(payload).encode()))
    except ApiError as exc:
        return exc.reason
    return None


def test_on_the_served_card_drift_scenarios_stay_valid_and_each_bad_request_is_refused_for_its_reason(card, replay):
    """The scenarios built from the example's real card, checked by the API's own validator: a drift scenario
    must reach the model (and the drift metrics); each kind of bad request must be refused, for its reason."""
    from webapp.validation import RecordSchema

    schema = RecordSchema(card["features"], max_batch=8, max_details=5)
    records = [r for r, _ in replay[:50]]
    for name in ("baseline", "unit-change", "missing", "new-category", "target-shock"):
        scenario = build(name, card["features"])
        assert [reason_refused(schema, scenario(i, r, 1.0)[0]) for i, r in enumerate(records)] == [None] * 50, name
    new = build("new-category", card["features"])
    assert new.features == ("neighborhood",)
    assert new(0, records[0], 1.0)[0]["neighborhood"] not in next(
        f["categories"] for f in card["features"] if f["name"] == "neighborhood")  # really never seen
    bad = build("bad-requests", card["features"])
    reasons = [reason_refused(schema, bad(i, records[i], 1.0)[0]) for i in range(0, 50, 5)]
    assert reasons == ["malformed_json", "wrong_type", "out_of_bounds", "unknown_field", "missing_field"] * 2
    assert [reason_refused(schema, bad(i, records[i], 1.0)[0]) for i in range(50) if i % 5] == [None] * 40


def test_the_replay_builds_its_scenario_from_the_card_and_refuses_one_it_cannot_run():
    state = ReplayState(rows_per_pass=1, planned_rows=1, scenario="unit-change")
    config = ReplayConfig(scenario="unit-change", features=tuple(SYNTHETIC), scenario_features=("mass",),
                          unit_factor=10, fault_from=1)
    rep = Replayer(config, rows=[(SYNTHETIC_RECORD, 1.0)], state=state)
    assert rep._apply_scenario(0, SYNTHETIC_RECORD, 1.0) == (0, SYNTHETIC_RECORD, 1.0)  # before the fault row
    assert rep._apply_scenario(1, SYNTHETIC_RECORD, 1.0) == (1, dict(SYNTHETIC_RECORD, mass=7.05), 1.0)
    with pytest.raises(ScenarioError):
        Replayer(ReplayConfig(scenario="new-category", features=tuple(SYNTHETIC[:3])), rows=[({}, 1.0)], state=state)


# -- the generic CSV reader -------------------------------------------------------------------------

CARD_FEATURES = [
    {"name": "n", "kind": "numeric"},
    {"name": "c", "kind": "categorical"},
    {"name": "b", "kind": "boolean"},
]


def write_csv(tmp_path, text, name="rows.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_each_kind_becomes_its_json_type_and_empty_cells_null(tmp_path):
    path = write_csv(tmp_path, "extra,b,c,n,y\n"
                               "x,True,007,3.0,10\n"
                               "x,false,a b,2.5,11.5\n"
                               "x,1,,-0,12\n"
                               "x,0,NA,,13\n"
                               "x,,z,1e15,14\n"
                               "x,TRUE,z,9007199254740993,15\n")
    rows, skipped = table_rows(read_table(path), CARD_FEATURES, "y")
    assert skipped == 0
    assert rows == [({"n": 3, "c": "007", "b": True}, 10.0),
                    ({"n": 2.5, "c": "a b", "b": False}, 11.5),
                    ({"n": 0, "c": None, "b": True}, 12.0),
                    ({"n": None, "c": None, "b": False}, 13.0),  # "NA" is missing, as pandas.read_csv reads it
                    ({"n": 10 ** 15, "c": "z", "b": None}, 14.0),
                    ({"n": 9007199254740992.0, "c": "z", "b": True}, 15.0)]  # from 2**53: a float (the 3 is lost)
    assert [type(r["n"]) for r, _ in rows] == [int, float, int, type(None), int, float]
    assert list(rows[0][0]) == ["n", "c", "b"]  # the card's order; the extra column is ignored


def test_rows_whose_target_is_not_a_finite_number_are_skipped_and_counted(tmp_path):
    path = write_csv(tmp_path, "n,c,b,y\n1,a,1,5\n2,a,1,\n3,a,1,inf\n4,a,1,-inf\n5,a,1,abc\n6,a,1,NaN\n7,a,1,-2.5\n")
    rows, skipped = table_rows(read_table(path), CARD_FEATURES, "y")
    assert [(r["n"], y) for r, y in rows] == [(1, 5.0), (7, -2.5)]
    assert skipped == 5


def test_order_by_sorts_stably_numbers_by_value_text_as_text_and_empty_last(tmp_path):
    path = write_csv(tmp_path, "day,seq,n,c,b,y\n"
                               "2024-01-02,10,1,a,1,1\n"
                               "2024-01-01,9,2,a,1,2\n"
                               ",1,3,a,1,3\n"
                               "2024-01-01,10,4,a,1,4\n"
                               "2024-01-02,9,5,a,1,5\n")

    def order(*columns):
        return [r["n"] for r, _ in table_rows(read_table(path, order_by=columns), CARD_FEATURES, "y")[0]]

    assert order() == [1, 2, 3, 4, 5]  # as in the file
    assert order("seq") == [3, 2, 5, 1, 4]  # 9 before 10: numbers, not text; ties keep the file's order
    assert order("day") == [2, 4, 1, 5, 3]  # the empty day last
    assert order("day", "seq") == [2, 4, 5, 1, 3]


@pytest.mark.parametrize("text,target,order_by,message", [
    ("n,c,y\n1,a,2\n", "y", (), "rows.csv has no column 'b', a feature of the model; its columns: n, c, y"),
    ("y,z\n1,2\n", "y", (), "rows.csv has no column 'n', a feature of the model (nor 2 more); its columns: y, z"),
    ("n,c,b\n1,a,1\n", None, (), "rows.csv has no column 'y', the model's target: name the column of actual "
                                  "values with --target; its columns: n, c, b"),
    ("n,c,b,y\n1,a,1,2\n", "price", (), "rows.csv has no column 'price' (--target); its columns: n, c, b, y"),
    ("n,c,b,y\n1,a,1,2\n", "y", ("day",), "rows.csv has no column 'day' (--order-by); its columns: n, c, b, y"),
    ("n,c,b,y\n1,a,1,2\nten,a,1,2\n", "y", (),
     "rows.csv: column 'n', row 2 after the header, holds 'ten', not a number (the card says numeric)"),
    ("n,c,b,y\n1,a,1,2\n1,a,1,2\n-inf,a,1,2\n", "y", (),
     "rows.csv: column 'n', row 3 after the header, holds '-inf', not a finite number (JSON has no infinity)"),
    ("n,c,b,y\n1,a,yes,2\n", "y", (),
     "rows.csv: column 'b', row 1 after the header, holds 'yes', not a boolean (True/False/true/false/1/0)"),
])
def test_a_csv_that_does_not_fit_the_card_is_refused_in_one_line(tmp_path, text, target, order_by, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(SourceError) as info:
        table = read_table(path, target if target != "y" else None, order_by)
        table_rows(table, CARD_FEATURES, target or "y")
    assert str(info.value) == str(tmp_path) + "/" + message


def test_a_missing_or_unreadable_csv_is_refused(tmp_path):
    with pytest.raises(SourceError, match=r"^CSV .*/absent\.csv not found$"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(SourceError, match=r"^CSV .*/empty\.csv is unreadable: No columns to parse from file$"):
        read_table(write_csv(tmp_path, "", "empty.csv"))


def test_the_example_rows_are_cut_to_the_card_and_those_without_an_actual_skipped():
    rows = [(dict(RECORD), 100.0), (dict(RECORD, area=5.0), math.nan), (dict(RECORD, area=6.0), 200.0)]
    kept, skipped = project_rows(rows, [AMES_FEATURES[12], AMES_FEATURES[0]], "the example")
    assert kept == [({"neighborhood": "NWAmes", "area": 1076.39}, 100.0), ({"neighborhood": "NWAmes", "area": 6.0},
                                                                           200.0)]
    assert skipped == 1
    with pytest.raises(SourceError, match="^the example has no field 'depth', a feature of the model: give its "
                                          "rows with --csv$"):
        project_rows(rows, [{"name": "depth", "kind": "numeric"}], "the example")


# -- the card --------------------------------------------------------------------------------------

@pytest.mark.parametrize("card,message", [
    ([], "x.json is not a model card: not a JSON object"),
    ({"name": "m"}, "x.json is not a model card: no list of features"),
    ({"features": []}, "x.json is not a model card: no list of features"),
    ({"features": [{"kind": "numeric"}]}, "x.json: feature 0 has no name"),
    ({"features": [{"name": "a", "kind": "text"}]}, "x.json: feature 'a' has the kind 'text', not one of numeric, "
                                                    "categorical, boolean"),
    ({"features": [{"name": "a", "kind": "numeric"}, {"name": "a", "kind": "boolean"}]},
     "x.json: feature 'a' is listed twice"),
])
def test_a_card_without_usable_features_is_refused(card, message):
    with pytest.raises(CardError) as info:
        check_card(card, "x.json")
    assert str(info.value) == message


def test_a_card_file_is_read_or_refused(tmp_path):
    path = tmp_path / "card.json"
    path.write_text(json.dumps({"features": SYNTHETIC, "target": {"name": "y"}}))
    assert read_card(path)["features"] == SYNTHETIC
    path.write_text("{not json")
    with pytest.raises(CardError, match=r"^.*/card\.json is not a model card: not JSON$"):
        read_card(path)
    with pytest.raises(CardError, match=r"^cannot read the card .*/absent\.json: No such file or directory$"):
        read_card(tmp_path / "absent.json")


def run_exporter(*args, timeout=60):
    """`python -m exporter` that must exit by itself: (exit status, stderr)."""
    done = subprocess.run([sys.executable, "-m", "exporter", "--port", str(free_port()), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def test_refusals_at_start_are_one_line_and_exit_status_1_before_anything_listens(tmp_path):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"features": CARD_FEATURES, "target": {"name": "y"}}))
    csv = write_csv(tmp_path, "n,c,y\n1,a,2\n")
    # --api-url on a closed port: a refusal never waits for the API
    common = ("--api-url", "http://127.0.0.1:9", "--card", card)
    assert run_exporter(*common, "--csv", csv) == (1, f"exporter: {csv} has no column 'b', a feature of the "
                                                      "model; its columns: n, c, y\n")
    csv.write_text("n,c,b,y\n1,a,1,\n")
    assert run_exporter(*common, "--csv", csv) == (1, f"exporter: {csv} has no rows to replay (1 without a "
                                                      "finite actual value)\n")
    assert run_exporter(*common, "--csv", csv, "--scenario", "new-category", "--scenario-features", "n") == \
        (1, "exporter: --scenario-features: new-category changes categorical features; 'n' is numeric\n")
    assert run_exporter(*common, "--target", "y") == \
        (1, "exporter: --target names a column of --csv; without --csv the rows are the example's replay set\n")
    assert run_exporter(*common, "--csv", csv, "--all-rows") == \
        (1, "exporter: --all-rows is for the example's replay set; with --csv every row is replayed "
            "(--order-by sorts them)\n")


def scrape_collector(state):
    registry = CollectorRegistry()
    registry.register(ReplayCollector(state))
    return parse(generate_latest(registry).decode())


def test_collector_exposes_the_state():
    state = ReplayState(rows_per_pass=10, planned_rows=4, scenario="unit-change", fault_from=2)
    state.rows_finished("ok", 2)
    state.rows_finished("invalid")
    state.request_error("connection")
    state.feedback_finished("ok", 2)
    state.exchanged(123456.5, 130000.0)
    state.latency(0.004)
    state.latency(0.2)
    state.set(fault_active=True, skipped_rows=3)
    s = scrape_collector(state)
    assert s.by("replay_rows_total", "outcome") == {"ok": 2, "invalid": 1, "http_error": 0, "connection_error": 0,
                                                    "bad_answer": 0}
    assert s.sum("replay_request_errors_total", kind="connection") == 1
    assert s.by("replay_feedback_total", "outcome") == {"ok": 2, "failed": 0, "dropped": 0}
    assert s.sum("replay_last_prediction") == 123456.5
    assert s.sum("replay_last_actual") == 130000.0
    assert s.series("replay_last_prediction_dollars") == s.series("replay_last_actual_dollars") == 0
    assert s.sum("replay_progress_ratio") == 0.75
    assert s.sum("replay_rows_planned") == 4
    assert s.sum("replay_rows_skipped") == 3
    assert s.sum("replay_scenario_info", scenario="unit-change", active="true", fault_from="2") == 1
    assert s.sum("replay_request_duration_seconds_count") == 2
    assert s.sum("replay_request_duration_seconds_bucket", le="0.005") == 1
    assert s.sum("replay_request_duration_seconds_bucket", le="+Inf") == 2
    assert s.sum("replay_request_duration_seconds_sum") == pytest.approx(0.204)


def test_collector_exposes_both_queues_with_their_bounds_and_the_sender_utilisation():
    state = ReplayState(rows_per_pass=10, planned_rows=4, scenario="baseline")
    Replayer(ReplayConfig(queue_size=50, feedback_queue_size=70), rows=[({}, 1.0)], state=state)
    state.set(queue_depth=50, feedback_queue_depth=3)
    state.sender_busy(1.5)
    state.sender_busy(0.25)
    s = scrape_collector(state)
    assert (s.sum("replay_queue_depth"), s.sum("replay_queue_capacity")) == (50, 50)
    assert (s.sum("replay_feedback_queue_depth"), s.sum("replay_feedback_queue_capacity")) == (3, 70)
    assert s.sum("replay_sender_busy_seconds_total") == 1.75


def test_progress_of_an_endless_loop_is_the_position_in_the_pass():
    state = ReplayState(rows_per_pass=10, planned_rows=None, scenario="baseline")
    state.rows_finished("ok", 23)
    s = scrape_collector(state)
    assert s.sum("replay_progress_ratio") == pytest.approx(0.3)
    assert s.sum("replay_rows_planned") == 0


def test_collect_reads_state_only(monkeypatch):
    """A scrape must not reach the network: collect() with every socket call made to fail."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("collect() tried to use the network")

    state = ReplayState(rows_per_pass=1, planned_rows=1, scenario="baseline")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    scrape_collector(state)


@pytest.mark.parametrize("argv,message", [
    (["--rate", "0"], "must be a positive number"),
    (["--rate", "fast"], "must be a positive number of rows/s or 'max', got 'fast'"),
    (["--port", "http"], "must be a whole number, got 'http'"),
    (["--batch-size", "0"], "must be at least 1"),
    (["--limit", "-3"], "must be at least 1"),
    (["--scenario", "earthquake"], "invalid choice"),
    (["--fault-from", "1", "--fault-after", "2"], "not allowed with argument"),
    (["--fault-after", "-1"], "must be 0 or more"),
    (["--feedback-queue", "0"], "must be at least 1"),
    (["--timeout", "0"], "must be more than 0 seconds"),
    (["--unit-factor", "0"], "argument --unit-factor: must be a positive finite number, got 0"),
    (["--unit-factor", "inf"], "argument --unit-factor: must be a positive finite number, got inf"),
    (["--scenario", "price_shock"], "invalid choice: 'price_shock'"),
])
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_environment_value_is_refused_like_a_flag(monkeypatch, capsys):
    monkeypatch.setenv("EXPORTER_BATCH_SIZE", "lots")
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "argument --batch-size: must be a whole number, got 'lots'" in capsys.readouterr().err


def test_flags_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("EXPORTER_RATE", "max")
    monkeypatch.setenv("EXPORTER_BATCH_SIZE", "25")
    monkeypatch.setenv("EXPORTER_SCENARIO", "price-shock")
    monkeypatch.setenv("EXPORTER_FAULT_FROM", "100")
    monkeypatch.setenv("EXPORTER_LOOP", "true")
    monkeypatch.setenv("EXPORTER_API_URL", "http://api:5000")
    monkeypatch.setenv("EXPORTER_CSV", "rows.csv")
    monkeypatch.setenv("EXPORTER_CARD", "card.json")
    monkeypatch.setenv("EXPORTER_TARGET", "rate")
    monkeypatch.setenv("EXPORTER_ORDER_BY", "day, seq")
    monkeypatch.setenv("EXPORTER_SCENARIO_FEATURES", "width,mass,")
    monkeypatch.setenv("EXPORTER_UNIT_FACTOR", "2.54")
    args = build_parser().parse_args([])
    assert (args.rate, args.batch_size, args.scenario, args.fault_from, args.loop, args.api_url) == \
        (None, 25, "price-shock", 100, True, "http://api:5000")
    assert (args.csv, args.card, args.target, args.order_by, args.scenario_features, args.unit_factor) == \
        ("rows.csv", "card.json", "rate", ("day", "seq"), ("width", "mass"), 2.54)
    assert build_parser().parse_args(["--rate", "5"]).rate == 5.0  # a flag beats the environment
    assert build_parser().parse_args(["--order-by", "x"]).order_by == ("x",)


def test_without_flags_or_environment_the_example_replays_with_the_cards_defaults():
    args = build_parser().parse_args([])
    assert (args.csv, args.card, args.target, args.order_by, args.scenario_features, args.unit_factor) == \
        (None, None, None, None, None, scenarios.UNIT_CHANGE_FACTOR)


def test_the_feedback_queue_bound_from_a_flag_or_the_environment(monkeypatch):
    assert build_parser().parse_args([]).feedback_queue == 10_000
    monkeypatch.setenv("EXPORTER_FEEDBACK_QUEUE", "250")
    assert build_parser().parse_args([]).feedback_queue == 250
    assert build_parser().parse_args(["--feedback-queue", "7"]).feedback_queue == 7


def test_progress_bar_in_a_terminal_and_log_lines_otherwise(capsys, caplog):
    import logging
    import time as _time

    from exporter.progress import Progress, summary

    state = ReplayState(rows_per_pass=10, planned_rows=10, scenario="baseline")
    state.rows_finished("ok", 4)
    state.rows_finished("invalid", 1)
    bar = Progress(state, tty=True).start()
    _time.sleep(0.7)
    bar.stop()
    err = capsys.readouterr().err
    assert "5/10" in err and "invalid=1" in err  # tqdm's bar with its postfix

    with caplog.at_level(logging.INFO, logger="exporter"):
        lines = Progress(state, interval=0.1, tty=False).start()
        _time.sleep(0.35)
        lines.stop()
    assert any("replayed 5/10 (50%) rows" in r.getMessage() for r in caplog.records)
    assert "5 rows sent in" in summary(state) and "ok 4, invalid 1" in summary(state)


def test_feedback_of_the_last_row_is_sent_when_the_sender_finishes_during_a_wait(monkeypatch):
    """The race: the feedback thread's get() times out, meanwhile the sender queues its last
    pair and finishes. The thread must still send that pair before it leaves."""
    import queue

    state = ReplayState(rows_per_pass=1, planned_rows=1, scenario="baseline", fault_from=None)
    rep = Replayer(ReplayConfig(), rows=[({}, 1.0)], state=state)
    real_get, posted = rep.feedback_queue.get, []

    def get_that_times_out_first(block=True, timeout=None):
        if block and not posted and not getattr(get_that_times_out_first, "raced", False):
            get_that_times_out_first.raced = True
            rep.feedback_queue.put((150_000.0, 160_000.0))  # the sender's last pair ...
            rep._sender_done.set()  # ... and it is done, all while this get() was waiting
            raise queue.Empty
        return real_get(block=block, timeout=timeout)

    monkeypatch.setattr(rep.feedback_queue, "get", get_that_times_out_first)
    monkeypatch.setattr(rep, "_post_with_retry", lambda http, path, body: posted.append(json.loads(body)) or (None, "ok"))
    rep._feedback()
    assert posted == [[{"prediction": 150_000.0, "actual": 160_000.0}]]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10)


@settings(max_examples=300)
@given(value=JSON_VALUES, batch=st.booleans())
def test_an_answer_gives_finite_floats_or_bad_answer_and_nothing_else(value, batch):
    from exporter.answer import BadAnswer, predictions

    body = json.dumps({"predictions": value} if batch else {"prediction": value}).encode()
    try:
        values = predictions(body, 1, batch)
    except BadAnswer:
        return
    number = value[0] if batch else value
    assert values == [float(number)] and values[0] == values[0] and abs(values[0]) != float("inf")
    assert not isinstance(number, bool)


@settings(max_examples=300)
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_as_an_answer_give_predictions_or_bad_answer(body):
    from exporter.answer import BadAnswer, predictions

    try:
        predictions(body, 1, False)
    except BadAnswer:
        pass


def test_the_answer_cap_is_1_mib_or_1_kib_a_row():
    from exporter.answer import answer_cap

    assert answer_cap(1) == answer_cap(1024) == 1024 * 1024
    assert answer_cap(5000) == 5000 * 1024


def test_a_drop_or_bad_answer_line_at_once_then_at_most_one_per_interval():
    from exporter.throttle import EveryFewSeconds

    clock = [100.0]
    every = EveryFewSeconds(interval=10.0, clock=lambda: clock[0])
    assert every.due() == 1  # the first event is reported at once
    assert [every.due() for _ in range(5)] == [0] * 5
    clock[0] += 9.9
    assert every.due(3) == 0
    clock[0] += 0.1
    assert every.due() == 9  # everything since the last line, this one included
    assert every.due() == 0


def test_the_summary_line_parses_back_into_its_counts():
    """The benches read the exporter's last line back (exporter.progress.parse_summary): producer and parser agree."""
    from exporter.progress import parse_summary, summary
    state = ReplayState(rows_per_pass=10, planned_rows=10, scenario="baseline")
    state.rows_finished("ok", 7)
    state.rows_finished("bad_answer", 2)
    state.rows_finished("connection_error")
    state.feedback_finished("ok", 6)
    state.feedback_finished("dropped", 1)
    state.request_error("timeout")
    parsed = parse_summary("exporter: replay finished; " + summary(state))
    assert {k: v for k, v in parsed.items() if k not in ("seconds", "rate", "line")} == {
        "sent": 10, "ok": 7, "invalid": 0, "http_error": 0, "connection_error": 1, "feedback_ok": 6,
        "feedback_failed": 0, "failed_attempts": 1, "bad_answer": 2, "feedback_dropped": 1}
