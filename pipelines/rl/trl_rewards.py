"""Our reward sources as a TRL reward function, for GRPO and RLOO, recording samples as they are scored."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from pipelines import run_files
from pipelines.rl.rewards import RewardScorer

SAMPLES_PER_CALL = 4


class StepTracker(TrainerCallback):
    """Tells the reward function which optimizer step its samples belong to."""

    def __init__(self):
        self.step = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1


class StudioReward:
    """TRL calls reward functions with `prompts` and `completions` (conversations: lists of turns) and wants one
    float per completion; `__name__` names the metric it logs (rewards/<name>/mean)."""

    __name__ = "studio_reward"

    def __init__(self, scorer: RewardScorer, run_dir: Path, tracker: StepTracker, main_process: bool):
        self.scorer, self.run_dir, self.tracker, self.main_process = scorer, run_dir, tracker, main_process

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        conversations = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
        texts = [(c[-1]["content"] if isinstance(c, list) else c).strip() for c in completions]   # as PPO's
        scores = self.scorer(conversations, texts)
        if self.main_process:
            for prompt, text, score in list(zip(conversations, texts, scores))[:SAMPLES_PER_CALL]:
                run_files.append_jsonl(self.run_dir / "samples.jsonl", {"step": self.tracker.step,
                                                                        "prompt": prompt[-1]["content"],
                                                                        "response": text, "score": score})
        return scores
