"""Reinforcement learning from a reward: the project's own PPO (TRL removed its PPOTrainer in 1.13)."""
