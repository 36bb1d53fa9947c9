"""PPO's arithmetic as small pure functions, each with its formula and the shape of every tensor.

B = responses in the batch, T = response tokens (after the prompt, right-padded). `mask` (B, T) is 1 on
the response's real tokens (up to and including its EOS) and 0 on padding; real tokens come first.
Nothing here touches a model: these are tested on hand-made tensors (tests/test_ppo_math.py).
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ values·mask / Σ mask, over everything (a scalar) or along `dim`."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked values: Σ (x − x̄)²·mask / (Σ mask − 1)."""
    centered = (values - masked_mean(values, mask)) * mask
    return (centered ** 2).sum() / (mask.sum() - 1).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − x̄) / σ over the masked values (keeping the mean when not `shift_mean`); padding stays 0.  (B, T)"""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """An estimate of KL(π ‖ π_ref) at each sampled token, from log π(a) and log π_ref(a).  (B, T)

    With log r = log π(a) − log π_ref(a):  k1 = log r  (unbiased, can be negative);
    k2 = ½ (log r)²  (biased, low variance);  k3 = (1/r − 1) + log r  (unbiased, never negative; Schulman 2020).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's reward: −β·KL at every response token, plus the reward model's score at the last one.

    scores (B,), kl (B, T), mask (B, T)  →  rewards (B, T), non_score_rewards (B, T) = −β·KL·mask
    """
    non_score = -kl_coef * kl * mask
    rewards = non_score.clone()
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)                       # (B,) index of the last real token
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards, non_score


def advantages_and_returns(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                           gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards over the response:

        δ_t = r_t + γ·V_{t+1} − V_t          (V after the last real token is 0: the episode has ended)
        A_t = δ_t + γ·λ·A_{t+1}
        returns_t = A_t + V_t

    values (B, T), rewards (B, T), mask (B, T)  →  advantages (B, T), returns (B, T), both 0 on padding.
    """
    values, rewards = values * mask, rewards * mask
    steps = values.shape[1]
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])                               # (B,)
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate:  L = E[max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))],  ρ = π(a)/π_old(a).

    All inputs (B, T)  →  loss (scalar), clip fraction (scalar: share of tokens where the clip bit),
    approx KL(π_old ‖ π) = ½·E[(log ρ)²] (scalar, for monitoring).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio ** 2, mask)
    return loss, clip_fraction, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss:  L = ½·E[max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)].

    All inputs (B, T)  →  loss (scalar), clip fraction (scalar).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return loss, masked_mean((clipped_loss > unclipped_loss).float(), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) = logsumexp(z) − Σ softmax(z)·z.   logits (B, T, V)  →  (B, T)"""
    probabilities = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(dim=-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var(R − V) / Var(R): 1 when the value head predicts returns exactly, ≤ 0 when it knows nothing."""
    return 1.0 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)


class AdaptiveKLController:
    """Ziegler et al. (2019): move β so the measured KL tracks a target.

        β ← β · (1 + clip(KL / KL_target − 1, −0.2, 0.2) · n / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10000):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
