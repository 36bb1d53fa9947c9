"""Plotly figures drawn from a run's metrics records."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SERIES = (("loss", "loss", 1), ("eval_loss", "eval loss", 1), ("learning_rate", "learning rate", 2), ("grad_norm", "grad norm", 3))


MAX_POINTS = 2000  # per series
SMOOTH_FROM = 10   # points of loss before a smoothed line is drawn over the raw one


def ema(values, weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing), so it starts at the data."""
    smoothed, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight ** index))
    return smoothed


def training_curves(metrics: list[dict], title: str = "") -> go.Figure:
    """Loss (with eval loss when present), learning rate and gradient norm against the step."""
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.5, 0.25, 0.25],
                           subplot_titles=("loss", "learning rate", "grad norm"))
    for key, label, row in SERIES:
        points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if not points:
            continue
        stride = max(1, len(points) // MAX_POINTS)  # a long run is drawn from every k-th point, light to send
        steps, values = zip(*points[::stride])
        noisy = key == "loss" and len(points) >= SMOOTH_FROM
        figure.add_trace(go.Scatter(x=steps, y=values, name=label, mode="lines+markers" if len(points) < 40 else "lines",
                                    marker={"size": 4}, opacity=0.35 if noisy else 1.0), row=row, col=1)
        if noisy:  # per-step loss of a small batch is noisy; the trend is what a person reads
            figure.add_trace(go.Scatter(x=steps, y=ema(values), name=f"{label} (smoothed)", mode="lines",
                                        line={"width": 2.5}), row=row, col=1)
    figure.update_layout(height=460, margin={"l": 50, "r": 20, "t": 40 if title else 24, "b": 30}, title=title or None,
                         legend={"orientation": "h", "y": -0.16}, template="plotly_white", uirevision="keep")
    figure.update_xaxes(title_text="step", row=3, col=1)
    if metrics and max(m.get("step", 0) for m in metrics) <= 12:
        figure.update_xaxes(dtick=1)  # whole steps only, not 1.5
    return figure


def length_histogram(lengths: list[int], max_length: int, title: str = "") -> go.Figure:
    """Rows per token length, with the max length drawn where truncation starts."""
    figure = go.Figure(go.Histogram(x=lengths, nbinsx=min(50, max(5, len(set(lengths)))), name="rows",
                                    marker={"color": "#6366f1"}))
    figure.add_vline(x=max_length, line={"dash": "dash", "color": "#dc2626"},
                     annotation={"text": f"max_length {max_length}", "font": {"color": "#dc2626"}})
    figure.update_layout(height=320, margin={"l": 50, "r": 20, "t": 40 if title else 24, "b": 40}, title=title or None,
                         xaxis_title="tokens per row (chat template included)", yaxis_title="rows",
                         template="plotly_white", bargap=0.05)
    return figure
