"""Direct preference optimisation with TRL's DPOTrainer, and every loss variant it offers (`dpo.loss_type`).

Reference model: with LoRA, the same weights with the adapter disabled (no second copy), run at every step unless
the run trains on more pairs than the dataset holds (then computed once before training: fewer reference passes;
pipelines/stages/batching.precompute_reference). With a full fine-tune, the reference log-probs are always computed
once before training (TRL would otherwise reload the reference from the path the weights came from, which for a
merged SFT checkpoint is the wrong model). A compact CPU LM head and padding-free batches exist
in pipelines/stages/batching.py (same loss), off by default until measured end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import panels
from pipelines.config import setting
from pipelines.errors import StudioError
from pipelines.signals import preference_signs
from pipelines.stages import declare
from pipelines.stages.batching import pairs_trained, precompute_reference, speed_up
from pipelines.stages.checks import few_pairs_warning
from pipelines.stages.common import RunContext, lora_config, start_policy_stage, train_and_finish


# TRL 1.16's DPO losses (DPOConfig.loss_type), but for 'sft', which is not a preference loss on its own.
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


@dataclass
class DPOSettings:
    beta: float = setting(0.1, "How far the policy may move from the reference: lower lets it drift further, higher keeps it close (0.01–0.5).",
                         minimum=0, exclusive_minimum=True, maximum=100.0)
    loss_type: str = setting("sigmoid", "The DPO loss: sigmoid (the paper's), ipo, hinge, robust (noisy labels), and the other variants TRL offers.",
                            choices=DPO_LOSS_TYPES)
    label_smoothing: float = setting(0.0, "Assumed share of flipped preference labels (robust, exo_pair, aot); 0 trusts every label.",
                                    minimum=0.0, maximum=0.49)
    sft_weight: float = setting(1.0, "Weight of an SFT term (the chosen answers' negative log-likelihood, as in RPO) beside the preference loss: it makes the chosen answers themselves likelier, so greedy answers change sooner; 0 turns it off.",
                               minimum=0.0, maximum=10.0)


def validate(config) -> None:
    if config.dpo.loss_type == "exo_pair" and config.dpo.label_smoothing <= 0:
        raise StudioError("check.dpo.exo_pair_smoothing")


STAGE = declare(
    __name__, name="dpo", probes_own_prompts=True, order=3, data_kind="preference", settings=DPOSettings,
    rows_per_example=2,
    validate=validate, check_start=few_pairs_warning,
    # At 5e-5 a behaviour carried only by the chosen answers (a sign-off, an opener) was ranked right but never
    # reached greedy answers in 40 steps; 2e-4 with the SFT term (dpo.sft_weight 1) taught each one
    # (bench/preference_behaviours.py).
    warning_signs=preference_signs,
    panels=panels.PREFERENCE,
    defaults={"dataset": "preference-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 40, "save_steps": 20}},
)


def dpo_losses(settings) -> dict:
    """TRL's loss_type list: the preference loss, plus the negative log-likelihood of the chosen answers when
    sft_weight is above 0 (RPO's term: it makes the chosen answer itself likelier, which is what changes greedy
    answers, instead of only widening the gap to the rejected one)."""
    if not settings.sft_weight:
        return {"loss_type": [settings.loss_type]}
    return {"loss_type": [settings.loss_type, "sft"], "loss_weights": [1.0, settings.sft_weight]}


def run(context: RunContext):
    from trl import DPOConfig, DPOTrainer
    from pipelines.preference_check import with_preference_check   # loads transformers: only when the stage runs

    config = context.config
    inputs, model, common = start_policy_stage(context)
    full = config.peft.method == "full"
    precompute = precompute_reference(full, pairs_trained(config.train, len(inputs.train_dataset)),
                                      len(inputs.train_dataset))
    args = DPOConfig(**common, beta=config.dpo.beta, **dpo_losses(config.dpo), label_smoothing=config.dpo.label_smoothing,
                     max_length=config.train.max_length, precompute_ref_log_probs=precompute)
    sft_term = f" + {config.dpo.sft_weight:g} × SFT on chosen" if config.dpo.sft_weight else ""
    print(f"DPO ({config.dpo.loss_type}{sft_term}, beta {config.dpo.beta}): {config.model} on {inputs.device}, "
          f"{len(inputs.train_dataset)} pairs of {config.dataset}, reference = "
          f"{'log-probs precomputed from the starting weights' if precompute else 'the same weights with the adapter disabled'}",
          flush=True)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=inputs.train_dataset,
                         eval_dataset=inputs.eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=lora_config(config), callbacks=with_preference_check(context, inputs))
    speed_up(trainer, inputs.device)
    return train_and_finish(context, trainer)
