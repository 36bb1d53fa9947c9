"""The chart panels a run's metrics are drawn in: the shared ones here, and the groups each stage declares
(`panels` in pipelines/stages/). A panel is drawn when the run logged any of its keys; each key's eval_ twin is
drawn in the same panel, dashed, so train and held-out curves are read together. Titles are catalog codes."""

from __future__ import annotations

from dataclasses import dataclass

SHARE = (-0.05, 1.05)          # a share between 0 and 1 on a fixed axis: stuck at 0 reads as 0, not mid-panel
CORRELATION = (-1.05, 1.05)    # from -1 to 1, fixed for the same reason


@dataclass(frozen=True)
class Panel:
    title: str                      # catalog code of its title (chart.*)
    keys: tuple[str, ...]           # the metrics drawn in it
    y_range: tuple | None = None    # a fixed y axis, or None to fit the curves


LOSS = Panel("chart.loss", ("loss", "nll_loss"))
ACCURACY = Panel("chart.accuracy", ("rewards/accuracies", "accuracy"), SHARE)
# How fast the run goes (pipelines/throughput.py): every stage logs them, so they come last with the learning rate.
THROUGHPUT = (Panel("chart.tokens_per_second", ("tokens_per_second",)), Panel("chart.mfu", ("mfu",), SHARE))
SHARED_LAST = (Panel("chart.learning_rate", ("learning_rate",)), Panel("chart.grad_norm", ("grad_norm",)), *THROUGHPUT)

REWARD_MODEL = (
    ACCURACY,
    Panel("chart.reward_margin", ("margin", "mean_reward")),
    Panel("chart.length_correlation", ("length_correlation",), CORRELATION),
)
PREFERENCE = (
    Panel("chart.rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
    ACCURACY,
    Panel("chart.logps", ("logps/chosen", "logps/rejected")),
    Panel("chart.prefers_chosen", ("prefers_chosen/first_token", "prefers_chosen/total", "prefers_chosen/per_token"),
          SHARE),
)
RL = (
    Panel("chart.rl_objective", ("objective/scores", "objective/rule_scores", "objective/rlhf_reward", "reward")),
    Panel("chart.kl", ("kl", "objective/kl")),
    Panel("chart.ppo_losses", ("loss/policy", "loss/value")),
    Panel("chart.ppo_health", ("policy/clipfrac", "value/clipfrac", "policy/approx_kl", "value/explained_variance")),
    Panel("chart.score_spread", ("objective/scores_std", "reward_std", "frac_reward_zero_std")),
    Panel("chart.response_length", ("response_length", "completions/mean_length")),
    Panel("chart.repetition", ("answers/repeated_3grams",), SHARE),
)
BEST_OF_N = (Panel("chart.best_of_n", ("best_score", "mean_score", "worst_score")),)


def all_panels() -> list[Panel]:
    """Loss first, then every stage's panels in road order (each once), then the learning rate, grad norm and
    throughput."""
    from pipelines.stages import all_stages

    panels = [LOSS]
    for stage in all_stages():
        panels.extend(panel for panel in stage.panels if panel not in panels)
    return panels + [panel for panel in SHARED_LAST if panel not in panels]
