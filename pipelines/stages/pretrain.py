"""Continued pretraining: next-token prediction on raw text, the first step of the road (before SFT).

Documents are tokenised as they are (no chat template), each followed by the model's end-of-text token, and
TRL's SFTTrainer packs them ("wrapped") into blocks of exactly `max_length` tokens: no padding is trained on, and
a document's end is marked where the next one begins, as in GPT-style pretraining. The loss is on every token.
Without an eval dataset a share of the documents is held out (`pretrain.held_out`), so held-out perplexity —
what continued pretraining is for — is always on the chart.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pipelines.config import setting
from pipelines.models import check_context_length
from pipelines.panels import Panel
from pipelines.stages import declare
from pipelines.stages.common import RunContext, count_parameters, eval_args, lora_config, start_policy_stage, train_and_finish
from pipelines.stages.lm_loss import speed_up

# exp() of a loss beyond this overflows a float's range of useful numbers: a diverged run reads as this, not inf.
MAX_LOGGED_LOSS = 50.0
# The token that separates documents, where the tokenizer has one; else its end-of-sequence token.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


@dataclass
class PretrainSettings:
    held_out: float = setting(0.1, "Share of the documents held out to measure perplexity on text the model has not trained on, when no eval dataset is set; 0 holds none out.",
                              minimum=0.0, maximum=0.5)


STAGE = declare(
    __name__, name="pretrain", order=0, data_kind="text", settings=PretrainSettings,
    panels=(Panel("chart.perplexity", ("perplexity",)),),
    defaults={"dataset": "corpus-en-sample",
              "train": {"learning_rate": 2.0e-4, "max_steps": 60, "save_steps": 20, "max_length": 256}},
)


def run(context: RunContext):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = context.config
    inputs, model, args = start_policy_stage(context)
    check_context_length(config.train.max_length, model.config)
    separator = separator_id(inputs.tokenizer)
    train_rows, eval_rows = list(inputs.train_dataset), list(inputs.eval_dataset) if inputs.eval_dataset else []
    if not eval_rows:
        train_rows, eval_rows = hold_out(train_rows, config.pretrain.held_out, config.train.seed)
        if eval_rows:
            args.update(eval_args(config, True))
    if eval_rows:   # the base model's own held-out perplexity first: the curve starts where the model started
        args["eval_on_start"] = True
    train_ids = tokenised(train_rows, inputs.tokenizer, separator)
    train = Dataset.from_list(train_ids)
    held = Dataset.from_list(tokenised(eval_rows, inputs.tokenizer, separator)) if eval_rows else None
    print(f"Continued pretraining: {config.model} on {inputs.device}, {len(train_rows)} documents of {config.dataset} "
          f"({sum(len(r['input_ids']) for r in train_ids)} tokens), {len(eval_rows)} held out, blocks of "
          f"{config.train.max_length} tokens, {config.peft.method}, {count_parameters(model)} parameters", flush=True)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**args, **packing(config.train.max_length)),
        train_dataset=train,
        eval_dataset=held,
        processing_class=inputs.tokenizer,
        peft_config=lora_config(config),
        callbacks=[perplexity_callback(), *context.callbacks],   # first: the recorder then logs what it adds
    )
    speed_up(trainer, inputs.device)
    return train_and_finish(context, trainer)


def packing(max_length: int) -> dict:
    """SFTConfig's packing for raw text: documents joined end to end and cut into blocks of max_length ("wrapped";
    TRL's default "bfd" keeps documents whole and pads, which is what SFT rows want, not a corpus)."""
    return {"max_length": max_length, "packing": True, "packing_strategy": "wrapped"}


def separator_id(tokenizer) -> int:
    """The id that ends a document: the tokenizer's end-of-text token if it has one (SmolLM2's instruct tokenizer
    ends turns with <|im_end|> but documents with <|endoftext|>), else its end-of-sequence token."""
    vocabulary = tokenizer.get_vocab()
    for token in END_OF_TEXT_TOKENS:
        if token in vocabulary:
            return vocabulary[token]
    return tokenizer.eos_token_id


def tokenised(rows: list[dict], tokenizer, separator: int) -> list[dict]:
    """Each document's ids as it is written (no special tokens added), then the separator. TRL takes rows that
    already have input_ids as they are, so no chat template or second end token is added."""
    texts = [row["text"] for row in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [{"input_ids": [*document, separator]} for document in ids]


def hold_out(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded `share` of the documents, at least one when share > 0, and never all of them."""
    if share <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    count = min(len(rows) - 1, max(1, round(len(rows) * share)))
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def perplexity_callback():
    """PerplexityLog as a transformers TrainerCallback."""
    from transformers import TrainerCallback

    class PerplexityCallback(PerplexityLog, TrainerCallback):
        pass

    return PerplexityCallback()


def perplexity(loss: float) -> float:
    return math.exp(min(loss, MAX_LOGGED_LOSS))


class PerplexityLog:
    """What the trainer callback does on every log (a plain class: transformers is imported only when a run trains).
    Adds perplexity (exp of the mean loss per token) beside every train and eval loss (tokens per second are every
    stage's: pipelines/throughput.py)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        for key in ("loss", "eval_loss"):
            value = logs.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                logs[key.replace("loss", "perplexity")] = perplexity(value)
