"""Plotly figures drawn from a run's metrics records, their titles and axes in the visitor's language (the catalog's
chart.* codes; a handler renders them inside shows_errors' language)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipelines.messages import text
from pipelines.panels import all_panels
from pipelines.signals import KL_WARNING, REPEAT_WARNING

COLORS = ("#4f46e5", "#dc2626", "#059669", "#d97706")
# Where a run's warning signs begin (pipelines/signals.py), drawn across their panels: a curve that crosses the line
# is what the status line's "signs of reward hacking" refers to.
WARNING_LINES = {"objective/kl": KL_WARNING, "answers/repeated_3grams": REPEAT_WARNING}
LEGEND_WIDTH = 190   # px right of the panels: each panel's own legend stands beside it
MAX_POINTS = 2000  # per series
SMOOTH_FROM = 10   # points of a train series before a smoothed line is drawn over the raw one


def ema(values, weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing), so it starts at the data."""
    smoothed, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight ** index))
    return smoothed


def _points(metrics: list[dict], key: str) -> list[tuple]:
    points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)]
    stride = max(1, len(points) // MAX_POINTS)  # a long run is drawn from every k-th point, light to send
    return points[::stride]


def training_curves(metrics: list[dict], title: str = "", smooth: bool = True, log_scale: bool = False) -> go.Figure:
    """Every curve the run logged, one panel per quantity (pipelines/panels.py), against the step. Each panel has its
    own legend beside it, naming its curves in their colours (a colour means one quantity within its panel)."""
    known = all_panels()
    panels = [panel for panel in known
              if any(_points(metrics, k) or _points(metrics, f"eval_{k}") for k in panel.keys)] or known[:1]
    heights = [2 if index == 0 else 1 for index in range(len(panels))]
    figure = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.2 / len(panels),
                           row_heights=[h / sum(heights) for h in heights], subplot_titles=[text(panel.title) for panel in panels])
    for row, panel in enumerate(panels, start=1):
        legend = "legend" if row == 1 else f"legend{row}"
        if panel.y_range:
            figure.update_yaxes(range=list(panel.y_range), row=row, col=1)
        for index, key in enumerate(panel.keys):
            color = COLORS[index % len(COLORS)]   # one colour per quantity: raw, smoothed and eval lines share it
            train = _points(metrics, key)
            if train:
                steps, values = zip(*train)
                noisy = smooth and len(train) >= SMOOTH_FROM and key != "learning_rate"
                figure.add_trace(go.Scatter(x=steps, y=values, name=key, legend=legend, legendgroup=key,
                                            showlegend=not noisy, mode="lines+markers" if len(train) < 40 else "lines",
                                            marker={"size": 4, "color": color}, line={"color": color},
                                            opacity=0.3 if noisy else 1.0), row=row, col=1)
                if noisy:  # per-step values of a small batch are noisy; the trend is what a person reads
                    figure.add_trace(go.Scatter(x=steps, y=ema(values), name=key, legend=legend, legendgroup=key,
                                                mode="lines", line={"width": 2.5, "color": color}), row=row, col=1)
            if train and key in WARNING_LINES:
                figure.add_hline(y=WARNING_LINES[key], row=row, col=1, line={"dash": "dot", "color": "#dc2626", "width": 1},
                                 annotation={"text": text("chart.hacking_line"), "font": {"color": "#dc2626", "size": 10}},
                                 annotation_position="top left")
            held_out = _points(metrics, f"eval_{key}")
            if held_out:
                steps, values = zip(*held_out)
                figure.add_trace(go.Scatter(x=steps, y=values, name=text("chart.held_out", key=key), legend=legend,
                                            legendgroup=key, mode="lines+markers", line={"dash": "dash", "color": color},
                                            marker={"size": 7, "symbol": "diamond"}), row=row, col=1)
        top = figure.layout[f"yaxis{'' if row == 1 else row}"].domain[1]
        figure.update_layout({legend: {"x": 1.01, "xanchor": "left", "y": top, "yanchor": "top", "font": {"size": 11},
                                       "tracegroupgap": 2, "bgcolor": "rgba(255,255,255,0)"}})
    if log_scale:
        figure.update_yaxes(type="log", row=1, col=1)
    figure.update_layout(height=220 + 150 * len(panels), template="plotly_white", uirevision="keep", title=title or None,
                         margin={"l": 50, "r": LEGEND_WIDTH, "t": 40 if title else 24, "b": 30}, showlegend=True)
    figure.update_xaxes(title_text=text("chart.step"), row=len(panels), col=1)
    if metrics and max(m.get("step", 0) for m in metrics) <= 12:
        figure.update_xaxes(dtick=1)  # whole steps only, not 1.5
    return figure


def length_histogram(lengths: list[int], max_length: int, title: str = "", documents: bool = False) -> go.Figure:
    """Rows per token length, with the max length drawn where truncation starts; for `documents` (raw text, packed
    into blocks of max_length rather than cut) where a block ends."""
    counted = text("chart.documents" if documents else "chart.rows")
    figure = go.Figure(go.Histogram(x=lengths, nbinsx=min(50, max(5, len(set(lengths)))), name=counted,
                                    marker={"color": "#6366f1"}))
    figure.add_vline(x=max_length, line={"dash": "dash", "color": "#dc2626"},
                     annotation={"text": text("chart.block_length" if documents else "chart.max_length",
                                              max_length=max_length), "font": {"color": "#dc2626"}})
    figure.update_layout(height=320, margin={"l": 50, "r": 20, "t": 40 if title else 24, "b": 40}, title=title or None,
                         xaxis_title=text("chart.tokens_per_document" if documents else "chart.tokens_per_row"),
                         yaxis_title=counted, template="plotly_white", bargap=0.05)
    if len(lengths) <= 10:
        figure.update_yaxes(dtick=1)   # a few rows or documents are counted whole, not 0.5 of one
    return figure


def margin_histogram(margins: list[float], title: str = "") -> go.Figure:
    """Reward(chosen) − reward(rejected) per pair: right of zero the reward model agrees with the label."""
    figure = go.Figure(go.Histogram(x=margins, nbinsx=min(40, max(5, len(margins) // 3)), marker={"color": "#10b981"}))
    figure.add_vline(x=0, line={"dash": "dash", "color": "#dc2626"})
    figure.update_layout(height=300, margin={"l": 50, "r": 20, "t": 40 if title else 24, "b": 40}, title=title or None,
                         xaxis_title=text("chart.margin"), yaxis_title=text("chart.pairs"), template="plotly_white")
    return figure


def mean_score_bars(means: dict[str, float]) -> go.Figure:
    """Mean score per checkpoint, best first."""
    ordered = sorted(means.items(), key=lambda kv: -kv[1])
    figure = go.Figure(go.Bar(x=[c for c, _ in ordered], y=[m for _, m in ordered], marker={"color": "#6366f1"}))
    figure.update_layout(height=300, margin={"l": 50, "r": 20, "t": 24, "b": 60}, yaxis_title=text("chart.mean_score"),
                         template="plotly_white")
    return figure
