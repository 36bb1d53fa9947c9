"""A reward model: the policy's backbone with a scalar head, trained with TRL's RewardTrainer on preference
pairs to score the chosen answer above the rejected one (a Bradley-Terry loss).

With LoRA the head itself must be trained in full (PEFT's SEQ_CLS task marks it as modules_to_save);
a plain LoRA config would leave it at its random start while the run still looked like it trained.

At every checkpoint save the run also logs `length_correlation`: how strongly the current model's rewards follow
answer length on a few held-out (or, without an eval split, training) pairs. A reward model that has learned
"longer is better" looks fine on accuracy and is the classic start of reward hacking, so the run page warns.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import panels
from pipelines.config import setting
from pipelines.errors import StudioError
from pipelines.signals import reward_model_signs
from pipelines.stages import declare
from pipelines.stages.common import (RunContext, common_training_args, count_parameters, lora_config, precision_args,
                                     stage_inputs, train_and_finish)


@dataclass
class RewardSettings:
    center_rewards: float = setting(0.01, "Pulls rewards toward a mean of 0 (TRL's center_rewards_coefficient), so scores stay comparable across prompts; 0 turns it off.",
                                   minimum=0.0, maximum=10.0)


def validate(config) -> None:
    if config.peft.method == "qlora":
        raise StudioError("check.reward.no_qlora")


STAGE = declare(
    __name__, name="reward", order=2, data_kind="preference", settings=RewardSettings, output="reward_model",
    rows_per_example=2, validate=validate,
    warning_signs=reward_model_signs,
    panels=panels.REWARD_MODEL,
    defaults={"dataset": "preference-en-sample", "train": {"learning_rate": 1.0e-4, "max_steps": 40, "save_steps": 20}},
)


LENGTH_CHECK_PAIRS = 32


def length_check(tokenizer, dataset):
    """A callback that logs the correlation between reward and answer length at every save."""
    from transformers import Trainer, TrainerCallback

    from pipelines.scoring import pearson, score_conversations

    pairs = [dataset[i] for i in range(min(LENGTH_CHECK_PAIRS, len(dataset)))]
    answers = [(p["prompt"] + p[side], len(p[side][-1]["content"])) for p in pairs for side in ("chosen", "rejected")]

    class LengthCheck(TrainerCallback):
        trainer = None   # set once the trainer exists: logging goes through it, so the recorder sees the value

        def on_save(self, args, state, control, model=None, **kwargs):
            import torch

            was_training = model.training
            model.eval()
            with torch.no_grad():
                rewards = score_conversations(model, tokenizer, [conversation for conversation, _ in answers])
            model.train(was_training)
            # Trainer's own log, not RewardTrainer's: that one would also flush the metrics it is averaging for the
            # next logging step.
            Trainer.log(self.trainer, {"length_correlation": pearson([length for _, length in answers], rewards)})

    return LengthCheck()


def run(context: RunContext):
    import torch
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    from pipelines.scoring import load_reward_backbone

    config = context.config
    inputs = stage_inputs(context)
    bf16 = precision_args(config, inputs.device)["bf16"]
    # The score head is initialised when the model loads, before the trainer seeds anything: seed first, so a run
    # is the same run whatever ran before it in this process.
    set_seed(config.train.seed)
    model = load_reward_backbone(inputs.source, torch.bfloat16 if bf16 and config.peft.method == "lora" else torch.float32)
    model.config.pad_token_id = inputs.tokenizer.pad_token_id
    common = common_training_args(context, inputs.device, count_parameters(model))
    args = RewardConfig(**common, max_length=config.train.max_length,
                        center_rewards_coefficient=config.reward.center_rewards or None)
    checker = length_check(inputs.tokenizer, inputs.train_dataset if inputs.eval_dataset is None else inputs.eval_dataset)
    trainer = RewardTrainer(model=model, args=args, train_dataset=inputs.train_dataset, eval_dataset=inputs.eval_dataset,
                            processing_class=inputs.tokenizer, peft_config=lora_config(config, task_type="SEQ_CLS"),
                            callbacks=[*context.callbacks, checker])
    checker.trainer = trainer
    kept = len(trainer.train_dataset)
    if kept == 0:  # RewardTrainer drops pairs longer than max_length instead of cutting them
        raise StudioError("stage.pairs_too_long", dataset=config.dataset, max_length=config.train.max_length)
    dropped = len(inputs.train_dataset) - kept
    print(f"Reward model: {config.model} + a scalar head on {inputs.device}, {kept} pairs of {config.dataset}"
          + (f" ({dropped} longer than max_length {config.train.max_length} left out)" if dropped else ""), flush=True)
    return train_and_finish(context, trainer)
