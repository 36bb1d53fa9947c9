"""KTO with TRL's KTOTrainer: learns from answers labelled desirable or undesirable, no pairs needed.

Preference pairs are accepted too (each gives one desirable and one undesirable row, shuffled; see
pipelines/data/store.py). Where a prompt has both a desirable and an undesirable answer, those pairs get DPO's
check of the policy's own preference (pipelines/preference_check.py). The reference is handled as in DPO:
adapter disabled under LoRA (precomputed once when the run trains on more rows than the dataset holds),
precomputed log-probs for a full fine-tune; see pipelines/stages/batching.py for the faster forwards.
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


@dataclass
class KTOSettings:
    beta: float = setting(0.1, "How far the policy may move from the reference (as DPO's beta).", minimum=0, exclusive_minimum=True, maximum=100.0)
    loss_type: str = setting("kto", "kto (the paper's) or apo_zero_unpaired.", choices=("kto", "apo_zero_unpaired"))
    desirable_weight: float = setting(1.0, "Weight of the loss on desirable (label true) answers.", minimum=0, exclusive_minimum=True, maximum=100.0)
    undesirable_weight: float = setting(1.0, "Weight of the loss on undesirable (label false) answers.", minimum=0, exclusive_minimum=True, maximum=100.0)


def check_start(config, rows: list) -> list:
    if config.kto.loss_type == "kto" and config.train.batch_size < 2:
        raise StudioError("check.kto.batch_of_one")
    return few_pairs_warning(config, rows)


STAGE = declare(
    __name__, name="kto", probes_own_prompts=True, order=4, data_kind="unpaired", settings=KTOSettings,
    check_start=check_start,
    warning_signs=preference_signs,
    panels=panels.PREFERENCE,
    defaults={"dataset": "preference-en-sample", "train": {"learning_rate": 5.0e-5, "max_steps": 40, "save_steps": 20}},
)


def run(context: RunContext):
    from trl import KTOConfig, KTOTrainer
    from pipelines.preference_check import pairs_from_unpaired, with_preference_check   # loads transformers

    config = context.config
    inputs, model, common = start_policy_stage(context)
    labels = inputs.train_dataset["label"]
    args = KTOConfig(**common, beta=config.kto.beta, loss_type=config.kto.loss_type,
                     desirable_weight=config.kto.desirable_weight, undesirable_weight=config.kto.undesirable_weight,
                     max_length=config.train.max_length,
                     precompute_ref_log_probs=precompute_reference(config.peft.method == "full",
                                                                   pairs_trained(config.train, len(labels)), len(labels)))
    print(f"KTO (beta {config.kto.beta}): {config.model} on {inputs.device}, {sum(labels)} desirable and "
          f"{len(labels) - sum(labels)} undesirable answers of {config.dataset}", flush=True)
    trainer = KTOTrainer(model=model, ref_model=None, args=args, train_dataset=inputs.train_dataset,
                         eval_dataset=inputs.eval_dataset, processing_class=inputs.tokenizer,
                         peft_config=lora_config(config),
                         callbacks=with_preference_check(context, inputs, pairs_from_unpaired(list(inputs.train_dataset))))
    speed_up(trainer, inputs.device)
    return train_and_finish(context, trainer)
