"""PPO's pure functions on hand-made tensors; every expected number is worked out by hand in the comment beside it."""

import math

import pytest
import torch

from pipelines.rl.ppo_math import (AdaptiveKLController, advantages_and_returns, entropy_from_logits,
                                   explained_variance, kl_per_token, masked_mean, masked_var, masked_whiten,
                                   per_token_rewards, policy_loss, value_loss)

def close(actual: torch.Tensor, expected: list) -> bool:
    return torch.allclose(actual, torch.tensor(expected), atol=1e-5)


VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])   # real: 1, 2 | 4


def test_masked_mean_and_variance_ignore_padding():
    assert masked_mean(VALUES, MASK).item() == pytest.approx(7 / 3)                  # (1 + 2 + 4) / 3
    assert masked_mean(VALUES, MASK, dim=1).tolist() == pytest.approx([1.5, 4.0])
    # deviations from 7/3: −4/3, −1/3, 5/3 → squares 16/9 + 1/9 + 25/9 = 42/9, over n − 1 = 2 → 7/3
    assert masked_var(VALUES, MASK).item() == pytest.approx(7 / 3)


def test_whitening_gives_zero_mean_unit_variance_and_leaves_padding_zero():
    whitened = masked_whiten(VALUES, MASK)
    assert whitened[0, 0].item() == pytest.approx((1 - 7 / 3) / math.sqrt(7 / 3), abs=1e-4)
    assert masked_mean(whitened, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(whitened, MASK).item() == pytest.approx(1.0, abs=1e-4)
    assert whitened[0, 2].item() == whitened[1, 1].item() == 0.0
    kept = masked_whiten(VALUES, MASK, shift_mean=False)
    assert masked_mean(kept, MASK).item() == pytest.approx(7 / 3, abs=1e-5)


def test_kl_estimators():
    logprobs, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -2.0]])       # log r = 1, then 0
    assert close(kl_per_token(logprobs, ref, "k1"), [[1.0, 0.0]])
    assert close(kl_per_token(logprobs, ref, "k2"), [[0.5, 0.0]])   # ½·1²
    assert close(kl_per_token(logprobs, ref, "k3"), [[math.exp(-1), 0.0]])   # (e⁻¹ − 1) + 1
    assert (kl_per_token(ref, logprobs, "k3") >= 0).all(), "k3 is never negative"
    with pytest.raises(ValueError):
        kl_per_token(logprobs, ref, "k9")


def test_rewards_are_the_kl_penalty_everywhere_plus_the_score_on_the_last_real_token():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.7, 0.9]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, non_score = per_token_rewards(scores, kl, mask, kl_coef=0.5)
    assert close(non_score, [[-0.05, -0.1, -0.15], [-0.25, 0.0, 0.0]])
    assert close(rewards, [[-0.05, -0.1, 1.85], [-1.25, 0.0, 0.0]])   # −0.15 + 2, −0.25 − 1


def test_gae_by_hand():
    values, rewards = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    full = torch.ones(1, 3)
    # γ = λ = 1: δ = (0 + 2 − 1, 0 + 3 − 2, 1 + 0 − 3) = (1, 1, −2); A = suffix sums = (0, −1, −2); R = A + V = 1
    advantages, returns = advantages_and_returns(values, rewards, full, gamma=1.0, lam=1.0)
    assert close(advantages, [[0.0, -1.0, -2.0]])
    assert close(returns, [[1.0, 1.0, 1.0]])
    # λ = ½: A₂ = −2, A₁ = 1 + ½·(−2) = 0, A₀ = 1 + ½·0 = 1; R = (2, 2, 1)
    advantages, returns = advantages_and_returns(values, rewards, full, gamma=1.0, lam=0.5)
    assert close(advantages, [[1.0, 0.0, -2.0]])
    assert close(returns, [[2.0, 2.0, 1.0]])
    # γ = ½, λ = 1: δ = (0 + ½·2 − 1, 0 + ½·3 − 2, 1 − 3) = (0, −½, −2); A₁ = −½ + ½·(−2) = −1.5, A₀ = 0 + ½·(−1.5)
    advantages, _ = advantages_and_returns(values, rewards, full, gamma=0.5, lam=1.0)
    assert close(advantages, [[-0.75, -1.5, -2.0]])


def test_gae_treats_padding_as_the_end_of_the_episode():
    # The padded third token's value 9 and reward 7 must not leak back: as if the response were (1, 2) / (0, 1).
    advantages, returns = advantages_and_returns(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[0.0, 1.0, 7.0]]),
                                                 torch.tensor([[1.0, 1.0, 0.0]]), gamma=1.0, lam=1.0)
    # δ₁ = 1 + 0 − 2 = −1, δ₀ = 0 + 2 − 1 = 1 → A = (0, −1, 0), R = (1, 1, 0)
    assert close(advantages, [[0.0, -1.0, 0.0]])
    assert close(returns, [[1.0, 1.0, 0.0]])


def test_clipped_policy_loss_by_hand():
    old = torch.tensor([[-1.0, -1.0]])
    new = old + math.log(1.5)                                  # ratio ρ = 1.5 on both tokens
    advantages, mask = torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    loss, clip_fraction, approx_kl = policy_loss(new, old, advantages, mask, clip_range=0.2)
    # A = 1: max(−1.5, −1.2) = −1.2 (clipped); A = −1: max(1.5, 1.2) = 1.5 (unclipped) → mean 0.15, half clipped
    assert loss.item() == pytest.approx(0.15)
    assert clip_fraction.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(0.5 * math.log(1.5) ** 2)
    same, none, zero = policy_loss(old, old, advantages, mask)
    assert same.item() == pytest.approx(0.0) and none.item() == 0.0 and zero.item() == 0.0   # ρ = 1: loss −mean(A) = 0


def test_clipped_value_loss_by_hand():
    values, old = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    returns, mask = torch.tensor([[3.0, 1.0]]), torch.ones(1, 2)
    loss, clip_fraction = value_loss(values, old, returns, mask, clip_range_value=0.2)
    # token 1: clipped V = 1.2 → max((2−3)², (1.2−3)²) = 3.24; token 2: (0−1)² = 1 → ½·(3.24 + 1)/2 = 1.06
    assert loss.item() == pytest.approx(1.06)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_entropy_and_explained_variance():
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))      # uniform over 4
    assert entropy_from_logits(torch.tensor([[[50.0, 0.0, 0.0]]])).item() == pytest.approx(0.0, abs=1e-6)
    returns, mask = torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 3), returns, mask).item() == pytest.approx(0.0)


def test_adaptive_kl_moves_beta_toward_the_target_at_most_twenty_percent_per_horizon():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert controller.update(12.0, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))   # error clipped to +0.2
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert controller.update(6.0, 1000) == pytest.approx(0.1)
    assert controller.update(3.0, 1000) == pytest.approx(0.1 * (1 - 0.2 * 0.1))    # half the target: −0.2 (clipped from −0.5)
