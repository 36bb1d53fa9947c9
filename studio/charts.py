"""Plotly figures drawn from a run's metrics records."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SERIES = (("loss", "loss", 1), ("eval_loss", "eval loss", 1), ("learning_rate", "learning rate", 2), ("grad_norm", "grad norm", 3))


def training_curves(metrics: list[dict], title: str = "") -> go.Figure:
    """Loss (with eval loss when present), learning rate and gradient norm against the step."""
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.5, 0.25, 0.25],
                           subplot_titles=("loss", "learning rate", "grad norm"))
    for key, label, row in SERIES:
        points = [(m["step"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            figure.add_trace(go.Scatter(x=steps, y=values, name=label, mode="lines+markers" if len(points) < 40 else "lines",
                                        marker={"size": 4}), row=row, col=1)
    figure.update_layout(height=460, margin={"l": 50, "r": 20, "t": 40 if title else 24, "b": 30}, title=title or None,
                         legend={"orientation": "h", "y": -0.08}, template="plotly_white", uirevision="keep")
    figure.update_xaxes(title_text="step", row=3, col=1)
    return figure
