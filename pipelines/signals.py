"""Warning signs read from a run's metrics while it trains: patterns that mean preference learning is going wrong.

Each check looks at the training records only (eval records are sparser) and smooths over a short window,
so one noisy step does not raise an alarm. A sign is a catalog message (signals.*): the run page shows it in the
visitor's language, the run log in English.
"""

from __future__ import annotations

from pipelines.messages import Message

WINDOW = 5            # logged steps averaged per reading
MIN_STEPS = 2 * WINDOW
MIN_PEAK_MARGIN = 0.05   # a smaller peak is noise, and its fall is no collapse


def _series(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if m.get("split") == "train" and isinstance(m.get(key), (int, float))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# Preference stages: the policy's own preference between a pair's answers (pipelines/preference_check.py).
RANKS_RIGHT = 0.75       # rewards/accuracies at which the run looks like a success by its own metrics
# RL stages.
KL_WARNING = 6.0         # nats per answer (the sum over its tokens): the policy makes its answers e^6 ≈ 400× likelier
REPEAT_WARNING = 0.3     # share of an answer's 3-word phrases that repeat an earlier one
LENGTH_GROWTH = 1.5      # answers this many times longer than at the start
# A spread of scores this small a share of the reward model's margin on its own pairs, while the score has not
# risen by SCORE_RISE of that margin: the policy never samples what the reward model prefers.
NEAR_FLAT_SHARE = 0.05
SCORE_RISE = 0.25


def warning_signs(stage: str, metrics: list[dict], rule_reward: bool = False) -> list[str]:
    """Sentences for the run page, in the visitor's language; empty while nothing looks wrong. rule_reward: an RL run
    scored by rule files alone, no reward model (pipelines/rl/rewards.rule_only)."""
    return [sign.text() for sign in signs_by_kind(stage, metrics, rule_reward).values()]


def signs_by_kind(stage: str, metrics: list[dict], rule_reward: bool = False) -> dict[str, Message]:
    """{kind: message}: the kind stays the same while the sentence's numbers move (the run log prints each kind once).
    Which signs a stage watches for, its declaration says (`warning_signs`: one of the functions below)."""
    from pipelines.stages import get_stage

    declared = get_stage(stage)
    return declared.warning_signs(stage, metrics, rule_reward) if declared and declared.warning_signs else {}


def reward_model_signs(stage: str, metrics: list[dict], rule_reward: bool = False) -> dict[str, Message]:
    return _length_signs(metrics)


def rl_signs(stage: str, metrics: list[dict], rule_reward: bool = False) -> dict[str, Message]:
    return {**_flat_score_signs(stage, metrics, rule_reward), **_reward_hacking_signs(stage, metrics)}


def preference_signs(stage: str, metrics: list[dict], rule_reward: bool = False) -> dict[str, Message]:
    signs = _greedy_signs(stage, metrics)
    margins = _series(metrics, "rewards/margins")
    if len(margins) >= MIN_STEPS:
        smoothed = [_mean(margins[i:i + WINDOW]) for i in range(len(margins) - WINDOW + 1)]
        peak, now = max(smoothed), smoothed[-1]
        if peak > MIN_PEAK_MARGIN and now < 0.25 * peak:
            signs["margin_collapse"] = Message("signals.margin_collapse", peak=peak, now=now)
    chosen, rejected = _series(metrics, "rewards/chosen"), _series(metrics, "rewards/rejected")
    if stage != "orpo" and min(len(chosen), len(rejected)) >= MIN_STEPS:
        early_c, late_c = _mean(chosen[:WINDOW]), _mean(chosen[-WINDOW:])
        early_r, late_r = _mean(rejected[:WINDOW]), _mean(rejected[-WINDOW:])
        # Chosen drifting a little below zero while rejected falls much further is healthy; both falling alike is not.
        if late_c < 0 and late_r < early_r and early_c - late_c >= 0.5 * (early_r - late_r):
            signs["both_falling"] = Message("signals.both_falling", chosen=late_c, rejected=late_r)
    return signs


def _greedy_signs(stage: str, metrics: list[dict]) -> dict[str, Message]:
    """The run ranks the pairs right against the reference, but the policy itself still prefers the rejected answer
    where the two first differ: greedy answers stay as they were."""
    first_token = _series(metrics, "prefers_chosen/first_token")
    if not first_token or first_token[-1] >= 0.5:
        return {}
    if stage == "kto":   # KTO logs no accuracy: its success is the desirable answers' reward staying above the others'
        margins = _series(metrics, "rewards/margins")
        ranks_right = len(margins) >= WINDOW and min(margins[-WINDOW:]) > 0
    else:
        accuracies = _series(metrics, "rewards/accuracies")
        ranks_right = len(accuracies) >= WINDOW and _mean(accuracies[-WINDOW:]) >= RANKS_RIGHT
    if not ranks_right:
        return {}
    rejected_share = round(100 * (1 - first_token[-1]))
    code = "signals.greedy_unchanged_dpo" if stage == "dpo" else "signals.greedy_unchanged"   # DPO has an SFT term
    return {"greedy_unchanged": Message(code, share=rejected_share)}


def _flat_score_signs(stage: str, metrics: list[dict], rule_reward: bool) -> dict[str, Message]:
    """Every score of the latest update was the same: advantages carry no reward signal, so nothing is learned."""
    key, flat_when = ("objective/scores_std", 0.0) if stage == "ppo" else ("frac_reward_zero_std", 1.0)
    readings = _series(metrics, key)
    if not readings:
        return {}
    if abs(readings[-1] - flat_when) > 1e-9:
        return _little_to_learn_signs(metrics) if stage == "ppo" else {}
    scores = _series(metrics, "objective/scores" if stage == "ppo" else "reward")
    if len(scores) > 1 and scores[-1] > scores[0] + 1e-9:   # all alike because all now earn more: it learned
        return {}
    flat = sum(abs(r - flat_when) <= 1e-9 for r in readings)
    what = Message("signals.same_score_ppo" if stage == "ppo" else "signals.same_score_groups")
    more = Message("signals.more_batch") if stage == "ppo" else Message("signals.more_generations", stage=stage)
    # A rule that never fires gains from a reward model's graded scores; a reward model that scores everything
    # alike has not learned what tells these answers apart.
    source = Message("signals.use_reward_model" if rule_reward else "signals.check_reward_model")
    return {"flat_scores": Message("signals.flat_scores", what=what, flat=flat, updates=len(readings), more=more,
                                   source=source)}


def _little_to_learn_signs(metrics: list[dict]) -> dict[str, Message]:
    """PPO against a reward model whose scores of the sampled answers barely differ, measured against how far apart
    it scores its own training pairs, while the score does not rise: the policy never samples what the reward model
    prefers (an SFT model that always stops before a sign-off), so there is nothing better to move toward."""
    spread, scores = _series(metrics, "objective/scores_std"), _series(metrics, "objective/scores")
    margins = _series(metrics, "reward_model/margin")
    if len(spread) < WINDOW or len(scores) < WINDOW or not margins or margins[-1] <= 0:
        return {}
    margin, now = margins[-1], _mean(spread[-WINDOW:])
    if now >= NEAR_FLAT_SHARE * margin or _mean(scores[-WINDOW:]) - _mean(scores[:WINDOW]) >= SCORE_RISE * margin:
        return {}
    return {"little_to_learn": Message("signals.little_to_learn", spread=now, window=WINDOW, margin=margin)}


def _reward_hacking_signs(stage: str, metrics: list[dict]) -> dict[str, Message]:
    """The policy drifting far from the reference, with answers that repeat themselves or grow: the score may rise
    because the policy found what the reward over-values, not the behaviour."""
    if stage == "ppo":
        kl = _series(metrics, "objective/kl")
        lengths = _series(metrics, "response_length")
    else:   # TRL logs the mean KL per token; per answer it is that times the mean length
        lengths = _series(metrics, "completions/mean_length")
        kl = [k * n for k, n in zip(_series(metrics, "kl"), lengths)]
    repeats = _series(metrics, "answers/repeated_3grams")
    found = []
    if len(kl) >= MIN_STEPS and _mean(kl[-WINDOW:]) > KL_WARNING and _mean(kl[-WINDOW:]) > _mean(kl[:WINDOW]):
        found.append(Message("signals.kl_rising", kl=_mean(kl[-WINDOW:])))
    if len(repeats) >= MIN_STEPS and _mean(repeats[-WINDOW:]) > REPEAT_WARNING and _mean(repeats[-WINDOW:]) > _mean(repeats[:WINDOW]):
        found.append(Message("signals.repeating", share=100 * _mean(repeats[-WINDOW:])))
    if not found:
        return {}
    if len(lengths) >= MIN_STEPS and _mean(lengths[-WINDOW:]) > LENGTH_GROWTH * _mean(lengths[:WINDOW]):
        found.append(Message("signals.growing", start=_mean(lengths[:WINDOW]), end=_mean(lengths[-WINDOW:])))
    knob = Message("signals.raise_kl_coef") if stage == "ppo" else Message("signals.raise_beta", stage=stage)
    # The signs found, joined in the language being spoken (the log's English, the visitor's on the run page).
    return {"reward_hacking": Message("signals.reward_hacking", found="; ".join(sign.text() for sign in found), knob=knob)}


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of the answer's word n-grams that already occurred earlier in it (0 for an answer without repeats)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _length_signs(metrics: list[dict]) -> dict[str, Message]:
    """A reward model whose latest rewards follow answer length (pipelines/stages/reward.py logs it at each save)."""
    from pipelines.scoring import LENGTH_CORRELATION_WARNING

    readings = [m["length_correlation"] for m in metrics if isinstance(m.get("length_correlation"), (int, float))]
    if not readings or abs(readings[-1]) < LENGTH_CORRELATION_WARNING:
        return {}
    return {"length_bias": Message("signals.length_bias", correlation=readings[-1])}
