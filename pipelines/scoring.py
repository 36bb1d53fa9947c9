"""Scores from a reward model: load a reward checkpoint, score (prompt, answer) pairs, evaluate it on pairs.

A reward checkpoint is the policy backbone with a one-output head (AutoModelForSequenceClassification,
num_labels=1); a LoRA one stores the adapter and the trained head, and sits on whatever its run started
from (earlier SFT adapters are merged first). Text is rendered through the reward model's own chat
template and tokenised by its own tokenizer, so any policy's answers can be scored.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.errors import StudioError
from pipelines.models import ModelSource, trust_remote_code


def load_reward_backbone(source: ModelSource, dtype=None):
    """A sequence-classification model (one output) on `source`, with its earlier (SFT) adapters merged: the
    starting point of a reward run. A LoRA SFT adapter fits this backbone: the layer names are the same."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        source.base, num_labels=1, dtype=dtype or "auto", trust_remote_code=trust_remote_code(), use_safetensors=True)
    if source.adapters:
        from peft import PeftConfig, PeftModel
        for adapter in source.adapters:
            config = PeftConfig.from_pretrained(str(adapter))
            config.task_type = None   # a causal-LM adapter: its task's wrapper would want generate() of a classifier
            model = PeftModel.from_pretrained(model, str(adapter), config=config).merge_and_unload()
        model.requires_grad_(True)   # PEFT loaded it frozen; a full fine-tune of the reward model trains it all
    return model


def check_reward_stage(source: ModelSource) -> None:
    if source.stage != "reward":
        made_by = f" (the {source.stage.upper()} stage trained it)" if source.stage else ""
        raise StudioError(f"{source.spec!r} is not a reward model{made_by}; scoring needs the checkpoint or final "
                          "model of a reward run.")


def load_reward_model(source: ModelSource):
    """A trained reward checkpoint, ready to score, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from pipelines.models import load_tokenizer

    check_reward_stage(source)
    tokenizer = load_tokenizer(source)
    if source.adapters:
        import logging

        from peft import PeftModel
        # The backbone loads with a fresh score head, which the adapter then replaces with the trained one:
        # transformers' report ("score.weight newly initialized ... consider training") would only alarm here.
        def drop_report(record) -> bool:
            return False

        report = logging.getLogger("transformers.modeling_utils")
        report.addFilter(drop_report)
        try:
            model = load_reward_backbone(ModelSource(source.spec, source.kind, source.base, source.adapters[:-1]))
        finally:
            report.removeFilter(drop_report)
        model = PeftModel.from_pretrained(model, str(source.adapters[-1])).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source.base, num_labels=1, use_safetensors=True,
                                                                   trust_remote_code=trust_remote_code())
    if model.config.num_labels != 1:
        raise StudioError(f"{source.spec!r} has {model.config.num_labels} outputs; a reward model has one.")
    model.config.pad_token_id = tokenizer.pad_token_id   # the score is read at the last token that is not padding
    return model.eval(), tokenizer


def reward_model_on_device(source: ModelSource):
    """A reward checkpoint loaded where it scores fastest: on the GPU in bf16 when there is one, beside the policy."""
    from pipelines.inference import loaded_dtype
    from pipelines.models import best_device

    model, tokenizer = load_reward_model(source)
    device = best_device()
    dtype = loaded_dtype(device)
    if device == "cuda":   # each process of a multi-GPU run beside its own policy, not all on GPU 0
        import torch
        index = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{index if index < torch.cuda.device_count() else 0}"   # one visible GPU per process: 0
    return model.to(device, dtype), tokenizer


def cached_reward_model(source: ModelSource):
    """(model, tokenizer) of a reward checkpoint, from the cache that chat models share (one memory budget)."""
    from pipelines.inference import LoadedBase, cached_model, estimate_bytes

    check_reward_stage(source)   # before the cache makes room for it
    key = "reward|" + "|".join([source.base, *map(str, source.adapters)])
    loaded = cached_model(key, lambda: LoadedBase(*reward_model_on_device(source)), estimate_bytes(source))
    return loaded.model, loaded.tokenizer


def _cached(workspace: Path, checkpoint: str):
    from pipelines.models import resolve_model

    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise StudioError("Pick a reward model first: the checkpoint or final model of a reward run (my-rm/final).")
    return cached_reward_model(resolve_model(checkpoint, workspace))


def score_conversations(model, tokenizer, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
    """One reward per conversation (prompt turns + the answer turn), as the reward trainer rendered them."""
    import torch

    scores: list[float] = []
    for start in range(0, len(conversations), batch_size):
        texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations[start:start + batch_size]]
        batch = tokenizer(texts, padding=True, padding_side="right", add_special_tokens=False,
                          return_tensors="pt").to(model.device)
        with torch.no_grad():
            scores.extend(model(**batch).logits[:, 0].float().tolist())
    return scores


def score(workspace: Path, checkpoint: str, prompt: str, responses: list[str]) -> list[float]:
    """The reward of each response to `prompt`."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudioError("The prompt is empty; type the question the answers respond to.")
    if not responses or not all(isinstance(r, str) and r.strip() for r in responses):
        raise StudioError("Give at least one non-empty response to score.")
    model, tokenizer = _cached(workspace, checkpoint)
    user = [{"role": "user", "content": prompt}]
    return score_conversations(model, tokenizer, [user + [{"role": "assistant", "content": r}] for r in responses])


def evaluate_pairs(workspace: Path, checkpoint: str, dataset: str, limit: int = 500) -> dict:
    """Accuracy (chosen scored above rejected), margins, and how strongly reward follows answer length."""
    from pipelines.data.store import load_rows

    pairs = load_rows(dataset, workspace, "preference")[:limit]
    model, tokenizer = _cached(workspace, checkpoint)
    chosen = score_conversations(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs])
    rejected = score_conversations(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected)]
    lengths = [len(p[side][0]["content"]) for p in pairs for side in ("chosen", "rejected")]
    rewards = [value for pair in zip(chosen, rejected) for value in pair]
    correlation = pearson(lengths, rewards)
    warnings = []
    if abs(correlation) >= LENGTH_CORRELATION_WARNING:
        warnings.append(f"Rewards follow answer length (correlation {correlation:+.2f}): the model may have learned "
                        "'longer is better' rather than quality, a known reward-hacking path.")
    return {"checkpoint": checkpoint, "dataset": dataset, "pairs": len(pairs),
            "accuracy": sum(m > 0 for m in margins) / max(len(margins), 1), "margins": margins,
            "mean_margin": sum(margins) / max(len(margins), 1), "length_correlation": correlation, "warnings": warnings}


LENGTH_CORRELATION_WARNING = 0.5


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return 0.0 if sx == 0 or sy == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def score_dataset(workspace: Path, checkpoint: str, dataset: str, limit: int = 1000) -> list[dict]:
    """Every answer of a dataset with its reward, best first (preference rows give both of their answers)."""
    from pipelines.data.store import load_dataset

    kind, data = load_dataset(dataset, workspace)
    items = []
    for row in data.rows[:limit]:
        if kind == "instruction":
            turns = row["messages"]
            items.append((turns[:-1], turns[-1]["content"], "answer"))
        elif kind == "preference":
            items += [(row["prompt"], row[side][0]["content"], side) for side in ("chosen", "rejected")]
        elif kind == "unpaired":
            items.append((row["prompt"], row["completion"][0]["content"], "desirable" if row["label"] else "undesirable"))
        else:
            raise StudioError(f"Dataset {dataset!r} has prompts but no answers to score.")
    model, tokenizer = _cached(workspace, checkpoint)
    rewards = score_conversations(model, tokenizer, [p + [{"role": "assistant", "content": a}] for p, a, _ in items])
    scored = [{"prompt": p[-1]["content"], "answer": a, "side": side, "reward": r} for (p, a, side), r in zip(items, rewards)]
    return sorted(scored, key=lambda item: item["reward"], reverse=True)
