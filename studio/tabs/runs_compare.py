"""Runs side by side, in the Train tab: pick 2–8 runs, one metric, aligned by step or by tokens seen; their curves
overlaid, the settings that differ and the final metrics (pipelines/run_compare.py, through api.compare_runs).

Everything is read from the runs' folders when a pick changes (or Refresh is pressed): nothing is kept here.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from pipelines import api
from pipelines.errors import StudioError
from pipelines.messages import text
from studio.charts import COLORS, LEGEND_WIDTH, SMOOTH_FROM, ema
from studio.form import on
from studio.i18n import t
from studio.identity import for_visitor, in_workspace

# Beyond the house colours, four more: up to 8 runs, each its own colour.
RUN_COLORS = (*COLORS, "#7c3aed", "#0891b2", "#db2777", "#65a30d")
MAX_RUNS = 8
PREFERRED_METRICS = ("loss", "eval_loss")   # what a sweep is usually read by, shown first when the runs have it


def build(workspace: Path) -> None:
    with gr.Accordion(t("runs_compare.title"), open=False) as box:
        with gr.Row(equal_height=True):
            picked = gr.Dropdown(choices=_run_ids(workspace), value=[], multiselect=True, max_choices=MAX_RUNS,
                                 label=t("runs_compare.runs"), scale=4)
            metric = gr.Dropdown(choices=[], value=None, label=t("runs_compare.metric"), scale=2)
            align = gr.Radio([(t("runs_compare.by_step"), "step"), (t("runs_compare.by_tokens"), "tokens")],
                             value="step", label=t("runs_compare.align"), scale=2)
            with gr.Column(scale=1, min_width=120):
                smooth = gr.Checkbox(value=True, label=t("train.smooth"))
                refresh = gr.Button(t("runs_compare.refresh"), size="sm")
        note = gr.Markdown(t("runs_compare.pick"))
        chart = gr.Plot(show_label=False)
        with gr.Row():
            settings = gr.Dataframe(label=t("runs_compare.settings"), interactive=False, wrap=True, max_height=360,
                                    elem_classes="reading-table")
            final = gr.Dataframe(label=t("runs_compare.final"), interactive=False, wrap=True, max_height=360,
                                 elem_classes="reading-table")

    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    box.expand(in_workspace(refresh_choices), [picked], [picked], **quiet)
    shown = [metric, note, chart, settings, final]
    view = for_visitor(show_runs)
    for trigger in (picked.change, metric.input, align.change, smooth.change, refresh.click):
        on(trigger, view, shown, run_ids=picked, metric=metric, align=align, smooth=smooth)
    refresh.click(in_workspace(refresh_choices), [picked], [picked], **quiet)


def _run_ids(workspace: Path) -> list[str]:
    return [row["run_id"] for row in api.list_runs(workspace)]


def refresh_choices(workspace: Path, picked: list[str] | None):
    """The runs as the disk has them now (one may have been started since), keeping the picks that still exist."""
    ids = _run_ids(workspace)
    return gr.update(choices=ids, value=[r for r in picked or [] if r in ids])


def show_runs(workspace: Path, run_ids: list[str] | None, metric: str | None, align: str = "step", smooth: bool = True):
    """The metric picker (the metrics every picked run logged), a note, the overlaid curves, the settings that
    differ and the final metrics of the picked runs."""
    run_ids = list(run_ids or [])
    empty = {"headers": [text("runs_compare.col.setting")], "data": []}
    if len(run_ids) < 2:
        return gr.update(choices=[], value=None), text("runs_compare.pick"), None, empty, empty
    try:
        result = api.compare_runs(workspace, run_ids, align)
    except StudioError as exc:   # a run with no token count, a run deleted since: say so, draw nothing
        return gr.update(choices=[], value=None), f"❌ {exc.text()}", None, empty, empty
    metrics = list(result["metrics"])
    chosen = metric if metric in metrics else next((m for m in PREFERRED_METRICS if m in metrics),
                                                   metrics[0] if metrics else None)
    notes = [] if metrics else [text("runs_compare.no_shared")]
    if not result["settings"]:
        notes.append(text("runs_compare.same_settings"))
    figure = overlay(result, chosen, smooth) if chosen else None
    widths = _widths(len(result["runs"]))
    return (gr.update(choices=metrics, value=chosen), "\n\n".join(notes), figure,
            gr.update(value=settings_table(result), column_widths=widths),
            gr.update(value=final_table(result), column_widths=widths))


def _widths(runs: int) -> list[str]:
    """The first column (a dotted setting, a metric's name) wide enough to read whole; the runs share the rest."""
    first = 34
    return [f"{first}%", *[f"{(100 - first) / runs:.0f}%"] * runs]


def overlay(result: dict, metric: str, smooth: bool = True) -> go.Figure:
    """One curve per run, in its own colour, on one axis: a noisy training curve is drawn faint with its smoothed
    trend over it (as the run's own chart does, studio/charts.py); eval points are marked."""
    figure = go.Figure()
    held_out = metric.startswith("eval_")
    for index, (run_id, points) in enumerate(result["metrics"][metric].items()):
        if not points:
            continue
        color = RUN_COLORS[index % len(RUN_COLORS)]
        xs, ys = zip(*points)
        noisy = smooth and not held_out and len(points) >= SMOOTH_FROM and metric != "learning_rate"
        figure.add_trace(go.Scatter(x=xs, y=ys, name=run_id, legendgroup=run_id, showlegend=not noisy,
                                    mode="lines+markers" if held_out or len(points) < 40 else "lines",
                                    marker={"size": 7 if held_out else 4, "color": color,
                                            "symbol": "diamond" if held_out else "circle"},
                                    line={"color": color, "dash": "dash" if held_out else "solid"},
                                    opacity=0.3 if noisy else 1.0))
        if noisy:   # per-step values of a small batch are noisy; the trend is what one compares
            figure.add_trace(go.Scatter(x=xs, y=ema(ys), name=run_id, legendgroup=run_id, mode="lines",
                                        line={"width": 2.5, "color": color}))
    figure.update_layout(height=420, template="plotly_white", uirevision="keep", title=metric,
                         margin={"l": 50, "r": LEGEND_WIDTH, "t": 40, "b": 40},
                         legend={"x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top", "font": {"size": 11}},
                         xaxis_title=text("chart.step" if result["align"] == "step" else "runs_compare.by_tokens"),
                         yaxis_title=metric)
    return figure


def _cell(value):
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else float(f"{value:.4g}")
    return "—" if value is None else value


def settings_table(result: dict) -> dict:
    """A row per setting that differs, a column per run."""
    ids = [row["run_id"] for row in result["runs"]]
    rows = [[key, *(str(_cell(values[i])) for i in ids)] for key, values in result["settings"].items()]
    return {"headers": [text("runs_compare.col.setting"), *ids], "data": rows}


def final_table(result: dict) -> dict:
    """A row per metric any run logged (the shared ones first), its last value in each run's column; best_eval_loss
    named in the visitor's language."""
    ids = [row["run_id"] for row in result["runs"]]
    final = result["final"]
    keys = list(dict.fromkeys([*(k for k in final[ids[0]] if all(k in final[i] for i in ids)),
                               *(k for i in ids for k in final[i])]))
    label = {"best_eval_loss": text("runs_compare.best_eval_loss")}
    rows = [[label.get(key, key), *(str(_cell(final[i].get(key))) for i in ids)] for key in keys]
    return {"headers": [text("runs_compare.col.metric"), *ids], "data": rows}
