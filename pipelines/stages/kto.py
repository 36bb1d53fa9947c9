"""KTO with TRL's KTOTrainer: learns from answers labelled desirable or undesirable, no pairs needed.

Preference pairs are accepted too (each gives one desirable and one undesirable row, shuffled; see
pipelines/data/store.py). Where a prompt has both a desirable and an undesirable answer, those pairs get DPO's
check of the policy's own preference (pipelines/preference_check.py). The reference is handled as in DPO:
adapter disabled under LoRA, precomputed log-probs for a full fine-tune.
"""

from __future__ import annotations

from pipelines.preference_check import pairs_from_unpaired, with_preference_check
from pipelines.stages.common import RunContext, eval_args, lora_config, policy_and_args, quiet, stage_inputs


def run(context: RunContext):
    from trl import KTOConfig, KTOTrainer

    config = context.config
    inputs = stage_inputs(context)
    model, common = policy_and_args(context, inputs)
    labels = inputs.train_dataset["label"]
    args = KTOConfig(**common, **eval_args(config, inputs.eval_dataset is not None), beta=config.kto.beta,
                     loss_type=config.kto.loss_type, desirable_weight=config.kto.desirable_weight,
                     undesirable_weight=config.kto.undesirable_weight, max_length=config.train.max_length,
                     precompute_ref_log_probs=config.peft.method == "full")
    print(f"KTO (beta {config.kto.beta}): {config.model} on {inputs.device}, {sum(labels)} desirable and "
          f"{len(labels) - sum(labels)} undesirable answers of {config.dataset}", flush=True)
    trainer = KTOTrainer(model=model, ref_model=None, args=args, train_dataset=inputs.train_dataset,
                         eval_dataset=inputs.eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=lora_config(config),
                         callbacks=with_preference_check(context, inputs, pairs_from_unpaired(list(inputs.train_dataset))))
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
