"""Unit tests of the exporter: pure scenario transforms, the Collector, the command line."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from exporter import scenarios
from exporter.cli import build_parser
from exporter.collector import ReplayCollector
from exporter.replay import Replayer, ReplayConfig
from exporter.state import ReplayState
from tests.scrape import parse

RECORD = {"area": 1076.39, "lot_area": 10763.9, "total_bsmt_sf": None, "garage_area": 215.278, "garage_cars": 2,
          "overall_qual": 6, "overall_cond": 5, "year_built": 1979, "year_remod": 1998, "full_bath": 2,
          "bedrooms": 3, "fireplaces": 1, "neighborhood": "NWAmes", "ms_zoning": "RL", "bldg_type": "1Fam",
          "house_style": "1Story", "kitchen_qual": "TA", "central_air": "Y"}


def test_baseline_is_the_identity():
    assert scenarios.baseline(3, RECORD, 100.0) == (RECORD, 100.0)


def test_unit_change_sends_areas_in_square_metres():
    payload, actual = scenarios.unit_change(0, RECORD, 100.0)
    assert (payload["area"], payload["lot_area"], payload["garage_area"]) == (100.0, 1000.0, 20.0)
    assert payload["total_bsmt_sf"] is None  # unknown stays unknown
    assert payload["overall_qual"] == 6 and actual == 100.0
    assert RECORD["area"] == 1076.39  # pure: the input is untouched


def test_missing_nulls_the_chosen_fields():
    payload, _ = scenarios.missing(0, RECORD, 1.0)
    assert [k for k, v in payload.items() if v is None] == list(scenarios.MISSING_FEATURES)
    assert set(payload) == set(RECORD)


def test_new_category():
    payload, _ = scenarios.new_category(0, RECORD, 1.0)
    assert payload["neighborhood"] == "NewDevelopment" and RECORD["neighborhood"] == "NWAmes"


def test_price_shock_changes_only_the_actual():
    payload, actual = scenarios.price_shock(0, RECORD, 200_000.0)
    assert payload == RECORD and actual == pytest.approx(260_000.0)


def test_bad_requests_one_row_in_five_cycling_through_five_mistakes():
    outputs = [scenarios.bad_requests(i, RECORD, 1.0)[0] for i in range(50)]
    bad = [i for i, p in enumerate(outputs) if isinstance(p, bytes)]
    assert bad == list(range(0, 50, 5))
    assert all(outputs[i] == RECORD for i in range(50) if i not in bad)
    with pytest.raises(ValueError):
        json.loads(outputs[0])  # the first kind is not JSON at all
    kinds = [json.loads(outputs[i]) for i in bad[1:5]]
    assert kinds[0]["area"] == "1076.39"
    assert kinds[1]["area"] == -1076.39
    assert kinds[2]["colour"] == "blue"
    assert "year_built" not in kinds[3]


@settings(max_examples=200)
@given(index=st.integers(0, 10 ** 6), actual=st.floats(1, 1e7),
       area=st.one_of(st.none(), st.floats(0, 1e5)), name=st.sampled_from(sorted(scenarios.SCENARIOS)))
def test_every_scenario_is_pure_and_deterministic(index, actual, area, name):
    record = dict(RECORD, area=area if area is not None else 1.0)
    before = json.dumps(record, sort_keys=True)
    first = scenarios.SCENARIOS[name](index, record, actual)
    second = scenarios.SCENARIOS[name](index, record, actual)
    assert first == second
    assert json.dumps(record, sort_keys=True) == before
    payload, new_actual = first
    assert new_actual in (actual, actual * scenarios.PRICE_SHOCK)
    assert isinstance(payload, (dict, bytes))


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
    state.set(fault_active=True)
    s = scrape_collector(state)
    assert s.by("replay_rows_total", "outcome") == {"ok": 2, "invalid": 1, "http_error": 0, "connection_error": 0,
                                                    "bad_answer": 0}
    assert s.sum("replay_request_errors_total", kind="connection") == 1
    assert s.by("replay_feedback_total", "outcome") == {"ok": 2, "failed": 0, "dropped": 0}
    assert s.sum("replay_last_prediction_dollars") == 123456.5
    assert s.sum("replay_last_actual_dollars") == 130000.0
    assert s.sum("replay_progress_ratio") == 0.75
    assert s.sum("replay_rows_planned") == 4
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
    args = build_parser().parse_args([])
    assert (args.rate, args.batch_size, args.scenario, args.fault_from, args.loop, args.api_url) == \
        (None, 25, "price-shock", 100, True, "http://api:5000")
    assert build_parser().parse_args(["--rate", "5"]).rate == 5.0  # a flag beats the environment


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
