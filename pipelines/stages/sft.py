"""Supervised fine-tuning (instruction tuning) with TRL's SFTTrainer.

Loss is on the assistant tokens only when the chat template marks them with {% generation %}
(the bundled model's does; TRL patches many known templates); otherwise on the whole sequence, and
the log says so.
"""

from __future__ import annotations

from pipelines.models import check_chat_template, check_context_length, estimate_training_memory
from pipelines.stages import declare
from pipelines.stages.common import RunContext, count_parameters, lora_config, start_policy_stage, train_and_finish
from pipelines.stages.lm_loss import speed_up


STAGE = declare(
    __name__, name="sft", order=1, data_kind="instruction",
    defaults={"dataset": "alpaca-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 60, "save_steps": 20}},
)


def run(context: RunContext):
    from trl import SFTConfig, SFTTrainer

    config = context.config
    inputs, model, args = start_policy_stage(context)
    assistant_only = prepare_chat_template(inputs.tokenizer, config.model)
    check_context_length(config.train.max_length, model.config)
    memory = estimate_training_memory(count_parameters(model), getattr(model.config, "hidden_size", 0) or 0,
                                      getattr(model.config, "num_hidden_layers", 0) or 0,
                                      getattr(model.config, "vocab_size", 0) or 0, config.train.batch_size,
                                      config.train.max_length, bf16=args["bf16"], device=inputs.device)
    print(f"SFT: {config.model} on {inputs.device}, {len(inputs.train_dataset)} rows of {config.dataset}, "
          f"{config.peft.method}, loss on {'assistant tokens only' if assistant_only else 'all tokens'}, "
          f"memory ≈ {memory['full' if config.peft.method == 'full' else 'lora']} GB at most (estimate)", flush=True)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**args, max_length=config.train.max_length, assistant_only_loss=assistant_only, packing=False),
        train_dataset=inputs.train_dataset,
        eval_dataset=inputs.eval_dataset,
        processing_class=inputs.tokenizer,
        peft_config=lora_config(config),
        callbacks=context.callbacks,
    )
    speed_up(trainer, inputs.device)
    return train_and_finish(context, trainer)


def prepare_chat_template(tokenizer, model: str) -> bool:
    """Make sure the tokenizer has a chat template; return whether it marks assistant tokens for the loss."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    check_chat_template(tokenizer, model)
    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        return False
    if patched:
        tokenizer.chat_template = patched
    return True
