"""The exporter replaying a classifier: the card's classes, CSV cells read as classes, the answers it believes,
the feedback it posts, label-shift and concept-drift, the refusals; then the real exporter against a fake
classifier API that checks every feedback pair, and against the real webapp serving a LogisticRegression,
whose confusion counter must equal the confusion matrix computed offline."""
import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from exporter import scenarios
from exporter.answer import BadAnswer, classifications
from exporter.card import CardError, check_card
from exporter.classifier import Classifier, classifier_of
from exporter.replay import Replayer, ReplayConfig, _END
from exporter.scenarios import ScenarioError, ScenarioTaskError
from exporter.source import class_rows, read_table
from exporter.state import ReplayState
from model.classes import ClassIndex, label_text
from tests.fake_api import FakeApi
from tests.scrape import scrape
from tests.servers import ROOT, Exporter, free_port, gunicorn

FEATURES = [
    {"name": "x", "kind": "numeric", "minimum": 0, "maximum": 1},
    {"name": "colour", "kind": "categorical", "categories": ["red", "blue"]},
    {"name": "n", "kind": "numeric", "unit": "cm", "integer": True, "minimum": 0},
]


def classifier_card(classes=(0, 1), positive=1, probabilities=True, fractions=None, features=FEATURES):
    target = {"name": "label", "unit": "", "classes": list(classes), "probabilities": probabilities}
    if positive is not None:
        target["positive_class"] = positive
    card = {"name": "toy", "version": "1", "task": "classification", "features": features, "target": target}
    if fractions is not None:
        card["reference"] = {"actual": {"kind": "categorical", "bins": [label_text(c) for c in classes],
                                        "fractions": list(fractions)}}
    return card


BINARY = classifier_of(classifier_card(fractions=[0.7, 0.3]))
ANIMALS = classifier_of(classifier_card(("cat", "dog", "NA", "None"), positive=None, probabilities=False,
                                        fractions=[0.5, 0.1, 0.3, 0.1]))


def point(index: int, salt: bytes) -> float:
    """The scenarios' share point, written out again from its definition: blake2b of the decimal index."""
    digest = hashlib.blake2b(str(index).encode(), digest_size=8, person=salt).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


# -- the card ------------------------------------------------------------------------------------

def test_a_classifiers_card_gives_its_classes_positive_class_and_reference_shares():
    assert BINARY == Classifier((0, 1), 1, True, (0.7, 0.3))
    assert (BINARY.score_key, BINARY.kind) == ("1", "integer")
    booleans = classifier_of(classifier_card((False, True), positive=True))
    assert (booleans.score_key, booleans.kind, booleans.reference) == ("true", "boolean", None)
    assert classifier_of(classifier_card(probabilities=False)).score_key is None  # no probabilities: no score
    assert ANIMALS.score_key is None and ANIMALS.reference == (0.5, 0.1, 0.3, 0.1)
    regressor = {"features": FEATURES, "target": {"name": "y"}}
    assert classifier_of(regressor) is None and classifier_of(dict(regressor, task="regression")) is None


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(task="ranking"), "card.json: the task 'ranking' is not one the replay follows (regression, "
                                         "classification)"),
    (lambda c: c["target"].pop("classes"), "card.json: a classifier's card must list its classes (target.classes)"),
    (lambda c: c["target"].update(classes=[0]), "card.json: target.classes: the model knows 1 class; a classifier "
                                                "needs at least 2"),
    (lambda c: c["target"].update(classes=[0, "1"]), "card.json: target.classes: the model's classes mix integer "
                                                     "and string labels"),
    (lambda c: c["target"].update(classes=[0.5, 1.5]), "card.json: target.classes: class label 0.5 is a float; "
                                                       "labels must be strings, integers or booleans (cast the target "
                                                       "before fitting)"),
    (lambda c: c["target"].update(positive_class="1"), "card.json: target.positive_class '1' is not one of "
                                                       "target.classes"),
])
def test_a_classifiers_card_whose_classes_cannot_be_followed_is_refused(change, message):
    card = classifier_card()
    change(card)
    with pytest.raises(CardError) as info:
        check_card(card, "card.json")
    assert str(info.value) == message


@pytest.mark.parametrize("classifier,cells", [
    (BINARY, {"1": 1, "0": 0, " 1 ": 1, "1.0": 1, "+1": 1, "-0": 0, "2": None, "true": None, "1.5": None,
              "1_0": None, "": None, "one": None}),
    (classifier_of(classifier_card((False, True), positive=True)),
     {"true": True, "True": True, "TRUE": True, " false ": False, "1": True, "0.0": False, "yes": None, "": None}),
    (ANIMALS, {"cat": "cat", "NA": "NA", "None": "None", " cat": None, "Cat": None, "": None, "1": None}),
])
def test_a_csv_cell_is_read_as_the_cards_class_type_or_as_no_class(classifier, cells):
    got = {cell: classifier.parse(cell) for cell in cells}
    assert got == cells
    assert all(v is None or ClassIndex(classifier.classes).find(v) is not None for v in got.values())
    assert [type(v) for v in got.values() if v is not None] == \
        [type(classifier.classes[0])] * sum(v is not None for v in got.values())  # 1, never "1" or True


# -- CSV rows ------------------------------------------------------------------------------------

def write(tmp_path, text, name="rows.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_class_rows_keep_the_rows_whose_target_is_a_class_and_count_the_others_apart(tmp_path):
    path = write(tmp_path, "x,colour,n,label\n"
                           "0.1,red,1,1\n"
                           "0.2,blue,2,0\n"
                           "0.3,red,3,\n"  # empty: no actual value
                           "0.4,red,4,2\n"  # a number, but no class of the model
                           "0.5,red,5,maybe\n"
                           "0.6,,6,1.0\n"  # pandas writes 1.0 in a column of integers with gaps
                           "0.7,red,7,NA\n")  # read as missing, like an empty cell
    rows, no_actual, unknown = class_rows(read_table(path), FEATURES, "label", BINARY)
    assert rows == [({"x": 0.1, "colour": "red", "n": 1}, 1), ({"x": 0.2, "colour": "blue", "n": 2}, 0),
                    ({"x": 0.6, "colour": None, "n": 6}, 1)]
    assert [type(label) for _, label in rows] == [int, int, int]
    assert (no_actual, unknown) == (2, 2)


def test_string_classes_are_the_cells_as_written_even_words_pandas_reads_as_missing(tmp_path):
    """"NA" and "None" are classes of this model: read as written, in the order --order-by gives the rows."""
    path = write(tmp_path, "seq,x,colour,n,label\n"
                           "3,0.3,red,3,NA\n"
                           "1,0.1,red,1,None\n"
                           "4,0.4,red,4,\n"
                           "2,0.2,red,2,cat\n"
                           "5,0.5,red,5,n/a\n"  # missing to pandas, and no class: no actual value
                           "6,0.6,red,6,bird\n")
    rows, no_actual, unknown = class_rows(read_table(path, order_by=("seq",)), FEATURES, "label", ANIMALS)
    assert [(r["x"], label) for r, label in rows] == [(0.1, "None"), (0.2, "cat"), (0.3, "NA")]
    assert (no_actual, unknown) == (2, 1)


# -- answers -------------------------------------------------------------------------------------

def single(label, probabilities=None):
    answer = {"model_version": "1", "request_id": "r", "prediction": label}
    if probabilities is not None:
        answer["probabilities"] = probabilities
    return json.dumps(answer).encode()


def test_a_classifiers_answers_give_class_positions_and_the_positive_class_probability():
    assert classifications(single(1, {"0": 0.25, "1": 0.75}), 1, False, BINARY) == [(1, 0.75)]
    batch = json.dumps({"predictions": [{"prediction": 0, "probabilities": {"0": 0.9, "1": 0.1}},
                                        {"prediction": 1, "probabilities": {"0": 0.0, "1": 1}}]}).encode()
    assert classifications(batch, 2, True, BINARY) == [(0, 0.1), (1, 1.0)]
    assert classifications(single("NA"), 1, False, ANIMALS) == [(2, None)]  # no probabilities: no score
    booleans = classifier_of(classifier_card((False, True), positive=True))
    assert classifications(single(False, {"false": 0.6, "true": 0.4}), 1, False, booleans) == [(0, 0.4)]


@pytest.mark.parametrize("body,batch", [
    (single("1", {"0": 0.2, "1": 0.8}), False),  # the text of a class, not the class
    (single(1.0, {"0": 0.2, "1": 0.8}), False),
    (single(True, {"0": 0.2, "1": 0.8}), False),  # True is not 1
    (single(2, {"0": 0.2, "1": 0.8}), False),
    (single(None, {"0": 0.2, "1": 0.8}), False),
    (single(1), False),  # a binary model with probabilities owes the score
    (single(1, {"0": 0.2}), False),
    (single(1, {"0": -0.2, "1": 1.2}), False),
    (single(1, {"0": 0.2, "1": "0.8"}), False),
    (single(1, {"0": 0.2, "1": True}), False),
    (b'{"prediction": 1, "probabilities": {"0": 0.2, "1": NaN}}', False),
    (b'{"prediction": 1, "probabilities": [0.2, 0.8]}', False),
    (b'{"predictions": [1, 0]}', True),  # a regressor's batch shape
    (b'{"predictions": [{"prediction": 1, "probabilities": {"1": 0.8}}]}', True),  # one for two rows
    (b'{"prediction": 1, "probabilities": {"1": 0.8}}', True),
])
def test_an_answer_without_a_class_and_its_score_per_row_is_a_bad_answer(body, batch):
    with pytest.raises(BadAnswer):
        classifications(body, 2 if batch else 1, batch, BINARY)


# -- scenarios -----------------------------------------------------------------------------------

def test_concept_drift_flips_exactly_the_rows_whose_index_hashes_below_the_share():
    drift = scenarios.build("concept-drift", FEATURES, classifier=BINARY, scenario_factor=0.3)
    record = {"x": 0.5, "colour": "red", "n": 2}
    actuals = [i % 2 for i in range(1000)]
    out = [drift(i, record, a) for i, a in enumerate(actuals)]
    flipped = [i for i, ((payload, new), old) in enumerate(zip(out, actuals)) if new != old]
    assert flipped == [i for i in range(1000) if point(i, b"concept-drift") < 0.3]
    assert len(flipped) == 296  # 0.3 of 1000, as a hash gives it
    assert all(payload is record for payload, _ in out)
    assert all(out[i][1] == 1 - actuals[i] and type(out[i][1]) is int for i in flipped)  # the other class
    assert scenarios.build("concept-drift", FEATURES, classifier=BINARY).description == \
        "the actual class of a share 0.3 of the rows flipped to the other class"
    every = scenarios.build("concept-drift", FEATURES, classifier=BINARY, scenario_factor=1)
    assert [every(i, record, 0)[1] for i in range(20)] == [1] * 20


def test_concept_drift_of_a_multiclass_model_moves_each_flipped_class_to_the_next():
    drift = scenarios.build("concept-drift", FEATURES, classifier=ANIMALS, scenario_factor=0.5)
    labels = ["cat", "dog", "NA", "None"]
    moved = {}
    for i in range(400):
        old = labels[i % 4]
        new = drift(i, {}, old)[1]
        if new != old:
            moved.setdefault(old, set()).add(new)
    assert moved == {"cat": {"dog"}, "dog": {"NA"}, "NA": {"None"}, "None": {"cat"}}  # the last to the first
    assert sum(1 for i in range(400) if drift(i, {}, labels[i % 4])[1] != labels[i % 4]) == \
        sum(1 for i in range(400) if point(i, b"concept-drift") < 0.5)


def test_label_shift_sends_the_chosen_class_factor_times_and_a_fractional_factor_to_its_share():
    shift = scenarios.build("label-shift", FEATURES, classifier=BINARY, scenario_factor=2.5)
    assert shift.description == "rows of class 1 replayed 2.5 times as often"  # binary: the positive class
    assert [shift.copies(i, 0) for i in range(100)] == [1] * 100
    assert [shift.copies(i, 1) for i in range(1000)] == [3 if point(i, b"label-shift") < 0.5 else 2
                                                         for i in range(1000)]
    triple = scenarios.build("label-shift", FEATURES, classifier=BINARY)
    assert {triple.copies(i, 1) for i in range(200)} == {3}  # the default factor, whole: no hash
    assert triple(7, {"x": 1}, 1) == ({"x": 1}, 1)  # the rows themselves go out unchanged


def test_label_shift_picks_the_positive_class_else_the_rarest_else_the_one_named():
    def chosen(classifier, name=None):
        return scenarios.build("label-shift", FEATURES, classifier=classifier, scenario_class=name).description

    assert chosen(BINARY) == "rows of class 1 replayed 3 times as often"
    assert chosen(BINARY, "0") == "rows of class 0 replayed 3 times as often"
    assert chosen(ANIMALS) == "rows of class dog replayed 3 times as often"  # 0.1, before "None"'s 0.1
    assert chosen(ANIMALS, "None") == "rows of class None replayed 3 times as often"
    no_positive = classifier_of(classifier_card(positive=None, fractions=[0.25, 0.75]))
    assert chosen(no_positive) == "rows of class 0 replayed 3 times as often"
    with pytest.raises(ScenarioError) as info:
        chosen(classifier_of(classifier_card(("a", "b", "c"), positive=None)))
    assert str(info.value) == ("label-shift needs a class: the card has no reference shares of the classes to find "
                               "the rarest; give --scenario-class")
    with pytest.raises(ScenarioError) as info:
        chosen(BINARY, "2")
    assert str(info.value) == "--scenario-class: '2' is not a class of the model (its classes: 0, 1)"


REGRESSOR_SCENARIOS = "baseline, unit-change, missing, new-category, scale, stretch-tail, target-shock, bad-requests"
CLASSIFIER_SCENARIOS = ("baseline, unit-change, missing, new-category, scale, stretch-tail, bad-requests, label-shift, "
                        "concept-drift")
TAKE_FACTOR = "(scale, stretch-tail, label-shift, concept-drift do)"


@pytest.mark.parametrize("name,classifier,kwargs,message", [
    ("label-shift", None, {}, "label-shift is a scenario for classifiers; this model is a regressor (its scenarios: "
                              f"{REGRESSOR_SCENARIOS})"),
    ("concept-drift", None, {}, "concept-drift is a scenario for classifiers; this model is a regressor (its "
                                f"scenarios: {REGRESSOR_SCENARIOS})"),
    ("target-shock", BINARY, {}, "target-shock changes a regressor's actual values; this model is a classifier (its "
                                 f"scenarios: {CLASSIFIER_SCENARIOS})"),
    ("price-shock", BINARY, {}, "price-shock changes a regressor's actual values; this model is a classifier (its "
                                f"scenarios: {CLASSIFIER_SCENARIOS})"),
])
def test_a_scenario_of_the_other_task_is_refused_in_one_line(name, classifier, kwargs, message):
    with pytest.raises(ScenarioTaskError) as info:
        scenarios.build(name, FEATURES, classifier=classifier, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("name,kwargs,message", [
    ("label-shift", {"scenario_factor": 1.0}, "--factor: label-shift replays a class's rows --factor times as often: "
                                              "more than 1 and at most 100, got 1"),
    ("label-shift", {"scenario_factor": 101}, "--factor: label-shift replays a class's rows --factor times as often: "
                                              "more than 1 and at most 100, got 101"),
    ("concept-drift", {"scenario_factor": 1.5}, "--factor: concept-drift flips the actual class of a share of the "
                                                "rows: more than 0 and at most 1, got 1.5"),
    ("concept-drift", {"scenario_class": "1"}, "--scenario-class: concept-drift chooses no class (label-shift does)"),
    ("unit-change", {"scenario_class": "1"}, "--scenario-class: unit-change chooses no class (label-shift does)"),
    ("unit-change", {"scenario_factor": 2.0}, f"--factor: unit-change takes none {TAKE_FACTOR}; "
                                              "unit-change divides by --unit-factor"),
    ("baseline", {"scenario_factor": 2.0}, f"--factor: baseline takes none {TAKE_FACTOR}"),
    ("label-shift", {"chosen": ("x",)}, "--scenario-features: label-shift changes no feature (--scenario-class "
                                        "chooses its class)"),
    ("concept-drift", {"chosen": ("x",)}, "--scenario-features: concept-drift changes no feature"),
])
def test_a_classifier_scenario_asked_what_it_does_not_take_is_refused(name, kwargs, message):
    with pytest.raises(ScenarioError) as info:
        scenarios.build(name, FEATURES, kwargs.pop("chosen", None), classifier=BINARY, **kwargs)
    assert str(info.value) == message and not isinstance(info.value, ScenarioTaskError)


def test_the_feature_scenarios_work_on_a_classifiers_card_as_on_a_regressors():
    record = {"x": 0.25, "colour": "red", "n": 254}
    reference = {"x": {"edges": [0.1, 0.2]}}
    for name in ("baseline", "unit-change", "missing", "new-category", "scale", "stretch-tail", "bad-requests"):
        for_classifier = scenarios.build(name, FEATURES, classifier=BINARY, reference=reference)
        for_regressor = scenarios.build(name, FEATURES, reference=reference)
        assert for_classifier.features == for_regressor.features, name
        for i in range(10):
            assert for_classifier(i, record, 1) == (for_regressor(i, record, 1.0)[0], 1), name
    assert scenarios.build("unit-change", FEATURES, classifier=BINARY)(0, record, 0)[0]["n"] == 24  # cm / 10.7639


# -- the replay ----------------------------------------------------------------------------------

def sent(rows, scenario="label-shift", **config):
    """Every row the sender would send, as (index, payload, actual), and the replay state: the reader's
    thread fills the queue, the sender's _take empties it."""
    state = ReplayState(rows_per_pass=len(rows), planned_rows=len(rows), scenario=scenario,
                        fault_from=config.get("fault_from"))
    replayer = Replayer(ReplayConfig(scenario=scenario, features=tuple(FEATURES), classifier=BINARY,
                                     queue_size=7, **config), rows, state)
    replayer._started = time.monotonic()
    reader = threading.Thread(target=replayer._read, daemon=True)
    reader.start()
    out = []
    while True:
        try:
            item = replayer._take(1.0)
        except queue.Empty:
            continue
        if item is _END:
            break
        out.append(item)
    replayer._sender_done.set()
    reader.join(5)
    assert not reader.is_alive()
    return out, state


RECORDS = [({"x": i / 100, "colour": "red", "n": i}, 1 if i % 3 == 0 else 0) for i in range(100)]


def test_label_shift_sends_copies_as_rows_of_their_own_from_the_fault_row_and_plans_them():
    out, state = sent(RECORDS, fault_from=30, scenario_factor=2.5)
    copies = [1] * 30
    index = 30
    for _, actual in RECORDS[30:]:
        n = 1 if actual == 0 else (3 if point(index, b"label-shift") < 0.5 else 2)
        copies.append(n)
        index += n
    assert [i for i, _, _ in out] == list(range(sum(copies)))  # every copy has an index of its own
    expected = [(r, a) for (r, a), n in zip(RECORDS, copies) for _ in range(n)]
    assert [(payload, actual) for _, payload, actual in out] == expected
    assert state.planned_rows == sum(copies) and state.fault_active  # known from the fault row on
    positives = sum(1 for _, _, a in out[30:] if a == 1)
    assert positives == sum(n for n, (_, a) in zip(copies[30:], RECORDS[30:]) if a == 1) > 2 * 23


def test_label_shift_stops_at_the_limit_counted_in_rows_sent():
    out, state = sent(RECORDS, limit=40, fault_from=0)
    assert len(out) == 40 and [i for i, _, _ in out] == list(range(40))
    assert state.planned_rows == 40
    assert out[:4] == [(0, RECORDS[0][0], 1), (1, RECORDS[0][0], 1), (2, RECORDS[0][0], 1), (3, RECORDS[1][0], 0)]


def test_concept_drift_in_the_replay_flips_from_the_fault_row_on():
    out, _ = sent(RECORDS, scenario="concept-drift", fault_from=50)
    assert [i for i, _, _ in out] == list(range(100))
    flipped = [i for i, _, actual in out if actual != RECORDS[i][1]]
    assert flipped == [i for i in range(50, 100) if point(i, b"concept-drift") < 0.3]


def test_feedback_pairs_carry_the_score_only_when_there_is_one(monkeypatch):
    state = ReplayState(rows_per_pass=1, planned_rows=1, scenario="baseline")
    replayer = Replayer(ReplayConfig(classifier=BINARY), rows=[({}, 1)], state=state)
    posted = []
    monkeypatch.setattr(replayer, "_post_with_retry", lambda client, path, body: posted.append(json.loads(body))
                        or (None, "ok"))
    replayer._queue_feedback(1, 0, 0.75)
    replayer._queue_feedback("cat", "dog")
    replayer._sender_done.set()
    replayer._feedback()
    assert posted == [[{"prediction": 1, "actual": 0, "score": 0.75}, {"prediction": "cat", "actual": "dog"}]]


# -- the command line, against a fake classifier API ---------------------------------------------------

class FakeClassifierApi(FakeApi):
    """GET /model, POST /predict and POST /feedback as the contract has them for a classifier. /predict answers
    class 1 when x >= 0.5, with probability x (or `answer(record)`); /feedback refuses what the API would (a
    label of another type or no class, a score outside [0, 1] or where none belongs) and keeps every pair it
    accepts, in order."""

    def __init__(self, card, answer=None):
        self.classifier = classifier_of(card)
        self.answer = answer or self.threshold
        self.pairs, self.refused, self.predicted = [], [], 0
        self.lock = threading.Lock()
        super().__init__(card)

    def predict(self, headers, body):
        records = body["instances"] if "instances" in body else [body]
        answers = [self.answer(r) for r in records]
        with self.lock:
            self.predicted += len(records)
        return 200, {"predictions": answers} if "instances" in body else answers[0]

    def feedback(self, body):
        problem = self.check(body)
        with self.lock:
            if problem:
                self.refused.append(problem)
            else:
                self.pairs.extend(body)
        return (400, {"error": problem}) if problem else (202, {"accepted": len(body)})

    def threshold(self, record):
        p = record["x"]
        texts = self.classifier.texts
        return {"prediction": self.classifier.classes[int(p >= 0.5)], "probabilities": {texts[0]: 1 - p, texts[1]: p}}

    def check(self, pairs):
        scored = self.classifier.score_key is not None
        for i, pair in enumerate(pairs):
            for field in ("prediction", "actual"):
                if self.classifier.position(pair.get(field)) is None:
                    return f"[{i}].{field} is not a class of this model: {pair.get(field)!r}"
            if scored != ("score" in pair) or scored and not 0 <= pair["score"] <= 1:
                return f"[{i}].score {pair.get('score')!r}"
        return None


@pytest.fixture
def fake_api():
    servers = []

    def start(card, answer=None):
        servers.append(FakeClassifierApi(card, answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def replay_csv(tmp_path, rows=200):
    """A CSV of `rows` rows for the toy card (columns in another order, an extra one), its label column "truth"
    holding 0 or 1, and in every 25th row "" and every 40th "2" (no class); and the (record, label) pairs that
    should be replayed, read back independently."""
    table = []
    for i in range(rows):
        x = round((i * 0.618) % 1, 3)
        label = "" if i % 25 == 7 else "2" if i % 40 == 11 else str(int((i * 7) % 10 < 4))
        table.append({"note": f"row {i}", "truth": label, "n": i, "colour": ("red", "blue", "green")[i % 3], "x": x})
    path = tmp_path / "rows.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    kept = [({"x": r["x"], "colour": r["colour"], "n": r["n"]}, int(r["truth"])) for r in table
            if r["truth"] in ("0", "1")]
    return path, kept


def expected_pairs(kept, actuals=None):
    """The pairs the fake should get for these rows: its threshold's prediction, the label, x as the score."""
    actuals = [a for _, a in kept] if actuals is None else actuals
    return [{"prediction": int(r["x"] >= 0.5), "actual": a, "score": r["x"]} for (r, _), a in zip(kept, actuals)]


def until_feedback(exporter, api, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        state = scrape(exporter.metrics_url)
        if state.sum("replay_done") == 1 and len(api.pairs) + len(api.refused) >= n:
            return state
        assert time.monotonic() < deadline, (len(api.pairs), api.refused)
        time.sleep(0.05)


def card_file(tmp_path, card):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    return path


def test_the_replay_posts_each_rows_class_prediction_and_score_and_skips_rows_without_a_class(fake_api, tmp_path):
    api = fake_api(classifier_card(fractions=[0.6, 0.4]))
    csv, kept = replay_csv(tmp_path)
    assert len(kept) == 200 - 8 - 5  # 8 empty cells, 5 "2"
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "truth", "--batch-size", "7", "--linger")
    try:
        state = until_feedback(exporter, api, len(kept))
    finally:
        out = exporter.stop()
    assert api.refused == [] and api.pairs == expected_pairs(kept)  # in order, every pair exactly
    assert api.predicted == len(kept)
    assert state.by("replay_rows_skipped", "reason") == {"no_actual": 8, "unknown_class": 5}
    assert (state.sum("replay_rows_planned"), state.sum("replay_rows_total", outcome="ok")) == (len(kept), len(kept))
    last_record, last_label = kept[-1]
    assert state.sum("replay_last_prediction") == int(last_record["x"] >= 0.5)  # class positions
    assert state.sum("replay_last_actual") == last_label
    assert (f"skipped 13 of 200 rows of {csv}: their actual value (truth) is empty (8) or no class of the model "
            "(5; its classes: 0, 1)") in out
    assert f"ok {len(kept)}, invalid 0, http_error 0, connection_error 0; feedback {len(kept)} ok" in out


def test_concept_drift_through_the_command_line_flips_exactly_the_expected_actuals(fake_api, tmp_path):
    api = fake_api(classifier_card(fractions=[0.6, 0.4]))
    csv, kept = replay_csv(tmp_path)
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "truth", "--scenario", "concept-drift",
                        "--factor", "0.4", "--fault-from", "60", "--linger")
    try:
        until_feedback(exporter, api, len(kept))
    finally:
        out = exporter.stop()
    actuals = [1 - a if i >= 60 and point(i, b"concept-drift") < 0.4 else a for i, (_, a) in enumerate(kept)]
    assert api.refused == [] and api.pairs == expected_pairs(kept, actuals)
    flipped = sum(a != b for a, b in zip(actuals, (a for _, a in kept)))
    assert flipped == sum(1 for i in range(60, len(kept)) if point(i, b"concept-drift") < 0.4) > 30
    assert "scenario concept-drift (the actual class of a share 0.4 of the rows flipped to the other class)" in out


def test_label_shift_through_the_command_line_replays_the_class_more_often(fake_api, tmp_path):
    api = fake_api(classifier_card(fractions=[0.6, 0.4]))
    csv, kept = replay_csv(tmp_path)
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "truth", "--scenario", "label-shift",
                        "--scenario-class", "0", "--factor", "2", "--fault-from", "100", "--linger")
    expected = [pair for i, (record, label) in enumerate(kept)
                for pair in expected_pairs([(record, label)]) * (2 if i >= 100 and label == 0 else 1)]
    try:
        state = until_feedback(exporter, api, len(expected))
    finally:
        exporter.stop()
    assert api.refused == [] and api.pairs == expected
    assert state.sum("replay_rows_planned") == state.sum("replay_rows_total", outcome="ok") == len(expected)
    zeros_after = sum(1 for _, label in kept[100:] if label == 0)
    assert Counter(p["actual"] for p in api.pairs) == Counter(
        {0: sum(1 for _, a in kept if a == 0) + zeros_after, 1: sum(1 for _, a in kept if a == 1)})


@pytest.mark.parametrize("name,answer", [
    ("a label of another type", lambda r: {"prediction": "1", "probabilities": {"0": 0.5, "1": 0.5}}),
    ("no class of the model", lambda r: {"prediction": 2, "probabilities": {"0": 0.5, "1": 0.5}}),
    ("no probabilities", lambda r: {"prediction": 1}),
    ("a regressor's answer", lambda r: 0.5),
])
def test_an_answer_with_no_class_of_the_model_is_a_bad_answer_and_gets_no_feedback(fake_api, tmp_path, name,
                                                                                     answer):
    api = fake_api(classifier_card(), answer)
    csv, _ = replay_csv(tmp_path, rows=30)
    exporter = Exporter(api.url, "--rate", "max", "--csv", csv, "--target", "truth", "--limit", "20",
                        "--batch-size", "5" if name == "a regressor's answer" else "1", "--linger")
    try:
        deadline = time.monotonic() + 30
        while scrape(exporter.metrics_url).sum("replay_done") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        state = scrape(exporter.metrics_url)
    finally:
        out = exporter.stop()
    assert {k: v for k, v in state.by("replay_rows_total", "outcome").items() if v} == {"bad_answer": 20}
    assert api.pairs == [] and api.refused == []
    assert "Traceback" not in out


def run_exporter(*args, timeout=60):
    done = subprocess.run([sys.executable, "-m", "exporter", "--port", str(free_port()), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def test_refusals_at_start_for_a_classifier(tmp_path):
    classifier = card_file(tmp_path, classifier_card(fractions=[0.6, 0.4]))
    csv, _ = replay_csv(tmp_path, rows=30)
    common = ("--api-url", "http://127.0.0.1:9", "--csv", csv, "--target", "truth")
    assert run_exporter(*common, "--card", classifier, "--scenario", "target-shock") == (
        1, "exporter: target-shock changes a regressor's actual values; this model is a classifier (its scenarios: "
           f"{CLASSIFIER_SCENARIOS})\n")
    regressor = tmp_path / "regressor.json"
    regressor.write_text(json.dumps({"features": FEATURES, "target": {"name": "truth"}}))
    assert run_exporter(*common, "--card", regressor, "--scenario", "label-shift") == (
        1, "exporter: label-shift is a scenario for classifiers; this model is a regressor (its scenarios: "
           "baseline, unit-change, missing, new-category, scale, stretch-tail, target-shock, bad-requests)\n")
    assert run_exporter(*common, "--card", classifier, "--scenario", "label-shift", "--scenario-class", "yes") == (
        1, "exporter: --scenario-class: 'yes' is not a class of the model (its classes: 0, 1)\n")
    assert run_exporter("--api-url", "http://127.0.0.1:9", "--card", classifier) == (
        1, "exporter: the model is a classifier; the example's replay set holds house prices, not its classes: give "
           "its rows with --csv\n")
    nothing = write(tmp_path, "x,colour,n,truth\n0.5,red,1,\n0.5,red,2,maybe\n0.5,red,3,7\n", "nothing.csv")
    assert run_exporter("--api-url", "http://127.0.0.1:9", "--card", classifier, "--csv", nothing, "--target",
                        "truth") == (1, f"exporter: {nothing} has no rows to replay (1 without an actual class, 2 "
                                        "whose actual value is no class of the model (its classes: 0, 1))\n")


def test_scenario_class_and_factor_from_flags_or_the_environment(monkeypatch):
    from exporter.cli import build_parser

    args = build_parser().parse_args([])
    assert (args.scenario_class, args.factor) == (None, None)
    monkeypatch.setenv("EXPORTER_SCENARIO", "label-shift")
    monkeypatch.setenv("EXPORTER_SCENARIO_CLASS", "spam")
    monkeypatch.setenv("EXPORTER_FACTOR", "2.5")
    args = build_parser().parse_args([])
    assert (args.scenario, args.scenario_class, args.factor) == ("label-shift", "spam", 2.5)
    assert build_parser().parse_args(["--scenario", "concept-drift", "--factor", "0.2"]).factor == 0.2


# -- the real webapp serving a LogisticRegression ------------------------------------------------------

def toy_frame(rows: int, seed: int) -> pd.DataFrame:
    """Numeric and categorical features, the label 0/1 from a noisy linear rule (so the model errs sometimes)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "amount": np.round(rng.gamma(2.0, 50.0, rows), 2),
        "items": rng.integers(1, 12, rows),
        "channel": rng.choice(["web", "store", "phone"], rows, p=[0.5, 0.3, 0.2]),
    })
    logit = 0.02 * (frame["amount"] - 100) + 0.2 * (frame["items"] - 6) + frame["channel"].map(
        {"web": 0.8, "store": -0.5, "phone": 0.0}) + rng.normal(0, 1.0, rows)
    frame["churned"] = (logit > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def served_classifier(tmp_path_factory):
    """(model folder, pipeline, replay CSV): a LogisticRegression onboarded with model.onboard's own functions."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from model import onboard

    reference, replay = toy_frame(600, 1), toy_frame(400, 2)
    features = ["amount", "items", "channel"]
    pipeline = Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), ["amount", "items"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["channel"])])),
        ("model", LogisticRegression(max_iter=1000)),
    ]).fit(reference[features], reference["churned"])
    try:
        card = onboard.build_card(pipeline, reference, "churned", name="toy-churn", version="1.0.0", holdout=replay)
    except onboard.OnboardingError as exc:
        if "only regressors" not in str(exc):  # the refusal of an onboarding without classifiers
            raise
        pytest.skip(f"model.onboard cannot onboard a classifier yet ({exc}); this test runs once it can")
    work = tmp_path_factory.mktemp("classifier")
    onboard.write_model(work / "model", pipeline, card)
    csv = work / "replay.csv"
    replay.to_csv(csv, index=False)
    return work / "model", pipeline, csv


def confusion(actual, predicted) -> dict:
    """{(actual text, predicted text): count} over every pair of classes, zeros included."""
    counts = Counter(zip(map(label_text, actual), map(label_text, predicted)))
    return {(a, p): counts[(a, p)] for a in ("0", "1") for p in ("0", "1")}


def test_the_real_apis_confusion_counter_equals_the_offline_confusion_matrix(served_classifier):
    model_dir, pipeline, csv = served_classifier
    frame = pd.read_csv(csv)
    predicted = [int(v) for v in pipeline.predict(frame[["amount", "items", "channel"]])]
    actual = frame["churned"].astype(int).tolist()
    drifted = [1 - a if i >= 150 and point(i, b"concept-drift") < 0.3 else a for i, a in enumerate(actual)]
    assert 0 < sum(p != a for p, a in zip(predicted, actual)) < len(actual) / 2  # the model errs, but not mostly
    with gunicorn(model_dir, workers=2) as api:
        card = requests_json(api.url + "/model")
        assert (card["task"], card["target"]["classes"], card["target"]["positive_class"]) == \
            ("classification", [0, 1], 1)
        before = scrape(api.metrics_url)
        out = Exporter(api.url, "--rate", "max", "--csv", csv, "--batch-size", "9").wait()
        assert "400 rows sent in" in out and "ok 400, invalid 0" in out and "feedback 400 ok, 0 failed" in out, out
        middle = scrape(api.metrics_url)
        out = Exporter(api.url, "--rate", "max", "--csv", csv, "--scenario", "concept-drift",
                       "--fault-from", "150").wait()
        assert "ok 400, invalid 0" in out and "feedback 400 ok, 0 failed" in out, out
        after = scrape(api.metrics_url)

    def matrix(delta):
        got = {}
        for (name, labels), value in delta.items():
            if name == "model_confusion_total":
                key = (dict(labels)["actual"], dict(labels)["predicted"])
                got[key] = got.get(key, 0) + value
        return got

    baseline, drift = middle.minus(before), after.minus(middle)
    assert matrix(baseline) == confusion(actual, predicted)
    assert matrix(drift) == confusion(drifted, predicted)
    assert drifted != actual
    # each pair carried its score: the feedback score histogram counts the pairs of each actual class
    assert baseline.by("model_feedback_score_count", "actual") == {
        "0": actual.count(0), "1": actual.count(1)}
    assert baseline.sum("model_predictions_total") == baseline.sum("model_feedback_total") == 400


def requests_json(url):
    import requests

    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.json()
