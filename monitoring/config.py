"""Every threshold, window and `for:` duration of the alerts, recording rules and dashboards, once.

Nothing here depends on the model being served: limits on model error are factors of the
holdout values the live model's card exports (model_holdout_* gauges), so a new model brings
its own baseline. Build with another Config (dataclasses.replace(CONFIG, ...)) to tune a deployment:
the rules, the alert texts and the dashboards' threshold lines all follow.
"""
from dataclasses import dataclass, field

from model.drift import FALSE_ALARM_RATE, WINDOW_ROWS


@dataclass(frozen=True)
class DashboardUids:
    # the alerts' `dashboard` links point at these: a uid renamed here moves both ends at once
    api: str = "api-golden-signals"
    model: str = "model-quality-drift"
    exporter: str = "replay-exporter"
    # a deployment of several versions: each other version against the primary, signal by signal
    canary: str = "model-versions"


@dataclass(frozen=True)
class Config:
    # --- windows ---------------------------------------------------------------------------------
    # Prometheus scrapes and evaluates every 15 s (prometheus.yml): the promtool tests evaluate at the
    # same interval, since a subquery without a step steps at it, and Grafana's alert annotation too
    evaluation_interval: str = "15s"
    # 5 minutes is 20 scrapes: enough samples for rate() and PSI to settle, short enough that an
    # alert's `for:` rather than the window sets how fast it speaks
    short_window: str = "5m"
    # feedback (the actual values) arrives slower than predictions: error is judged over an hour
    long_window: str = "1h"

    # --- availability ----------------------------------------------------------------------------
    # a minute of failed scrapes (4 at 15 s) rules out one slow scrape or a restart's gap
    api_down_for: str = "1m"
    # a replica killed outright leaves DNS discovery within ~20 s, so up == 0 never lasts ApiDown's
    # minute: fewer targets than at any time in this lookback is the signal; a deliberate
    # scale-down fires it for as long, which is how long a silence has to last
    replica_lookback: str = "15m"
    replica_lost_for: str = "1m"

    # --- golden signals --------------------------------------------------------------------------
    # the bench answers no 5xx at full load: 1% is far outside normal
    error_ratio_limit: float = 0.01
    error_ratio_for: str = "5m"
    # the dashboard turns orange at a tenth of the limit: errors have started, nothing pages yet
    error_ratio_warn: float = 0.001
    # the project's latency target: p99 of /predict under 20 ms; the bench measures well under it at
    # full load on 2 cores (bench/README.md). 20 ms is an edge of the latency histogram's buckets, so
    # histogram_quantile() crosses it exactly rather than somewhere inside a bucket
    latency_route: str = "/predict"
    latency_quantile: float = 0.99
    latency_target_seconds: float = 0.020
    latency_for: str = "10m"
    # half the target: the dashboard's early warning
    latency_warn_seconds: float = 0.010
    # CPU per sync worker, in cores: the bench's full load keeps workers near 1.0, so 0.9 for ten
    # minutes means requests are queueing
    saturation_limit: float = 0.9
    saturation_for: str = "10m"
    saturation_warn: float = 0.7
    # any refused metric write matters (counts lag, and die with the worker): a minute rules out a
    # single transient ENOSPC that the next write repairs
    metrics_write_for: str = "1m"
    # zero predictions for ten minutes: longer than any pause of a healthy client
    no_traffic_for: str = "10m"

    # --- drift -----------------------------------------------------------------------------------
    # PSI > 0.2 is the usual "significant shift"; 0.1 to 0.2 is "moderate" (the dashboards' orange)
    psi_limit: float = 0.2
    psi_moderate: float = 0.1
    # an empty bin has ln(0) in PSI: both shares are floored here. The floor also caps what one
    # emptied bin adds: a bin that held 10% and is now empty adds (0.1 - 1e-4) ln(0.1 / 1e-4) = 0.69
    psi_floor: float = 1e-4
    # the card's distribution thresholds (model/drift.py) are calibrated on windows of exactly this
    # many rows: a smaller window is noisier than they allow for, a larger one only quieter, so the
    # drift alerts wait for this many. PSI needs as many: sampling noise alone lifts it (about
    # (bins - 1) / rows on average, with a long tail); replaying the reference model's holdout,
    # windows of 500 rows stayed under 0.128 on every feature while windows of 200 reached 0.315
    drift_min_rows: int = WINDOW_ROWS
    # the false-alarm rate per window of each drift alert those thresholds were calibrated for, all its
    # quantities and statistics together (model.drift.statistic_rate splits it evenly over them): the
    # card brings the thresholds, so this only says what they mean (docs and dashboards)
    drift_false_alarm_rate: float = FALSE_ALARM_RATE
    drift_for: str = "10m"

    # --- quality from feedback -------------------------------------------------------------------
    # live MAE (or MAPE) over the long window above this factor times the card's holdout value:
    # measured on the Ames example: replayed windows of >= 200 rows stay under 1.09x both, a real
    # shift of the target (the target-shock scenario) gives 3.4x MAE and 2.3x MAPE
    quality_factor: float = 1.5
    # the MAE of n pairs has a standard error of about MAE / sqrt(n) (absolute errors spread about as
    # wide as their mean): 7% at 200 pairs, so 1.5x is several standard errors away from noise
    quality_min_feedback: int = 200
    quality_for: str = "15m"
    # classifiers: accuracy, macro F1 or ROC AUC over the long window this far (absolute) below the card's
    # holdout value. At the 200 pairs above, accuracy near 0.9 has a standard error of
    # sqrt(0.9 * 0.1 / 200) = 0.021, so 0.1 is over four of them: noise alone does not reach it
    classification_margin: float = 0.1
    # mean top probability over the short window this far (absolute) below the card's holdout mean.
    # A mean of probabilities in [0.5, 1] moves little: a spam model near 0.9 with a spread of about
    # 0.15 has a standard error of 0.15 / sqrt(500) = 0.007 over drift_min_rows rows, so 0.05 is seven
    # of them, while inputs the model has not seen pull the mean towards 1 / classes well past it
    confidence_margin: float = 0.05

    # --- data quality ----------------------------------------------------------------------------
    # the replay sends no invalid request, the bad-requests scenario 20%: 5% is a client sending a
    # wrong schema, not the odd typo
    invalid_ratio_limit: float = 0.05
    invalid_ratio_for: str = "10m"

    # --- several versions: a candidate (or shadow) against the primary ---------------------------------
    # CanaryWorse compares each other version with the primary over the same windows, on the same
    # traffic split: a candidate on a share of the requests, a shadow on a copy of its share of them.
    # Failed calls (the model raising on valid input): one percentage point over the primary's ratio,
    # the same size as HighErrorRatio's whole limit
    canary_error_margin: float = 0.01
    # p99 of the time in the model 1.5x the primary's: a tree ensemble twice the size, or a path that
    # lost its compiled trees, shows; run-to-run noise of p99 over 200 calls does not reach it
    canary_latency_factor: float = 1.5
    # ...once its p99 in the model is over a millisecond: about what HTTP, validation and metrics cost a
    # one-row request, so a faster model makes no difference a client sees. Below it the ratio is noise:
    # the inference buckets step 2-2.5x, and two equal compiled models (~50 us) land a bucket apart
    canary_latency_floor_seconds: float = 0.001
    # PSI of its predictions against the primary's live predictions, on the primary's bins: as the
    # drift limit, the usual "significant shift". Two live samples each of drift_min_rows rows
    canary_psi_limit: float = 0.2
    # MAE from feedback 1.2x the primary's over the long window: at quality_min_feedback pairs a
    # side the MAE's standard error is about 7% (see quality_min_feedback), so 20% is about two of
    # the difference's standard errors (sqrt 2 x 7% = 10%): a real gap, not noise of one window
    canary_quality_factor: float = 1.2
    # accuracy this far (absolute) below the primary's: at 200 pairs a side, accuracy near 0.9 has a
    # standard error of 0.021, the difference sqrt 2 x 0.021 = 0.03; 0.05 is well outside it
    canary_accuracy_margin: float = 0.05
    # calls in the short window each side before the error ratio and p99 are compared: a p99 of fewer
    # calls is one of the slowest few
    canary_min_calls: int = 200
    canary_for: str = "10m"

    # --- the replay exporter ---------------------------------------------------------------------
    # as long as the rate window: a stall is a window without a row, confirmed once
    exporter_stalled_for: str = "5m"

    # --- links -----------------------------------------------------------------------------------
    dashboards: DashboardUids = field(default_factory=DashboardUids)
    # Grafana's base URL is Prometheus's external label grafana_url (one setting, GRAFANA_ROOT_URL);
    # empty when there is no Grafana, and then the link is empty rather than a dangling path
    grafana_link: str = "{{ with $externalLabels.grafana_url }}{{ . }}/d/<uid>{{ end }}"

    def link(self, uid: str) -> str:
        """The `dashboard` annotation of an alert explained by dashboard `uid`."""
        return self.grafana_link.replace("<uid>", uid)


CONFIG = Config()
