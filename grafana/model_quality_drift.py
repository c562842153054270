"""Model quality & drift: input and prediction drift (PSI), live error from feedback, data quality.

Everything here is computed by the recording rules in prometheus/rules/recording.yml, so the
dashboard, the alerts and the promtool tests read the same numbers.
"""
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.common import BigValueTextMode

from grafana.panels import (
    DATASOURCE, PSI_THRESHOLD, bars, bucket_heatmap, new_dashboard, dashed, graph, instant, label_variable, query, single,
)

UID = "model-quality-drift"
PSI_STEPS = ((None, "green"), (0.1, "orange"), (PSI_THRESHOLD, "red"))
MODEL_ALERTS = "FeatureDrift|PredictionDrift|ModelQualityDegraded|HighInvalidInputRatio"


def alert_annotation() -> dashboard.AnnotationQuery:
    """Prometheus's firing model alerts, drawn on every graph (titleFormat etc. are added by grafana.build)."""
    return (dashboard.AnnotationQuery().name("Model alerts").datasource(DATASOURCE).enable(True)
            .icon_color("red").expr(f'ALERTS{{alertstate="firing", alertname=~"{MODEL_ALERTS}"}}'))


def error_panel(title: str, description: str, unit: str, rule: str, holdout_metric: str):
    panel = graph(title, description, unit, [
        query(f"{rule}5m", "last 5 min"),
        query(f"{rule}1h", "last hour"),
        query(f"max({holdout_metric})", "holdout"),
    ], width=8)
    return dashed(panel, "holdout")


def build() -> dashboard.Dashboard:
    board = (
        new_dashboard("Model quality & drift", UID, "Input and prediction drift against the model card's "
                      "reference bins (PSI), live error once the true prices arrive, and data-quality counters.",
                      "model", since="now-1h")
        .with_variable(label_variable(
            "feature", "Feature", "feature_bin:model_feature_reference_ratio:max", multi=False, default="area",
            description="The feature whose live bins are compared with the reference"))
        .annotation(alert_annotation())
    )

    board.with_row(dashboard.Row("Model"))
    board.with_panel(single(
        "Model version", "The model being served: name, version and the first 12 hex digits of its pickle's "
        "sha256 (model_info).", "none",
        instant("max by (name, version, sha256) (model_info)", "{{name}} {{version}} ({{sha256}})"),
        width=8, text_mode=BigValueTextMode.NAME))
    board.with_panel(single(
        "Rows predicted, last 5 min", "Rows behind the 5-minute PSI. The drift alerts wait for 500: below "
        "that, sampling noise alone lifts PSI.", "short", instant(":model_predictions:increase5m"),
        steps=((None, "orange"), (500, "green"))))
    board.with_panel(single(
        "Worst feature PSI", "The largest 5-minute PSI over every feature. Above 0.2 (red) with 500 rows, "
        "for 10 minutes, FeatureDrift fires.", "none", instant("max (feature:model_feature_bin:psi5m)"),
        steps=PSI_STEPS, decimals=3))
    board.with_panel(single(
        "Prediction PSI", "5-minute PSI of the predicted prices against the training-set predictions. "
        "PredictionDrift fires above 0.2.", "none", instant(":model_prediction_bin:psi5m"),
        steps=PSI_STEPS, decimals=3))
    board.with_panel(single(
        "Feedback pairs, last hour", "True prices received on /feedback in the last hour. "
        "ModelQualityDegraded needs 200.", "short", instant(":model_feedback:increase1h"),
        steps=((None, "orange"), (200, "green"))))

    board.with_row(dashboard.Row("Drift"))
    board.with_panel(graph(
        "PSI per feature", "Population Stability Index of each input over 5 minutes against its training "
        "bins. Under 0.1: stable; 0.1 to 0.2: moderate; over 0.2 (dashed line): significant shift.", "none",
        [query("feature:model_feature_bin:psi5m", "{{feature}}")], threshold=PSI_THRESHOLD))
    board.with_panel(graph(
        "Prediction drift (PSI)", "PSI of the predicted prices against the training-set predictions, over 5 "
        "minutes and over an hour. Dashed line: the 0.2 alert threshold.", "none",
        [query(":model_prediction_bin:psi5m", "5 min"), query(":model_prediction_bin:psi1h", "1 hour")],
        threshold=PSI_THRESHOLD))
    board.with_panel(bars(
        "$feature: reference vs live bins", "Share of rows in each reference bin of $feature: the training "
        "set (model card) against the last 5 minutes of traffic. The bins that moved explain the PSI.",
        "percentunit",
        [instant('feature_bin:model_feature_reference_ratio:max{feature="$feature"}', "reference", table=True),
         instant('feature_bin:model_feature_bin:fraction5m{feature="$feature"}', "live", table=True)],
        x_field="bin", rename={"Value #A": "reference", "Value #B": "live (5 min)"}))
    board.with_panel(graph(
        "$feature: live minus reference, per bin", "How far each bin's live share (5 minutes) is from its "
        "training share, over time: a unit change shows as mass leaving some bins for others.",
        "percentunit",
        [query('feature_bin:model_feature_bin:fraction5m{feature="$feature"} - on (feature, bin) '
               'feature_bin:model_feature_reference_ratio:max{feature="$feature"}', "{{bin}}")], min_val=None))
    board.with_panel(bucket_heatmap(
        "Prediction distribution", "Predicted prices per histogram bucket over time (model_prediction_dollars):"
        " a darker band is more predictions at that price.", "currencyUSD",
        query("sum by (le) (increase(model_prediction_dollars_bucket[$__rate_interval]))", "{{le}}"),
        width=24))

    board.with_row(dashboard.Row("Quality from feedback"))
    board.with_panel(error_panel(
        "MAE", "Mean absolute error of the predictions whose true price arrived, over 5 minutes and an hour, "
        "against the holdout MAE of the model card (dashed). ModelQualityDegraded fires at 1.5x holdout.",
        "currencyUSD", ":model_absolute_error_dollars:mean", "model_holdout_mean_absolute_error_dollars"))
    board.with_panel(error_panel(
        "RMSE", "Root mean squared error from feedback against the holdout RMSE (dashed). RMSE well above "
        "MAE means a few very wrong predictions.", "currencyUSD", ":model_squared_error_dollars:rmse",
        "model_holdout_root_mean_squared_error_dollars"))
    board.with_panel(error_panel(
        "MAPE", "Mean absolute percentage error from feedback against the holdout MAPE (dashed). "
        "ModelQualityDegraded fires at 1.5x holdout.", "percentunit", ":model_absolute_percentage_error:mean",
        "model_holdout_mean_absolute_percentage_error"))

    board.with_row(dashboard.Row("Data quality"))
    board.with_panel(graph(
        "Invalid requests by reason", "/predict requests refused with a 4xx, by the first problem's reason "
        "code (README: bad input). HighInvalidInputRatio fires above 5% of requests.", "reqps",
        [query("reason:model_input_invalid:rate5m", "{{reason}}")], width=6))
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
        "Unknown categories by feature", "Category values never seen in training, per second: predicted as "
        "all-zero one-hot, counted in the __other__ bin.", "cps",
        [query("sum by (feature) (rate(model_feature_unknown_category_total[$__rate_interval]))",
               "{{feature}}")], width=6))
    return board
