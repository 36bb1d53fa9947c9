"""Direct preference optimisation with TRL's DPOTrainer, and every loss variant it offers (`dpo.loss_type`).

Reference model: with LoRA, the same weights with the adapter disabled (no second copy). With a full
fine-tune, the reference log-probs are computed once before training (TRL would otherwise reload the
reference from the path the weights came from, which for a merged SFT checkpoint is the wrong model).
"""

from __future__ import annotations

from pipelines.preference_check import with_preference_check
from pipelines.stages.common import RunContext, eval_args, lora_config, policy_and_args, quiet, stage_inputs


def dpo_losses(settings) -> dict:
    """TRL's loss_type list: the preference loss, plus the negative log-likelihood of the chosen answers when
    sft_weight is above 0 (RPO's term: it makes the chosen answer itself likelier, which is what changes greedy
    answers, instead of only widening the gap to the rejected one)."""
    if not settings.sft_weight:
        return {"loss_type": [settings.loss_type]}
    return {"loss_type": [settings.loss_type, "sft"], "loss_weights": [1.0, settings.sft_weight]}


def run(context: RunContext):
    from trl import DPOConfig, DPOTrainer

    config = context.config
    inputs = stage_inputs(context)
    model, common = policy_and_args(context, inputs)
    full = config.peft.method == "full"
    args = DPOConfig(**common, **eval_args(config, inputs.eval_dataset is not None), beta=config.dpo.beta,
                     **dpo_losses(config.dpo), label_smoothing=config.dpo.label_smoothing,
                     max_length=config.train.max_length, precompute_ref_log_probs=full)
    sft_term = f" + {config.dpo.sft_weight:g} × SFT on chosen" if config.dpo.sft_weight else ""
    print(f"DPO ({config.dpo.loss_type}{sft_term}, beta {config.dpo.beta}): {config.model} on {inputs.device}, "
          f"{len(inputs.train_dataset)} pairs of {config.dataset}, reference = "
          f"{'log-probs precomputed from the starting weights' if full else 'the same weights with the adapter disabled'}",
          flush=True)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=inputs.train_dataset,
                         eval_dataset=inputs.eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=lora_config(config), callbacks=with_preference_check(context, inputs))
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
