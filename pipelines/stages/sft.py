"""Supervised fine-tuning (instruction tuning) with TRL's SFTTrainer.

Loss is on the assistant tokens only when the chat template marks them with {% generation %}
(the bundled model's does; TRL patches many known templates); otherwise on the whole sequence, and
the log says so.
"""

from __future__ import annotations

from pipelines.data.store import load_rows
from pipelines.errors import StudioError
from pipelines.models import best_device, context_length, estimate_training_memory, load_tokenizer, resolve_model
from pipelines.stages.common import (RunContext, common_training_args, count_parameters, lora_config, load_policy,
                                     precision_args, quiet)


def run(context: RunContext) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = context.config
    source = resolve_model(config.model, context.workspace)
    tokenizer = load_tokenizer(source)
    assistant_only = prepare_chat_template(tokenizer)
    rows = load_rows(config.dataset, context.workspace)
    device = best_device()
    model = load_policy(source, config, device, bf16=precision_args(config, device)["bf16"])
    check_max_length(config.train.max_length, model.config)
    n_params = count_parameters(model)
    args = common_training_args(context, device, n_params)
    memory = estimate_training_memory(n_params, getattr(model.config, "hidden_size", 0) or 0,
                                      getattr(model.config, "num_hidden_layers", 0) or 0, config.train.batch_size,
                                      config.train.max_length, bf16=args["bf16"])
    print(f"SFT: {config.model} on {device}, {len(rows)} rows of {config.dataset}, {config.peft.method}, "
          f"loss on {'assistant tokens only' if assistant_only else 'all tokens'}, "
          f"memory ≈ {memory['full' if config.peft.method == 'full' else 'lora']} GB at most (estimate)", flush=True)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**args, max_length=config.train.max_length, assistant_only_loss=assistant_only, packing=False),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=context.callbacks,
    )
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer


def prepare_chat_template(tokenizer) -> bool:
    """Make sure the tokenizer has a chat template; return whether it marks assistant tokens for the loss."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        raise StudioError("This model has no chat template, so chat rows cannot be rendered; "
                          "pick an instruct/chat model or one whose tokenizer defines chat_template.")
    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        return False
    if patched:
        tokenizer.chat_template = patched
    return True


def check_max_length(max_length: int, model_config) -> None:
    limit = context_length(model_config)
    if limit and max_length > limit:
        raise StudioError(f"max_length {max_length} is beyond this model's context of {limit} tokens; lower train.max_length.")
