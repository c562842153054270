"""Panel, query and variable builders shared by the dashboards.

Every panel goes through these helpers, so every panel gets the provisioned datasource,
a title, a description and a unit: the verification test holds them to that.
"""
import re

from grafana_foundation_sdk.builders import barchart, dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef, DataTransformerConfig, DynamicConfigValue, Threshold, ThresholdsMode, VariableHide,
    VariableRefresh, VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# grafana/provisioning/datasources/prometheus.yml provisions this uid; tests check they agree
DATASOURCE_UID = "prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
TAG = "model-serving"  # every dashboard carries it; their links to each other follow it
TASKS = ("regression", "classification")  # model_info's task label: what the model card says the model does
# a metric or rule name, or one aggregation of one: what reads as one term before `and` without parentheses
SIMPLE = re.compile(r"[\w:]+(\{[^{}]*\})?|\w+( by \([\w, ]*\))? ?\([\w:]+(\{[^{}]*\})?\)")


def only(task: str, expr: str) -> str:
    """`expr` while the model being served is a `task` model; nothing at all otherwise.

    model_info is 1 for the model being served and 0 for one a reload replaced (webapp/metrics.py), so
    the guard follows the live model at every step of a graph. `and on()` keeps the left side's labels:
    legends and table columns are those of `expr`.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    left = expr if SIMPLE.fullmatch(expr) else f"({expr})"
    return f'{left} and on() (max(model_info{{task="{task}"}}) == 1)'


def new_dashboard(title: str, uid: str, description: str, tag: str, since: str = "now-30m") -> dashboard.Dashboard:
    """A dashboard with what they all share: the project tag, 30 s refresh, browser time."""
    return (dashboard.Dashboard(title).uid(uid).description(description).tags([TAG, tag])
            .time(since, "now").refresh("30s").timezone("browser"))


def query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    """A range query, as a time series panel asks for it."""
    return (prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend).ref_id(ref)
            .range())


def instant(expr: str, legend: str = "__auto", ref: str = "A", table: bool = False) -> prometheus.Dataquery:
    """An instant query: the latest value only (stats, bar charts)."""
    q = prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend).ref_id(ref).instant()
    return q.format(PromQueryFormat.TABLE) if table else q


def thresholds(*steps: tuple) -> dashboard.ThresholdsConfig:
    """(value, color) steps; the first value is None (the base colour)."""
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in steps]))


def _common(panel, title: str, description: str, unit: str, targets, width: int, height: int):
    panel.title(title).description(description).unit(unit).datasource(DATASOURCE).span(width).height(height)
    for i, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def graph(title: str, description: str, unit: str, targets, *, width: int = 12, height: int = 8,
          min_val: float | None = 0, threshold: float | None = None, stacked: bool = False,
          line_steps: tuple | None = None):
    """A time series panel; `threshold` draws a dashed red line at that value. `line_steps` instead: dashed
    lines at the values of (value, color) steps (the first value None), coloured as the steps say: a limit
    that is bad below it, or a minimum count, is ((None, "red"), (limit, "green"))."""
    panel = _common(timeseries.Panel(), title, description, unit, targets, width, height)
    panel.legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))
    panel.tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING))
    panel.fill_opacity(10).line_width(1).show_points(common.VisibilityMode.NEVER)
    if min_val is not None:
        panel.min(min_val)
    if stacked:
        panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if threshold is not None:
        line_steps = ((None, "green"), (threshold, "red"))
    if line_steps is not None:
        panel.thresholds(thresholds(*line_steps))
        dashed_line = common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        panel.thresholds_style(dashed_line)
    return panel


def dashed(panel, series_name: str, color: str = "text"):
    """Draw one series (a reference value, such as the holdout error, or a limit) as a dashed line."""
    return panel.override_by_name(series_name, [
        DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
        DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
        DynamicConfigValue(id_val="custom.fillOpacity", value=0),
    ])


def single(title: str, description: str, unit: str, target, *, width: int = 4, height: int = 4,
           steps: tuple = ((None, "green"),), decimals: int | None = None, text_mode=None):
    """A stat panel showing the latest value, coloured by `steps`."""
    panel = _common(stat.Panel(), title, description, unit, [target], width, height)
    panel.thresholds(thresholds(*steps)).color_mode(common.BigValueColorMode.VALUE)
    panel.graph_mode(common.BigValueGraphMode.AREA)
    panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if decimals is not None:
        panel.decimals(decimals)
    if text_mode is not None:
        panel.text_mode(text_mode).graph_mode(common.BigValueGraphMode.NONE)
    return panel


def _convert(field: str, to: str) -> DataTransformerConfig:
    return DataTransformerConfig(id_val="convertFieldType", options={
        "conversions": [{"targetField": field, "destinationType": to}], "fields": {}})


def _merged(panel, x_field: str, rename: dict, exclude: tuple, numeric: bool = False):
    """One row per `x_field` value from instant table queries: merged on their labels, renamed, sorted.

    `numeric`: the values are numbers written as label text (a histogram's `le`), which sort as text
    ("1e+06" before "2"): sorted as numbers, then turned back into text, since a bar chart's x axis is
    a text (or time) field."""
    panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    panel.with_transformation(DataTransformerConfig(id_val="organize", options={
        "excludeByName": {name: True for name in ("Time", *exclude)},
        "renameByName": rename,
    }))
    if numeric:
        panel.with_transformation(_convert(x_field, "number"))
    panel.with_transformation(DataTransformerConfig(id_val="sortBy", options={"sort": [{"field": x_field}]}))
    if numeric:
        panel.with_transformation(_convert(x_field, "string"))
    return panel


def bars(title: str, description: str, unit: str, targets, *, x_field: str, rename: dict, width: int = 12,
         height: int = 8, numeric_x: bool = False):
    """A bar chart of instant table queries merged into one row per `x_field` value (in numeric order
    with `numeric_x`)."""
    panel = _common(barchart.Panel(), title, description, unit, targets, width, height)
    panel.x_field(x_field).x_tick_label_rotation(-45).show_value(common.VisibilityMode.NEVER).min(0)
    panel.legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True))
    return _merged(panel, x_field, rename, ("feature",), numeric_x)


def merged_table(title: str, description: str, unit: str, targets, *, x_field: str, rename: dict,
                 width: int = 12, height: int = 8, decimals: int | None = None):
    """A table of instant table queries merged into one row per `x_field` value, a column per query."""
    panel = _common(table.Panel(), title, description, unit, targets, width, height)
    if decimals is not None:
        panel.decimals(decimals)
    return _merged(panel, x_field, rename, ())


def matrix_table(title: str, description: str, unit: str, target, *, rows: str, columns: str, width: int = 12,
                 height: int = 8, decimals: int | None = None):
    """A table of one instant table query laid out as a matrix: a row per `rows` label value, a column per
    `columns` label value (Grafana's "Grouping to matrix"; its first column is headed `rows\\columns`)."""
    panel = _common(table.Panel(), title, description, unit, [target], width, height)
    if decimals is not None:
        panel.decimals(decimals)
    # one query: Prometheus's table frame names its value column "Value" (with more, "Value #<ref>")
    panel.with_transformation(DataTransformerConfig(id_val="groupingToMatrix", options={
        "rowField": rows, "columnField": columns, "valueField": "Value"}))
    return panel


def bucket_heatmap(title: str, description: str, unit: str, target, *, width: int = 12, height: int = 8,
                   y_unit: str | None = None):
    """A heatmap of a Prometheus histogram's buckets (the query returns one series per `le`); the y axis is
    in `y_unit` (default: `unit`)."""
    panel = _common(heatmap.Panel(), title, description, unit, [target.format(PromQueryFormat.HEATMAP)],
                    width, height)
    panel.calculate(False).y_axis(heatmap.YAxisConfig().unit(y_unit or unit))
    panel.rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
    return panel


def label_variable(name: str, label: str, metric: str, *, multi: bool, description: str = "",
                   of: str | None = None, hidden: bool = False):
    """A variable listing the values of label `of` (default: `name`) on `metric` (Grafana's label_values()).

    No default value: Grafana selects the first one listed, so no model's feature or unit is written here.
    """
    variable = (dashboard.QueryVariable(name).label(label).description(description).datasource(DATASOURCE)
                .query({"query": f"label_values({metric}, {of or name})", "refId": f"{name}-values",
                        "qryType": 1})
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))
    if multi:
        variable.multi(True).include_all(True).all_value(".*")
    if hidden:
        variable.hide(VariableHide.HIDE_VARIABLE)
    return variable


def model_variables() -> list:
    """$target and $target_unit: what the live model predicts and in which unit (model_info's labels).

    Titles, legends and descriptions say the unit with them, and panels keep a neutral unit, so a
    dashboard fits any model. Hidden: they follow the model, nobody picks them.
    """
    return [
        label_variable("target", "Target", "model_info", multi=False, hidden=True,
                       description="What the live model predicts (model_info's target label)"),
        label_variable("target_unit", "Unit", "model_info", of="unit", multi=False, hidden=True,
                       description="The unit of the target, so of predictions and errors (model_info's unit label)"),
    ]
