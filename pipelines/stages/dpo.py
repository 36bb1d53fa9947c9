"""Direct preference optimisation with TRL's DPOTrainer, and every loss variant it offers (`dpo.loss_type`).

Reference model: with LoRA, the same weights with the adapter disabled (no second copy). With a full
fine-tune, the reference log-probs are computed once before training (TRL would otherwise reload the
reference from the path the weights came from, which for a merged SFT checkpoint is the wrong model).
"""

from __future__ import annotations

from pipelines.stages.common import RunContext, eval_args, lora_config, policy_and_args, quiet, stage_inputs


def run(context: RunContext):
    from trl import DPOConfig, DPOTrainer

    config = context.config
    inputs = stage_inputs(context)
    model, common = policy_and_args(context, inputs)
    full = config.peft.method == "full"
    args = DPOConfig(**common, **eval_args(config, inputs.eval_dataset is not None), beta=config.dpo.beta,
                     loss_type=[config.dpo.loss_type], label_smoothing=config.dpo.label_smoothing,
                     max_length=config.train.max_length, precompute_ref_log_probs=full)
    print(f"DPO ({config.dpo.loss_type}, beta {config.dpo.beta}): {config.model} on {inputs.device}, "
          f"{len(inputs.train_dataset)} pairs of {config.dataset}, reference = "
          f"{'log-probs precomputed from the starting weights' if full else 'the same weights with the adapter disabled'}",
          flush=True)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=inputs.train_dataset,
                         eval_dataset=inputs.eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=lora_config(config), callbacks=context.callbacks)
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
