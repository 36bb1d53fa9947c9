"""RLOO (REINFORCE leave-one-out) with TRL's RLOOTrainer: each answer's baseline is the mean reward of the other
answers to its prompt. Same reward sources and samples table as PPO and GRPO."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import panels
from pipelines.signals import rl_signs
from pipelines.stages import declare
from pipelines.stages.common import RunContext, lora_config, train_and_finish
from pipelines.stages.grpo import SampledRLSettings, sampled_rl_parts, validate_groups


@dataclass
class RLOOSettings(SampledRLSettings):
    pass


STAGE = declare(
    __name__, name="rloo", probes_own_prompts=True, order=8, data_kind="prompt_only", settings=RLOOSettings,
    takes_reward=True,
    validate=validate_groups,
    warning_signs=rl_signs,
    panels=panels.RL,
    defaults={"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
)


def run(context: RunContext):
    from trl import RLOOConfig, RLOOTrainer

    config = context.config
    inputs, model, common, reward, tracker, sampling = sampled_rl_parts(context, config.rloo)
    print(f"RLOO: {config.model} on {inputs.device}, {len(inputs.train_dataset)} prompts of {config.dataset}, "
          f"{config.rloo.num_generations} answers each, reward = {reward.scorer.source.describe()}", flush=True)
    trainer = RLOOTrainer(model=model, reward_funcs=[reward], args=RLOOConfig(**common, **sampling),
                          train_dataset=inputs.train_dataset, processing_class=inputs.tokenizer,
                          peft_config=lora_config(config), callbacks=[tracker, *context.callbacks])
    return train_and_finish(context, trainer)
