"""ORPO (odds-ratio preference optimisation) with TRL's experimental ORPOTrainer: SFT and preference in one
loss, with no reference model at all."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipelines import panels
from pipelines.config import setting
from pipelines.errors import StudioError
from pipelines.signals import preference_signs
from pipelines.stages import declare
from pipelines.stages.batching import speed_up
from pipelines.stages.checks import few_pairs_warning
from pipelines.stages.common import RunContext, lora_config, start_policy_stage, train_and_finish


@dataclass
class ORPOSettings:
    beta: float = setting(0.1, "Weight of the odds-ratio preference term beside the SFT loss (the paper's lambda).",
                         minimum=0, exclusive_minimum=True, maximum=100.0)


STAGE = declare(
    __name__, name="orpo", probes_own_prompts=True, order=5, data_kind="preference", settings=ORPOSettings,
    rows_per_example=2,
    check_start=few_pairs_warning,
    warning_signs=preference_signs,
    panels=panels.PREFERENCE,
    defaults={"dataset": "preference-en-sample", "train": {"learning_rate": 1.0e-4, "max_steps": 40, "save_steps": 20}},
)


def orpo_classes():
    """TRL keeps ORPO in trl.experimental; say so in one sentence if this TRL has dropped it."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")   # we say it is experimental ourselves
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        raise StudioError("stage.no_orpo") from None
    return ORPOConfig, ORPOTrainer


def run(context: RunContext):
    from pipelines.preference_check import with_preference_check   # loads transformers: only when the stage runs
    ORPOConfig, ORPOTrainer = orpo_classes()
    config = context.config
    inputs, model, common = start_policy_stage(context)
    args = ORPOConfig(**common, beta=config.orpo.beta, max_length=config.train.max_length)
    print(f"ORPO (TRL experimental, beta {config.orpo.beta}): {config.model} on {inputs.device}, "
          f"{len(inputs.train_dataset)} pairs of {config.dataset}", flush=True)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=inputs.train_dataset, eval_dataset=inputs.eval_dataset,
                          processing_class=inputs.tokenizer, peft_config=lora_config(config),
                          callbacks=with_preference_check(context, inputs))
    speed_up(trainer, inputs.device)
    return train_and_finish(context, trainer)
