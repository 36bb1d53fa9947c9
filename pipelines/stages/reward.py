"""A reward model: the policy's backbone with a scalar head, trained with TRL's RewardTrainer on preference
pairs to score the chosen answer above the rejected one (a Bradley-Terry loss).

With LoRA the head itself must be trained in full (PEFT's SEQ_CLS task marks it as modules_to_save);
a plain LoRA config would leave it at its random start while the run still looked like it trained.
"""

from __future__ import annotations

from pipelines.errors import StudioError
from pipelines.stages.common import (RunContext, common_training_args, count_parameters, eval_args, lora_config,
                                     precision_args, quiet, stage_inputs)


def run(context: RunContext):
    import torch
    from trl import RewardConfig, RewardTrainer

    from pipelines.scoring import load_reward_backbone

    config = context.config
    inputs = stage_inputs(context)
    bf16 = precision_args(config, inputs.device)["bf16"]
    model = load_reward_backbone(inputs.source, torch.bfloat16 if bf16 and config.peft.method == "lora" else torch.float32)
    model.config.pad_token_id = inputs.tokenizer.pad_token_id
    common = common_training_args(context, inputs.device, count_parameters(model))
    args = RewardConfig(**common, **eval_args(config, inputs.eval_dataset is not None), max_length=config.train.max_length,
                        center_rewards_coefficient=config.reward.center_rewards or None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=inputs.train_dataset, eval_dataset=inputs.eval_dataset,
                            processing_class=inputs.tokenizer, peft_config=lora_config(config, task_type="SEQ_CLS"),
                            callbacks=context.callbacks)
    kept = len(trainer.train_dataset)
    if kept == 0:  # RewardTrainer drops pairs longer than max_length instead of cutting them
        raise StudioError(f"Every pair of {config.dataset} is longer than max_length {config.train.max_length} tokens; "
                          "raise train.max_length.")
    dropped = len(inputs.train_dataset) - kept
    print(f"Reward model: {config.model} + a scalar head on {inputs.device}, {kept} pairs of {config.dataset}"
          + (f" ({dropped} longer than max_length {config.train.max_length} left out)" if dropped else ""), flush=True)
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
