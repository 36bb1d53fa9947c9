"""RLOO (REINFORCE leave-one-out) with TRL's RLOOTrainer: each answer's baseline is the mean reward of the other
answers to its prompt. Same reward sources and samples table as PPO and GRPO."""

from __future__ import annotations

from pipelines.stages.common import RunContext, lora_config, quiet
from pipelines.stages.grpo import sampled_rl_parts


def run(context: RunContext):
    from trl import RLOOConfig, RLOOTrainer

    config = context.config
    inputs, model, common, reward, tracker, sampling = sampled_rl_parts(context, config.rloo)
    print(f"RLOO: {config.model} on {inputs.device}, {len(inputs.train_dataset)} prompts of {config.dataset}, "
          f"{config.rloo.num_generations} answers each, reward = {reward.scorer.source.describe()}", flush=True)
    trainer = RLOOTrainer(model=model, reward_funcs=[reward], args=RLOOConfig(**common, **sampling),
                          train_dataset=inputs.train_dataset, processing_class=inputs.tokenizer,
                          peft_config=lora_config(config), callbacks=[tracker, *context.callbacks])
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
