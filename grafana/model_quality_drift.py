"""Model quality & drift: input and prediction drift (PSI and distribution statistics), live quality from
feedback, data quality.

Everything here is computed by the recording rules of monitoring/rules.py, so the dashboard, the
alerts and the promtool tests read the same numbers, and draw the same limits (monitoring/config.py).
Nothing names a model: the feature list, the target and its unit come from Prometheus (the
$feature, $numeric_feature, $target and $target_unit variables), and live quality is drawn against the live model's
holdout gauges.

One dashboard for regressors and classifiers, told apart by the task label of model_info. Grafana
11 cannot hide a row or a panel because of the data: a row repeated over a variable that lists
nothing is still drawn once, with the variable empty (grafana/grafana#3778, #10764), and a collapsed
row is collapsed for every model, the ones it is meant for too. So the panels of one task sit in a
row of their own, and every query of theirs goes through `only(task, ...)`, which returns nothing
unless model_info{task} of the model being served (the series at 1) is that task. The test runs every
query against a real Prometheus and holds the guarded ones to exactly that; that Grafana then draws
those panels empty, as any panel without data, is Grafana's ordinary behaviour, not tested here.

- Distribution drift, for every model: each numeric feature's Wasserstein-1, |mean shift| and |ln std
  ratio| over its calibrated threshold (1 is the alert's line), the signed winsorized mean shift and
  std ratio, and for the $numeric_feature chosen its live CDF against the reference's at the card's
  edges and its winsorized mean and standard deviation against the reference's and the alert's limits.
  The same for a regressor's prediction (row "Prediction distribution drift: regressors") and, at the
  end of the classifiers' row, for a classifier's top probability (confidence).
- With a regressor: the rows Model, Drift, Distribution drift, "Prediction distribution drift: regressors
  (empty for a classifier)", "Quality from feedback: regressors (empty for a classifier)" (MAE, RMSE,
  MAPE) and Data quality have data; below them, the row "Quality from feedback: classifiers (empty for a
  regressor)" has fifteen panels without data.
- With a classifier: Model (the version stat names the task); Drift, where PSI per feature and the
  $feature bins work as for a regressor, the prediction PSI is the drift of the predicted classes'
  shares (their bins are the classes), and "Prediction distribution ($target_unit)" has no data;
  Distribution drift; the regressors' two rows, whose seven panels have no data; Data quality; then
  the classifiers' row: accuracy,
  macro F1 and ROC AUC over the last hour of feedback against the holdout values (dashed) and the
  alert limit, holdout - classification_margin (red), the AUC with the band its binned scores leave
  the raw scores' AUC in; the confusion matrix; precision, recall and F1 per class beside their holdout
  values; the predicted and actual classes' shares against the reference; the mean confidence against
  its holdout value and ConfidenceDrop's limit, the confidence histogram as a heatmap, and the
  confidence's distribution drift.

Panels that mean the same for both tasks (drift, data quality, feedback pairs) carry no guard.

A deployment of several versions labels every model series by model_version, and every version exports
its own card's gauges: a sum over versions would mix cards and count a shadow's copies. So each raw model
series here goes through monitoring.rules' primary_only (the card's gauges, model_info, the histograms
drawn against the card) or answered (counts of the rows the clients sent: a shadow's are copies); with a
single model both remove nothing. Recording rules are read by name: what they keep is monitoring/rules.py's.
The versions against each other: the model-versions dashboard (grafana/canary.py).
"""
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from grafana.panels import (
    DATASOURCE, bars, bucket_heatmap, dashed, graph, instant, label_variable, matrix_table, merged_table,
    model_variables, new_dashboard, only, query, single,
)
from model.drift import CLIP_QUANTILE
from monitoring import text
from monitoring.config import CONFIG as C
from monitoring.rules import (
    HOLDOUT_CONFIDENCE, HOLDOUT_MAE, HOLDOUT_MAPE, HOLDOUT_RMSE, Names, alert_groups, answered, primary_only,
)

UID = C.dashboards.model
N = Names(C)
PSI = text.number(C.psi_limit)
PSI_STEPS = ((None, "green"), (C.psi_moderate, "orange"), (C.psi_limit, "red"))
FACTOR = text.number(C.quality_factor)
LIMIT_LEGEND = f"alert: {FACTOR}x holdout"
SHORT, LONG = text.duration(C.short_window), text.duration(C.long_window)
PSI_WINDOW = text.adjective(C.short_window)  # "5-minute"
MARGIN = text.number(C.classification_margin)
MARGIN_LEGEND = f"alert: holdout - {MARGIN}"
CONFIDENCE_MARGIN = text.number(C.confidence_margin)
CONFIDENCE_LEGEND = f"alert: holdout - {CONFIDENCE_MARGIN}"
CONFIDENCE_HOLDOUT = f"max({primary_only(HOLDOUT_CONFIDENCE)})"
REGRESSORS_ROW = "Quality from feedback: regressors (empty for a classifier)"
DISTRIBUTION_ROW = "Distribution drift"
PREDICTION_DRIFT_ROW = "Prediction distribution drift: regressors (empty for a classifier)"
CLASSIFIERS_ROW = "Quality from feedback: classifiers (empty for a regressor)"
# the alerts whose dashboard this is, drawn as annotations
MODEL_ALERTS = "|".join(rule["alert"] for group in alert_groups(C) for rule in group["rules"]
                        if rule["annotations"]["dashboard"] == C.link(UID))


CLIP = (f"winsorized to the card's clip bounds (the reference's {text.percent(CLIP_QUANTILE)} and "
        f"{text.percent(1 - CLIP_QUANTILE)} quantiles)")
# the distribution statistics (model/drift.py): statistic label -> (its score in titles, what the score is)
STATISTICS = {
    "wasserstein": ("Wasserstein-1", "the Wasserstein-1 distance between the live and the reference distribution "
                    "(the area between their CDFs over the card's edges), in reference standard deviations"),
    "mean_shift": ("|Mean shift|", "|live mean - reference mean| / reference standard deviation"),
    "std_ratio": ("|ln std ratio|", "|ln(live standard deviation / reference standard deviation)|"),
}
MOMENTS = f"Means and standard deviations are of values {CLIP}"
CALIBRATED = (f"Thresholds are calibrated at onboarding on bootstrap windows of the reference's values, each scored "
              "against a resample of the reference, so that each drift alert false-alarms on at most "
              f"{text.percent(C.drift_false_alarm_rate)} of windows of {C.drift_min_rows} values, all its statistics "
              "and quantities together (each gets an even share of that rate)")
FINITE_EDGES = 'le!="+Inf"'  # the card has no reference value at +Inf: every CDF is 1 there


def selector(metric: str, *matchers: str) -> str:
    """`metric{matchers}`, the empty ones left out."""
    given = [m for m in matchers if m]
    return f"{metric}{{{', '.join(given)}}}" if given else metric


@dataclass(frozen=True)
class Quantity:
    """A numeric quantity the card has a `distribution` of (a feature, a regressor's prediction, a classifier's
    confidence): the series the webapp exports of it and the recording rules it has."""
    title: str      # how titles name it
    described: str  # how descriptions name it
    metric: str     # the webapp's prefix of its gauges: <metric>_reference_cdf, <metric>_drift_threshold, ...
    keys: tuple     # the labels one of them is told apart by (besides le and statistic)
    chosen: str     # the matcher of the one the panels about a single one show
    cdf: str
    mean: str
    stddev: str
    score: str
    task: str | None  # the task whose models have it; None: every model
    alert: str
    unit: str
    in_unit: str = ""  # what titles add when the unit is one Prometheus names: " ($target_unit)"

    def guard(self, expr: str) -> str:
        return expr if self.task is None else only(self.task, expr)

    def gauge(self, name: str, *matchers: str) -> str:
        """The primary's card's value `name` of the chosen one, as max() over replicas."""
        return f"max({primary_only(selector(f'{self.metric}_{name}', self.chosen, *matchers))})"

    def threshold(self, statistic: str) -> str:
        """The statistic's threshold gauge, only when it is set (> 0): the alert ignores it otherwise."""
        matcher = f'statistic="{statistic}"'
        return f"({self.gauge('drift_threshold', matcher)} > 0)"


FEATURE = Quantity(
    "$numeric_feature", "the values of $numeric_feature", "model_feature", ("feature",), 'feature="$numeric_feature"',
    N.feature_cdf, N.feature_mean, N.feature_stddev, N.feature_drift_score, None, "FeatureDrift", "short")
PREDICTION = Quantity(
    "Prediction", "the predictions of $target (in $target_unit)", "model_prediction", (), "", N.prediction_cdf,
    N.prediction_mean, N.prediction_stddev, N.prediction_drift_score, "regression", "PredictionDrift", "short",
    " ($target_unit)")
CONFIDENCE = Quantity(
    "Confidence", "the predictions' top probabilities", "model_confidence", (), "", N.confidence_cdf,
    N.confidence_mean, N.confidence_stddev, N.confidence_drift_score, "classification", "PredictionDrift",
    "percentunit")


def alert_annotation() -> dashboard.AnnotationQuery:
    """Prometheus's firing model alerts, drawn on every graph (titleFormat etc. are added by grafana.build)."""
    return (dashboard.AnnotationQuery().name("Model alerts").datasource(DATASOURCE).enable(True)
            .icon_color("red").expr(f'ALERTS{{alertstate="firing", alertname=~"{MODEL_ALERTS}"}}'))


def error_panel(title: str, description: str, unit: str, short: str, long: str, holdout_metric: str,
                alerted: bool):
    """Live error over both windows against the holdout value (dashed), and the alert's limit when one fires on it.

    Regressors only: a classifier exports none of these series, and the guard keeps the panel empty for
    one whatever a replaced regressor left behind."""
    holdout = f"max({primary_only(holdout_metric)})"
    targets = [query(only("regression", short), text.last(C.short_window)),
               query(only("regression", long), text.last(C.long_window)),
               query(only("regression", holdout), "holdout")]
    if alerted:
        targets.append(query(only("regression", f"{FACTOR} * {holdout}"), LIMIT_LEGEND))
    panel = dashed(graph(title, description, unit, targets, width=8), "holdout")
    return dashed(panel, LIMIT_LEGEND, "red") if alerted else panel


def classifier(expr: str) -> str:
    return only("classification", expr)


def score_panel(title: str, description: str, live: str, holdout: str, *, holdout_if_positive: bool = False,
                extra: list = ()):
    """A classification score over the long window against the holdout gauge (dashed) and the alert's limit,
    holdout - classification_margin (red). With `holdout_if_positive` a gauge at 0 (the card has no value)
    draws neither line: the alert ignores it too."""
    held = f"max({primary_only(holdout)})" + (" > 0" if holdout_if_positive else "")
    limit = f"({held}) - {MARGIN}" if holdout_if_positive else f"{held} - {MARGIN}"
    targets = [query(classifier(live), text.last(C.long_window)), query(classifier(held), "holdout"),
               query(classifier(limit), MARGIN_LEGEND), *extra]
    panel = dashed(graph(title, description, "percentunit", targets, width=8), "holdout")
    return dashed(panel, MARGIN_LEGEND, "red")


def over_threshold(q: Quantity, statistic: str | None = None) -> str:
    """Each score of `q` over its threshold (1 is the alert's line), of one statistic or of every one, with the
    alert's own `> 0` on the threshold."""
    keys = ", ".join((*q.keys, "statistic"))
    matcher = f'statistic="{statistic}"' if statistic else ""
    return (f"{selector(q.score, matcher)} / on ({keys}) "
            f"(max by ({keys}) ({primary_only(selector(f'{q.metric}_drift_threshold', matcher))}) > 0)")


def alert_condition(q: Quantity) -> str:
    return (f"{q.alert} fires above it with {C.drift_min_rows} rows predicted in {SHORT}, for "
            f"{text.duration(C.drift_for)}")


def feature_statistic_panel(statistic: str):
    name, what = STATISTICS[statistic]
    moments = "" if statistic == "wasserstein" else f" {MOMENTS}."
    return graph(
        f"{name} / threshold, per feature", f"Per numeric feature, over {SHORT}: {what}, divided by the feature's "
        f"threshold in the model card.{moments} 1 (dashed) is the alert's line: {alert_condition(FEATURE)}. "
        f"{CALIBRATED}.", "none",
        [query(over_threshold(FEATURE, statistic), "{{feature}}")], width=8, threshold=1)


def output_scores_panel(q: Quantity):
    """A prediction's or a confidence's three scores over their thresholds, in one panel."""
    scores = "; ".join(f"{statistic}: {what}" for statistic, (_, what) in STATISTICS.items())
    return graph(
        f"{q.title} drift scores / threshold", f"Each distribution statistic of {q.described} over {SHORT}, its "
        f"score divided by its threshold in the model card (the legend names the statistic): {scores}. {MOMENTS}. "
        f"1 (dashed) is the alert's line: {alert_condition(q)}. {CALIBRATED}.", "none",
        [query(q.guard(over_threshold(q)), "{{statistic}}")], threshold=1)


def cdf_panel(q: Quantity, width: int):
    """The live CDF against the reference's at the card's edges, as bars in the edges' order."""
    by = ", ".join((*q.keys, "le"))
    # max by() also drops the metric name, so both tables carry the same columns and merge row by row
    reference = f"max by ({by}) ({primary_only(selector(f'{q.metric}_reference_cdf', q.chosen))})"
    live = f"max by ({by}) ({selector(q.cdf, q.chosen, FINITE_EDGES)})"
    return bars(
        f"{q.title}: live vs reference CDF{q.in_unit}", f"Share of {q.described} at or below each edge "
        f"of the model card's distribution (x: the edge): the reference rows against "
        f"{text.the_last(C.short_window)} of traffic. The edges are the reference's quantiles, its minimum and "
        "maximum, and tail edges beyond them; where the bars part, the distribution moved. Wasserstein-1 is the "
        "sum of the gaps, each weighted by the spacing of the edges around it, over the reference standard "
        "deviation.", "percentunit",
        [instant(q.guard(reference), table=True), instant(q.guard(live), table=True)],
        x_field="le", rename={"Value #A": "reference", "Value #B": f"live ({text.short(C.short_window)})"},
        width=width, numeric_x=True)


def moment_panel(q: Quantity, title: str, what: str, live: str, reference: str, limits: tuple, lines: str,
                 width: int, min_val: float | None):
    """A live winsorized moment against the reference's (dashed), and the values beyond which its score passes
    its threshold (red): `limits` (high, low)."""
    targets = [query(q.guard(selector(live, q.chosen)), text.last(C.short_window)),
               query(q.guard(reference), "reference"),
               query(q.guard(limits[0]), "alert: high"), query(q.guard(limits[1]), "alert: low")]
    panel = graph(
        f"{q.title}: {title}{q.in_unit}", f"{what} of {q.described} over {SHORT}, of values {CLIP}, against the "
        f"reference's (dashed). The red lines are {lines}: {q.alert} fires outside them with {C.drift_min_rows} rows "
        f"predicted in {SHORT}, for {text.duration(C.drift_for)}.", q.unit, targets, width=width, min_val=min_val)
    return dashed(dashed(dashed(panel, "reference"), "alert: high", "red"), "alert: low", "red")


def mean_panel(q: Quantity, width: int):
    mean, std, limit = q.gauge("reference_mean"), q.gauge("reference_stddev"), q.threshold("mean_shift")
    return moment_panel(q, "winsorized mean", "Mean", q.mean, mean,
                        (f"{mean} + {limit} * {std}", f"{mean} - {limit} * {std}"),
                        "reference mean ± its mean_shift threshold x reference standard deviation", width, None)


def std_panel(q: Quantity, width: int):
    std, limit = q.gauge("reference_stddev"), q.threshold("std_ratio")
    return moment_panel(q, "winsorized std", "Standard deviation", q.stddev, std,
                        (f"{std} * exp{limit}", f"{std} / exp{limit}"),
                        "reference standard deviation x e^(± its std_ratio threshold)", width, 0)


def distribution_row(board: dashboard.Dashboard) -> None:
    """Every numeric feature's distribution statistics, then the live distribution of the one chosen."""
    board.with_row(dashboard.Row(DISTRIBUTION_ROW))
    for statistic in STATISTICS:
        board.with_panel(feature_statistic_panel(statistic))
    board.with_panel(graph(
        "Winsorized mean shift per feature", f"(live mean - reference mean) / reference standard deviation of each "
        f"numeric feature over {SHORT}, of values {CLIP}: 0 is the reference, the sign says which way the feature "
        "moved. Each feature has its own alert line (its threshold): see |Mean shift| / threshold.", "none",
        [query(N.feature_mean_shift, "{{feature}}")], min_val=None))
    board.with_panel(graph(
        "Winsorized std ratio per feature", f"Live standard deviation / reference standard deviation of each "
        f"numeric feature over {SHORT}, of values {CLIP}: 1 is the reference, above it the values spread wider. "
        "Each feature has its own alert lines (its threshold): see |ln std ratio| / threshold.", "none",
        [query(N.feature_std_ratio, "{{feature}}")]))
    board.with_panel(cdf_panel(FEATURE, 12))
    board.with_panel(mean_panel(FEATURE, 6))
    board.with_panel(std_panel(FEATURE, 6))


def output_drift_panels(board: dashboard.Dashboard, q: Quantity) -> None:
    """A regressor's prediction or a classifier's confidence: its scores, its CDF and its moments."""
    board.with_panel(output_scores_panel(q))
    board.with_panel(cdf_panel(q, 12))
    board.with_panel(mean_panel(q, 12))
    board.with_panel(std_panel(q, 12))


def build() -> dashboard.Dashboard:
    board = (
        new_dashboard("Model quality & drift", UID, "Input and prediction drift against the model card's "
                      "reference bins (PSI) and its reference distributions (Wasserstein-1, winsorized mean and "
                      "standard deviation, against thresholds calibrated at onboarding), live quality once the "
                      "actual values arrive on /feedback (error for a regressor; accuracy, F1, ROC AUC and "
                      "confidence for a classifier), and data-quality counters. With several versions: the "
                      "primary's, and the data-quality counts of every version that answers (the model-versions "
                      "dashboard compares the others with it).", "model", since="now-1h")
        .with_variable(label_variable(
            "feature", "Feature", N.feature_reference, multi=False,
            description="The feature whose live bins are compared with the reference"))
        .with_variable(label_variable(
            "numeric_feature", "Numeric feature", "model_feature_reference_cdf", of="feature", multi=False,
            description="The numeric feature whose live distribution is compared with the reference (the features "
                        "the model card has a distribution of)"))
        .annotation(alert_annotation())
    )
    for variable in model_variables():
        board.with_variable(variable)

    board.with_row(dashboard.Row("Model"))
    board.with_panel(single(
        "Model version", "The model being served (with several versions, the primary): name, version, task "
        "(regression or classification: the quality rows for the other task stay empty) and the first 12 hex "
        "digits of its pickle's sha256 (model_info).", "none",
        instant(f"max by (name, version, task, sha256) ({primary_only('model_info == 1')})",
                "{{name}} {{version}}, {{task}} ({{sha256}})"),
        width=8, text_mode=BigValueTextMode.NAME))
    board.with_panel(single(
        "Serving path", "How the live model predicts (model_info's serving_path): compiled, the fast path with "
        "the card's tree ensemble compiled to a shared library; numpy, the fast path that encodes rows "
        "straight into the final estimator's matrix; or pipeline, the model's own scikit-learn "
        "pipeline on a DataFrame, for a pipeline the fast path cannot reproduce (the API's start-up log says "
        "why). Expect higher latency on the pipeline path.", "none",
        instant(f"max by (serving_path) ({primary_only('model_info == 1')})", "{{serving_path}}"),
        width=4, text_mode=BigValueTextMode.NAME))
    board.with_panel(single(
        f"Rows predicted, {text.last(C.short_window)}", f"Rows behind the {PSI_WINDOW} PSI. The drift alerts "
        f"wait for {C.drift_min_rows}: below that, sampling noise alone lifts PSI.", "short",
        instant(N.predictions_increase), width=3, steps=((None, "orange"), (C.drift_min_rows, "green"))))
    board.with_panel(single(
        "Worst feature PSI", f"The largest {PSI_WINDOW} PSI over every feature. Above {PSI} (red) with "
        f"{C.drift_min_rows} rows, for {text.duration(C.drift_for)}, FeatureDrift fires.", "none",
        instant(f"max ({N.feature_psi})"), width=3, steps=PSI_STEPS, decimals=3))
    board.with_panel(single(
        "Prediction PSI", f"{PSI_WINDOW} PSI of the predictions ($target) against the training-set predictions "
        f"(for a classifier: of the predicted classes' shares). PredictionDrift fires above {PSI}.", "none",
        instant(N.prediction_psi_short), width=3, steps=PSI_STEPS, decimals=3))
    board.with_panel(single(
        f"Feedback pairs, {text.last(C.long_window)}", f"Actual values received on /feedback in "
        f"{text.the_last(C.long_window)}. ModelQualityDegraded (regressors) and ClassificationQualityDegraded "
        f"(classifiers) need {C.quality_min_feedback}.", "short",
        instant(N.feedback_increase), width=3, steps=((None, "orange"), (C.quality_min_feedback, "green"))))

    board.with_row(dashboard.Row("Drift"))
    board.with_panel(graph(
        "PSI per feature", f"Population Stability Index of each input over {SHORT} against its training "
        f"bins. Under {text.number(C.psi_moderate)}: stable; {text.number(C.psi_moderate)} to {PSI}: moderate; "
        f"over {PSI} (dashed line): significant shift.", "none",
        [query(N.feature_psi, "{{feature}}")], threshold=C.psi_limit))
    board.with_panel(graph(
        "Prediction drift (PSI)", f"PSI of the predictions ($target) against the training-set predictions, over "
        f"{SHORT} and over {LONG}; for a classifier, of the predicted classes' shares. Dashed line: the {PSI} "
        "alert threshold.", "none",
        [query(N.prediction_psi_short, SHORT), query(N.prediction_psi_long, LONG)], threshold=C.psi_limit))
    board.with_panel(bars(
        "$feature: reference vs live bins", "Share of rows in each reference bin of $feature: the training "
        f"set (model card) against {text.the_last(C.short_window)} of traffic. The bins that moved explain the PSI.",
        "percentunit",
        [instant(f'{N.feature_reference}{{feature="$feature"}}', "reference", table=True),
         instant(f'{N.feature_fraction}{{feature="$feature"}}', "live", table=True)],
        x_field="bin", rename={"Value #A": "reference", "Value #B": f"live ({text.short(C.short_window)})"}))
    board.with_panel(graph(
        "$feature: live minus reference, per bin", f"How far each bin's live share ({SHORT}) is from its "
        "training share, over time: a unit change shows as mass leaving some bins for others.",
        "percentunit",
        [query(f'{N.feature_fraction}{{feature="$feature"}} - on (feature, bin) '
               f'{N.feature_reference}{{feature="$feature"}}', "{{bin}}")], min_val=None))
    board.with_panel(bucket_heatmap(
        "Prediction distribution ($target_unit)", "Predictions of $target, in $target_unit, per histogram bucket "
        "over time (model_prediction; its buckets are the edges of the model card's distribution of the training-set "
        "predictions): a darker "
        "band is more predictions in that range. Regressors only: a classifier's predicted classes are in the "
        "classifiers' row.", "short",
        query(only("regression", f"sum by (le) ({primary_only('increase(model_prediction_bucket[$__rate_interval])')})"),
              "{{le}}"),
        width=24))

    distribution_row(board)
    board.with_row(dashboard.Row(PREDICTION_DRIFT_ROW))
    output_drift_panels(board, PREDICTION)

    board.with_row(dashboard.Row(REGRESSORS_ROW))
    board.with_panel(error_panel(
        "MAE ($target_unit)", f"Mean absolute error of the predictions whose actual value arrived, in $target_unit, "
        f"over {SHORT} and {LONG}, against the holdout MAE of the live model's card (dashed). "
        f"ModelQualityDegraded fires above {FACTOR}x holdout over {LONG} (red).", "short",
        N.mae_short, N.mae_long, HOLDOUT_MAE, alerted=True))
    board.with_panel(error_panel(
        "RMSE ($target_unit)", "Root mean squared error from feedback, in $target_unit, against the holdout RMSE "
        "(dashed). RMSE well above MAE means a few very wrong predictions.", "short",
        N.rmse_short, N.rmse_long, HOLDOUT_RMSE, alerted=False))
    board.with_panel(error_panel(
        "MAPE", "Mean absolute percentage error from feedback against the holdout MAPE (dashed). "
        f"ModelQualityDegraded fires above {FACTOR}x holdout over {LONG} (red). Empty for a model whose target "
        "can be 0: its card has no MAPE.", "percentunit", N.mape_short, N.mape_long, HOLDOUT_MAPE, alerted=True))

    board.with_row(dashboard.Row("Data quality"))
    board.with_panel(graph(
        "Invalid requests by reason", f"{C.latency_route} requests refused with a 4xx, by the first problem's "
        f"reason code (README: bad input). HighInvalidInputRatio fires above {text.percent(C.invalid_ratio_limit)} "
        "of requests.", "reqps", [query(N.invalid_by_reason, "{{reason}}")], width=6))
    board.with_panel(graph(
        "Missing values by feature", "null values in predicted rows, per second: accepted, predicted, counted "
        "in the __missing__ bin. With several versions, of the rows every answering version predicted (a "
        "shadow's copies left out).", "cps",
        [query(f"sum by (feature) ({answered('rate(model_feature_missing_total[$__rate_interval])')})",
               "{{feature}}")],
        width=6))
    board.with_panel(graph(
        "Out-of-range values by feature", "Numeric values outside the training range, per second: accepted "
        "and predicted, but the model extrapolates. With several versions, each answered row against the card "
        "of the version that answered it.", "cps",
        [query(f"sum by (feature) ({answered('rate(model_feature_out_of_range_total[$__rate_interval])')})",
               "{{feature}}")],
        width=6))
    board.with_panel(graph(
        "Unknown categories by feature", "Category values never seen in training, per second: accepted and "
        "predicted as the model treats an unseen category, counted in the __other__ bin.", "cps",
        [query(f"sum by (feature) ({answered('rate(model_feature_unknown_category_total[$__rate_interval])')})",
               "{{feature}}")], width=6))

    classification_row(board)
    return board


def classification_row(board: dashboard.Dashboard) -> None:
    """The classifiers' row, last: every query guarded, so for a regressor no panel here has data."""
    board.with_row(dashboard.Row(CLASSIFIERS_ROW))
    long = text.last(C.long_window)
    board.with_panel(score_panel(
        f"Accuracy, {long}", f"Share of feedback pairs whose predicted class was the actual class, over {LONG}, "
        "against the holdout accuracy of the live model's card (dashed). ClassificationQualityDegraded fires "
        f"below holdout - {MARGIN} (red) with {C.quality_min_feedback} pairs, for {text.duration(C.quality_for)}.",
        N.accuracy_long, "model_holdout_accuracy"))
    board.with_panel(score_panel(
        f"Macro F1, {long}", f"Unweighted mean of the per-class F1 scores from feedback over {LONG} (classes neither "
        "predicted nor seen are left out, as scikit-learn does), against the holdout macro F1 (dashed): it drops "
        "when a rare class is missed, where accuracy hardly moves. ClassificationQualityDegraded fires below "
        f"holdout - {MARGIN} (red).", N.macro_f1_long, "model_holdout_macro_f1"))
    board.with_panel(score_panel(
        f"ROC AUC, {long}", f"Area under the ROC curve of the scores sent with the feedback (the positive class's "
        f"probability) over {LONG}, against the holdout AUC (dashed). Scores are counted in the card's score "
        "bins, ties within a bin counted half: the AUC of the raw scores lies between the two dotted lines. "
        f"ClassificationQualityDegraded fires below holdout - {MARGIN} (red). Binary models with probabilities "
        "only: empty for others.", N.roc_auc_long, "model_holdout_roc_auc", holdout_if_positive=True,
        extra=[query(classifier(f"{N.roc_auc_long} - {N.roc_auc_bound_long}"), "raw scores: at least"),
               query(classifier(f"{N.roc_auc_long} + {N.roc_auc_bound_long}"), "raw scores: at most")])
        .override_by_name("raw scores: at least", DOTTED)
        .override_by_name("raw scores: at most", [*DOTTED, DynamicConfigValue(id_val="custom.fillOpacity", value=10),
                                                  DynamicConfigValue(id_val="custom.fillBelowTo",
                                                                     value="raw scores: at least")]))

    board.with_panel(matrix_table(
        f"Confusion matrix, {long}", f"Feedback pairs over {LONG}: a row per actual class, a column per "
        "predicted class; the diagonal is right. increase() extrapolates to the window's edges, so the counts "
        "are estimates, rounded here.", "short",
        instant(classifier(N.actual_predicted_increase_long), table=True), rows="actual", columns="predicted",
        width=8, decimals=0))
    board.with_panel(merged_table(
        f"Per class, {long} vs holdout", f"Precision (right among the rows predicted as the class), recall "
        f"(found among the rows that were the class) and F1 per class from feedback over {LONG}, beside the "
        "holdout values of the live model's card. A class never predicted has no precision.", "percentunit",
        [instant(classifier(N.precision_long), table=True),
         instant(classifier(f"max by (class) ({primary_only('model_holdout_precision')})"), table=True),
         instant(classifier(N.recall_long), table=True),
         instant(classifier(f"max by (class) ({primary_only('model_holdout_recall')})"), table=True),
         instant(classifier(N.f1_long), table=True),
         instant(classifier(f"max by (class) ({primary_only('model_holdout_f1')})"), table=True)],
        x_field="class", width=8, decimals=1,
        rename={"Value #A": "precision", "Value #B": "holdout precision", "Value #C": "recall",
                "Value #D": "holdout recall", "Value #E": "F1", "Value #F": "holdout F1"}))
    board.with_panel(graph(
        f"F1 per class, {long}", f"F1 of each class from feedback over {LONG}, over time: the class whose F1 "
        "falls is the one the model now gets wrong (the table beside it has its holdout F1).", "percentunit",
        [query(classifier(N.f1_long), "{{class}}")], width=8))

    board.with_panel(bars(
        "Predicted classes: reference vs live", "Share of predictions per class: the reference rows of the "
        f"model card against {text.the_last(C.short_window)} and {text.the_last(C.long_window)} of traffic. "
        f"PredictionDrift fires when their {PSI_WINDOW} PSI is above {PSI}.", "percentunit",
        [instant(classifier(N.prediction_reference), table=True),
         instant(classifier(N.prediction_fraction_short), table=True),
         instant(classifier(N.prediction_fraction_long), table=True)],
        x_field="bin", width=8,
        rename={"Value #A": "reference", "Value #B": f"live ({text.short(C.short_window)})",
                "Value #C": f"live ({text.short(C.long_window)})"}))
    board.with_panel(bars(
        "Actual classes: reference vs feedback", "Share of each actual class: the reference rows of the model "
        f"card against the feedback of {text.the_last(C.long_window)}. A class more frequent than in the "
        "reference (label shift) changes accuracy even if the model is as good as it was.", "percentunit",
        [instant(classifier(N.class_reference), table=True),
         instant(classifier(N.actual_fraction_long), table=True)],
        x_field="class", width=8,
        rename={"Value #A": "reference", "Value #B": f"feedback ({text.short(C.long_window)})"}))
    board.with_panel(graph(
        "Class shares: live minus reference", f"How far each class's share is from the reference, over time: "
        f"predicted classes over {SHORT}, actual classes (feedback) over {LONG}. Predicted shares moving alone "
        "is drift of the inputs; actual shares moving too is label shift.", "percentunit",
        [query(classifier(f"{N.prediction_fraction_short} - on (bin) {N.prediction_reference}"),
               f"predicted {{{{bin}}}} ({text.short(C.short_window)})"),
         query(classifier(f"{N.actual_fraction_long} - on (class) {N.class_reference}"),
               f"actual {{{{class}}}} ({text.short(C.long_window)})")], width=8, min_val=None))

    board.with_panel(dashed(dashed(graph(
        f"Mean confidence, {text.last(C.short_window)}", f"Mean top probability of the predictions over {SHORT} "
        "against the holdout mean of the live model's card (dashed). ConfidenceDrop fires below holdout - "
        f"{CONFIDENCE_MARGIN} (red) with {C.drift_min_rows} rows predicted, for {text.duration(C.drift_for)}: "
        "inputs unlike the training data pull it down. Models with probabilities only.", "percentunit",
        [query(classifier(N.confidence_mean_short), text.last(C.short_window)),
         query(classifier(f"{CONFIDENCE_HOLDOUT} > 0"), "holdout"),
         query(classifier(f"({CONFIDENCE_HOLDOUT} > 0) - {CONFIDENCE_MARGIN}"), CONFIDENCE_LEGEND)],
        min_val=None), "holdout"), CONFIDENCE_LEGEND, "red"))
    board.with_panel(bucket_heatmap(
        "Confidence distribution", "Predictions per bucket of their top probability over time "
        "(model_confidence; its buckets are the edges of the model card's distribution of it on the reference rows): "
        "mass moving down "
        "is the model less sure. Models with probabilities only.", "short",
        query(classifier(f"sum by (le) ({primary_only('increase(model_confidence_bucket[$__rate_interval])')})"),
              "{{le}}"),
        y_unit="percentunit"))
    output_drift_panels(board, CONFIDENCE)


# the raw-score bounds around the ROC AUC: dotted lines, the band between them lightly filled
DOTTED = [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dot", "dash": [0, 10]}),
          DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"})]
