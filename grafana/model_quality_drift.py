"""Model quality & drift: input and prediction drift (PSI), live error from feedback, data quality.

Everything here is computed by the recording rules of monitoring/rules.py, so the dashboard, the
alerts and the promtool tests read the same numbers, and draw the same limits (monitoring/config.py).
Nothing names a model: the feature list, the target and its unit come from Prometheus (the
$feature, $target and $target_unit variables), and live error is drawn against the live model's
holdout gauges.
"""
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode

from grafana.panels import (
    DATASOURCE, bars, bucket_heatmap, dashed, graph, instant, label_variable, model_variables, new_dashboard, query,
    single,
)
from monitoring import text
from monitoring.config import CONFIG as C
from monitoring.rules import HOLDOUT_MAE, HOLDOUT_MAPE, HOLDOUT_RMSE, Names, alert_groups

UID = C.dashboards.model
N = Names(C)
PSI = text.number(C.psi_limit)
PSI_STEPS = ((None, "green"), (C.psi_moderate, "orange"), (C.psi_limit, "red"))
FACTOR = text.number(C.quality_factor)
LIMIT_LEGEND = f"alert: {FACTOR}x holdout"
SHORT, LONG = text.duration(C.short_window), text.duration(C.long_window)
PSI_WINDOW = text.adjective(C.short_window)  # "5-minute"
# the alerts whose dashboard this is, drawn as annotations
MODEL_ALERTS = "|".join(rule["alert"] for group in alert_groups(C) for rule in group["rules"]
                        if rule["annotations"]["dashboard"] == C.link(UID))


def alert_annotation() -> dashboard.AnnotationQuery:
    """Prometheus's firing model alerts, drawn on every graph (titleFormat etc. are added by grafana.build)."""
    return (dashboard.AnnotationQuery().name("Model alerts").datasource(DATASOURCE).enable(True)
            .icon_color("red").expr(f'ALERTS{{alertstate="firing", alertname=~"{MODEL_ALERTS}"}}'))


def error_panel(title: str, description: str, unit: str, short: str, long: str, holdout_metric: str,
                alerted: bool):
    """Live error over both windows against the holdout value (dashed), and the alert's limit when one fires on it."""
    targets = [query(short, text.last(C.short_window)), query(long, text.last(C.long_window)),
               query(f"max({holdout_metric})", "holdout")]
    if alerted:
        targets.append(query(f"{FACTOR} * max({holdout_metric})", LIMIT_LEGEND))
    panel = dashed(graph(title, description, unit, targets, width=8), "holdout")
    return dashed(panel, LIMIT_LEGEND, "red") if alerted else panel


def build() -> dashboard.Dashboard:
    board = (
        new_dashboard("Model quality & drift", UID, "Input and prediction drift against the model card's "
                      "reference bins (PSI), live error once the actual values arrive on /feedback, and "
                      "data-quality counters.", "model", since="now-1h")
        .with_variable(label_variable(
            "feature", "Feature", N.feature_reference, multi=False,
            description="The feature whose live bins are compared with the reference"))
        .annotation(alert_annotation())
    )
    for variable in model_variables():
        board.with_variable(variable)

    board.with_row(dashboard.Row("Model"))
    board.with_panel(single(
        "Model version", "The model being served: name, version and the first 12 hex digits of its pickle's "
        "sha256 (model_info).", "none",
        instant("max by (name, version, sha256) (model_info == 1)", "{{name}} {{version}} ({{sha256}})"),
        width=8, text_mode=BigValueTextMode.NAME))
    board.with_panel(single(
        "Serving path", "How the live model predicts (model_info's serving_path): numpy, the fast path that "
        "encodes rows straight into the final estimator's matrix; or pipeline, the model's own scikit-learn "
        "pipeline on a DataFrame, for a pipeline the fast path cannot reproduce (the API's start-up log says "
        "why). Expect higher latency on the pipeline path.", "none",
        instant("max by (serving_path) (model_info == 1)", "{{serving_path}}"),
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
        "Prediction PSI", f"{PSI_WINDOW} PSI of the predictions ($target) against the training-set predictions. "
        f"PredictionDrift fires above {PSI}.", "none", instant(N.prediction_psi_short), width=3,
        steps=PSI_STEPS, decimals=3))
    board.with_panel(single(
        f"Feedback pairs, {text.last(C.long_window)}", f"Actual values received on /feedback in "
        f"{text.the_last(C.long_window)}. ModelQualityDegraded needs {C.quality_min_feedback}.", "short",
        instant(N.feedback_increase), width=3, steps=((None, "orange"), (C.quality_min_feedback, "green"))))

    board.with_row(dashboard.Row("Drift"))
    board.with_panel(graph(
        "PSI per feature", f"Population Stability Index of each input over {SHORT} against its training "
        f"bins. Under {text.number(C.psi_moderate)}: stable; {text.number(C.psi_moderate)} to {PSI}: moderate; "
        f"over {PSI} (dashed line): significant shift.", "none",
        [query(N.feature_psi, "{{feature}}")], threshold=C.psi_limit))
    board.with_panel(graph(
        "Prediction drift (PSI)", f"PSI of the predictions ($target) against the training-set predictions, over "
        f"{SHORT} and over {LONG}. Dashed line: the {PSI} alert threshold.", "none",
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
        "over time (model_prediction; its buckets are the deciles of the training-set predictions): a darker "
        "band is more predictions in that range.", "short",
        query("sum by (le) (increase(model_prediction_bucket[$__rate_interval]))", "{{le}}"),
        width=24))

    board.with_row(dashboard.Row("Quality from feedback"))
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
        "in the __missing__ bin.", "cps",
        [query("sum by (feature) (rate(model_feature_missing_total[$__rate_interval]))", "{{feature}}")],
        width=6))
    board.with_panel(graph(
        "Out-of-range values by feature", "Numeric values outside the training range, per second: accepted "
        "and predicted, but the model extrapolates.", "cps",
        [query("sum by (feature) (rate(model_feature_out_of_range_total[$__rate_interval]))", "{{feature}}")],
        width=6))
    board.with_panel(graph(
        "Unknown categories by feature", "Category values never seen in training, per second: accepted and "
        "predicted as the model treats an unseen category, counted in the __other__ bin.", "cps",
        [query("sum by (feature) (rate(model_feature_unknown_category_total[$__rate_interval]))",
               "{{feature}}")], width=6))
    return board
