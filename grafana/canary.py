"""Model versions: each version of a deployment other than the primary (a candidate, or a shadow) against the
primary, on the signals CanaryWorse compares, with its limits (monitoring/config.py, canary_*).

Everything here reads the `versions` recording rules of monitoring/rules.py, which CanaryWorse reads too, and
draws CanaryWorse's limits where it compares: a difference (failed calls, accuracy) against its margin, a
ratio (p99 in the model, MAE) against its factor, the PSI of the version's predictions against the primary's
against its limit. The counts behind each comparison are drawn against the minimum the alert waits for.

A single model exports no model_version_role and its series carry no model_version: $version lists nothing,
and every query here returns nothing (the rules' `sum by (model_version)` of a single model's series is one
series without the label, which `model_version!=""` leaves out). The quality panels of one task are guarded
with `only()`, as the model dashboard's are: MAE for regressors, accuracy for classifiers.
"""
from grafana_foundation_sdk.builders import dashboard

from grafana.panels import (
    DATASOURCE, bars, graph, instant, label_variable, merged_table, model_variables, new_dashboard, only, query,
)
from monitoring import text
from monitoring.config import CONFIG as C
from monitoring.rules import PRIMARY, Names, answered, primary_value

UID = C.dashboards.canary
N = Names(C)
ALERT = "CanaryWorse"
SHORT, LONG = text.duration(C.short_window), text.duration(C.long_window)
Q = text.quantile_name(C.latency_quantile)
# the version chosen in $version. With no version listed (a single model) $version is empty, and
# model_version="" alone would match the rules' series of a single model, which carry no model_version
CHOSEN = 'model_version!="", model_version="$version"'
# the versions of a deployment, whatever their role: a single model exports no role, so nothing
VERSIONS = "(max by (model_version) (model_version_role) == 1)"
ROLES = "max by (model_version, role) (model_version_role == 1)"
FOR = text.duration(C.canary_for)
MIN_CALLS = f"with {C.canary_min_calls} calls each side in {SHORT}"


def chosen(rule: str) -> str:
    return f"{rule}{{{CHOSEN}}}"


def primary(rule: str) -> str:
    """The primary's series of a per-version rule, its model_version kept for the legend."""
    return f"{rule} and on (model_version) {PRIMARY}"


def against_primary(rule: str, op: str) -> str:
    """The chosen version's value of `rule` less (`-`) or over (`/`) the primary's, as CanaryWorse computes it."""
    return f"{chosen(rule)} {op} on () group_left {primary_value(rule)}"


def both(title: str, description: str, unit: str, rule: str, *, task: str | None = None, **options):
    """The primary's value of a per-version rule and the chosen version's, on one graph."""
    guard = (lambda expr: only(task, expr)) if task else (lambda expr: expr)
    return graph(title, description, unit, [query(guard(primary(rule)), "primary {{model_version}}"),
                                            query(guard(chosen(rule)), "{{model_version}}")], width=8, **options)


def table(expr: str):
    """An instant query in table form: the table and the bar chart merge theirs row by row on their labels."""
    return instant(expr, table=True)


def with_role(rule: str) -> str:
    """Every version's value of a per-version rule, with its role as a label (the table's rows)."""
    return f"{rule} * on (model_version) group_left (role) {ROLES}"


def alert_annotation() -> dashboard.AnnotationQuery:
    """CanaryWorse firing, for any version (grafana.build tags it with the version and the signal)."""
    return (dashboard.AnnotationQuery().name(ALERT).datasource(DATASOURCE).enable(True).icon_color("red")
            .expr(f'ALERTS{{alertstate="firing", alertname="{ALERT}"}}'))


def build() -> dashboard.Dashboard:
    board = (
        new_dashboard("Model versions: canary against the primary", UID, "A deployment of several versions "
                      "(README: Several versions): each version other than the primary, a candidate answering a "
                      "share of the requests or a shadow predicting a copy of them, against the primary on what "
                      f"{ALERT} compares, with its limits; and the counts each comparison waits for. Empty for a "
                      "single model.", "versions", since="now-1h")
        .with_variable(label_variable(
            "version", "Version", 'model_version_role{role!="primary"}', of="model_version", multi=False,
            description="The version compared with the primary: the candidates and shadows only, since every "
                        "panel draws the primary beside it, and the primary against itself is 0 or 1 everywhere"))
        .annotation(alert_annotation())
    )
    for variable in model_variables():
        board.with_variable(variable)

    board.with_row(dashboard.Row("Versions"))
    board.with_panel(merged_table(
        "Versions, roles and counts", "Every version of the deployment, its role (model_version_role: primary, "
        "candidate or shadow), the calls that reached its model and the rows it predicted over "
        f"{SHORT}, and the feedback pairs that name it over {LONG}. The candidates' weights are in routing.json "
        "(and /model's deployment), not in the metrics: the graph beside it has the share each version actually "
        "answered.", "short",
        [table(with_role(N.version_calls_increase)), table(with_role(N.version_rows_increase)),
         table(with_role(N.version_feedback_increase))],
        x_field="model_version", width=12, decimals=0,
        rename={"Value #A": f"calls, {text.last(C.short_window)}",
                "Value #B": f"rows, {text.last(C.short_window)}",
                "Value #C": f"feedback pairs, {text.last(C.long_window)}"}))
    calls = f"({answered(N.version_calls_increase)} and on (model_version) {VERSIONS})"
    board.with_panel(graph(
        "Share of the answered calls per version", f"Of the calls that reached a model over {SHORT} (answered, or "
        "failed there), the share each answering version took (shadows answer none: theirs are copies). It follows the weights of routing.json, moved by "
        "sticky routing keys and by requests that name a version (X-Model-Version).", "percentunit",
        [query(f"{calls}\n  / ignoring (model_version) group_left\nsum {calls}", "{{model_version}}")],
        stacked=True))

    board.with_row(dashboard.Row("$version against the primary"))
    board.with_panel(both(
        "Failed calls: primary and $version", f"Share of each version's calls over {SHORT} whose model raised on "
        "input the card accepts (reason unpredictable) or with an unexpected error (model_call_errors_total, "
        "answered 500): the version's own failures, which HTTP status counts do not tell apart.", "percentunit",
        N.version_failed_ratio))
    board.with_panel(graph(
        "Failed calls: $version minus primary", f"The chosen version's failed share of calls less the primary's, "
        f"over {SHORT}. {ALERT} (signal error_ratio) fires above {text.number(C.canary_error_margin)} (red) "
        f"{MIN_CALLS}, for {FOR}.", "percentunit",
        [query(against_primary(N.version_failed_ratio, "-"), "{{model_version}} - primary")], width=8,
        min_val=None, threshold=C.canary_error_margin))
    board.with_panel(graph(
        "Prediction PSI: $version against the primary", f"PSI of the chosen version's predictions over {SHORT} "
        "against the primary's live predictions in the same window, on the primary card's prediction bins (for "
        f"a classifier, its classes). {ALERT} (signal prediction_psi) fires above {text.number(C.canary_psi_limit)} "
        f"(red) with {C.drift_min_rows} rows each side, for {FOR}: a better model answers differently too, so "
        "read it with the quality panels below.", "none",
        [query(chosen(N.version_prediction_psi), "{{model_version}}")], width=8, threshold=C.canary_psi_limit))

    board.with_panel(both(
        f"{Q} in the model: primary and $version", f"{Q} of the time in the model per call (encoding and "
        f"estimator, no HTTP) over {SHORT}. {ALERT} compares it only once the candidate's is over "
        f"{text.millis(C.canary_latency_floor_seconds)} (dashed): below it the difference is none a client "
        "sees.", "s", N.version_latency, line_steps=((None, "green"), (C.canary_latency_floor_seconds, "orange"))))
    board.with_panel(graph(
        f"{Q} in the model: $version / primary", f"The chosen version's {Q} in the model over the primary's, over "
        f"{SHORT}. {ALERT} (signal latency) fires above {text.number(C.canary_latency_factor)}x (red) for a "
        f"candidate over {text.millis(C.canary_latency_floor_seconds)}, {MIN_CALLS}, for {FOR}; a shadow is not "
        "compared: it predicts after the answer is sent, when the next request competes for the CPU.", "none",
        [query(against_primary(N.version_latency, "/"), "{{model_version}} / primary")], width=8,
        threshold=C.canary_latency_factor))
    board.with_panel(bars(
        "Predictions per bin: primary and $version", f"Share of each version's predictions over {SHORT} in each "
        "of the primary card's prediction bins (every version counts its predictions on them too): the bins "
        "where the bars part make the PSI beside.", "percentunit",
        [table(f"max by (bin) ({N.version_primary_fraction})"),
         table(f"max by (bin) ({chosen(N.version_prediction_fraction)})")],
        x_field="bin", width=8, rename={"Value #A": "primary", "Value #B": "version"}))

    board.with_panel(both(
        "MAE: primary and $version ($target_unit)", f"Mean absolute error over {LONG} of the predictions each "
        "version made, from the feedback that names it (feedback without model_version counts for the primary), "
        "in $target_unit. Regressors only.", "short", N.version_mae, task="regression"))
    board.with_panel(graph(
        "MAE: $version / primary", f"The chosen version's MAE over {LONG} over the primary's. {ALERT} (signal mae) "
        f"fires above {text.number(C.canary_quality_factor)}x (red) with {C.quality_min_feedback} feedback pairs "
        f"each side, for {FOR}. Regressors only.", "none",
        [query(only("regression", against_primary(N.version_mae, "/")), "{{model_version}} / primary")],
        width=8, threshold=C.canary_quality_factor))
    board.with_panel(both(
        "Accuracy: primary and $version", f"Share of the feedback pairs over {LONG} whose predicted class was "
        "the actual one, per version that made the prediction. Classifiers only.", "percentunit",
        N.version_accuracy, task="classification"))
    board.with_panel(graph(
        "Accuracy: $version minus primary", f"The chosen version's accuracy over {LONG} less the primary's. "
        f"{ALERT} (signal accuracy) fires below -{text.number(C.canary_accuracy_margin)} (red) with "
        f"{C.quality_min_feedback} labelled pairs each side, for {FOR}. Classifiers only.", "percentunit",
        [query(only("classification", against_primary(N.version_accuracy, "-")), "{{model_version}} - primary")],
        width=8, min_val=None, line_steps=((None, "red"), (-C.canary_accuracy_margin, "green"))))

    board.with_row(dashboard.Row("Behind the comparisons"))
    board.with_panel(both(
        f"Calls, {text.last(C.short_window)}: primary and $version", f"Calls that reached each version's model "
        f"over {SHORT}, answered or failed. The failed share and the {Q} are compared with {C.canary_min_calls} "
        "each side (dashed).", "short", N.version_calls_increase,
        line_steps=((None, "orange"), (C.canary_min_calls, "green"))))
    board.with_panel(both(
        f"Rows predicted, {text.last(C.short_window)}: primary and $version", f"Rows each version predicted over "
        f"{SHORT}. The PSI between them is compared with {C.drift_min_rows} each side (dashed): below it, "
        "sampling noise alone lifts PSI.", "short", N.version_rows_increase,
        line_steps=((None, "orange"), (C.drift_min_rows, "green"))))
    board.with_panel(both(
        f"Feedback pairs, {text.last(C.long_window)}: primary and $version", f"Feedback pairs naming each version "
        f"over {LONG}. MAE (regressors) and accuracy (classifiers, on the same pairs) are compared with "
        f"{C.quality_min_feedback} each side (dashed).", "short", N.version_feedback_increase,
        line_steps=((None, "orange"), (C.quality_min_feedback, "green"))))
    return board
