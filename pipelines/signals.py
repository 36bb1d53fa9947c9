"""Warning signs read from a run's metrics while it trains: patterns that mean preference learning is going wrong.

Each check looks at the training records only (eval records are sparser) and smooths over a short window,
so one noisy step does not raise an alarm.
"""

from __future__ import annotations

WINDOW = 5            # logged steps averaged per reading
MIN_STEPS = 2 * WINDOW
MIN_PEAK_MARGIN = 0.05   # a smaller peak is noise, and its fall is no collapse


def _series(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if m.get("split") == "train" and isinstance(m.get(key), (int, float))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def warning_signs(stage: str, metrics: list[dict]) -> list[str]:
    """Sentences for the run page; empty while nothing looks wrong."""
    if stage == "reward":
        return _length_signs(metrics)
    if stage not in ("dpo", "kto", "orpo"):
        return []
    signs = []
    margins = _series(metrics, "rewards/margins")
    if len(margins) >= MIN_STEPS:
        smoothed = [_mean(margins[i:i + WINDOW]) for i in range(len(margins) - WINDOW + 1)]
        peak, now = max(smoothed), smoothed[-1]
        if peak > MIN_PEAK_MARGIN and now < 0.25 * peak:
            signs.append(f"Margin collapse: rewards/margins fell from {peak:.3g} to {now:.3g}; the model no longer "
                         "separates chosen from rejected. Lower the learning rate or check the data.")
    chosen, rejected = _series(metrics, "rewards/chosen"), _series(metrics, "rewards/rejected")
    if stage != "orpo" and min(len(chosen), len(rejected)) >= MIN_STEPS:
        early_c, late_c = _mean(chosen[:WINDOW]), _mean(chosen[-WINDOW:])
        early_r, late_r = _mean(rejected[:WINDOW]), _mean(rejected[-WINDOW:])
        # Chosen drifting a little below zero while rejected falls much further is healthy; both falling alike is not.
        if late_c < 0 and late_r < early_r and early_c - late_c >= 0.5 * (early_r - late_r):
            signs.append(f"Chosen and rejected rewards are both falling (chosen {late_c:.3g}, rejected {late_r:.3g}): "
                         "the model makes every answer less likely, not just the rejected ones; a known DPO failure. "
                         "Raise beta, lower the learning rate, or add an SFT term.")
    return signs


def _length_signs(metrics: list[dict]) -> list[str]:
    """A reward model whose latest rewards follow answer length (pipelines/stages/reward.py logs it at each save)."""
    from pipelines.scoring import LENGTH_CORRELATION_WARNING

    readings = [m["length_correlation"] for m in metrics if isinstance(m.get("length_correlation"), (int, float))]
    if not readings or abs(readings[-1]) < LENGTH_CORRELATION_WARNING:
        return []
    return [f"Rewards follow answer length (correlation {readings[-1]:+.2f} at the last save): the model may be "
            "learning 'longer is better' rather than quality, a known reward-hacking path. Balance the lengths of "
            "chosen and rejected answers in the data."]
