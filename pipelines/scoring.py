"""Scores from a reward model: load a reward checkpoint, score (prompt, answer) pairs, evaluate it on pairs.

A reward checkpoint is the policy backbone with a one-output head (AutoModelForSequenceClassification,
num_labels=1); a LoRA one stores the adapter and the trained head, and sits on whatever its run started
from (earlier SFT adapters are merged first). Text is rendered through the reward model's own chat
template and tokenised by its own tokenizer, so any policy's answers can be scored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.messages import Message
from pipelines.models import ModelSource, check_reward_model, trust_remote_code


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


def load_reward_model(source: ModelSource):
    """A trained reward checkpoint, ready to score, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from pipelines.models import load_tokenizer

    check_reward_model(source)
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
        raise StudioError("scoring.not_one_output", model=quote(source.spec), outputs=model.config.num_labels)
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

    check_reward_model(source)   # before the cache makes room for it
    key = "reward|" + "|".join([source.base, *map(str, source.adapters)])
    loaded = cached_model(key, lambda: LoadedBase(*reward_model_on_device(source)), estimate_bytes(source))
    return loaded.model, loaded.tokenizer


def _cached(workspace: Path, checkpoint: str):
    return cached_reward_model(_reward_source(workspace, checkpoint))


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
        raise StudioError("scoring.no_prompt")
    if not responses or not all(isinstance(r, str) and r.strip() for r in responses):
        raise StudioError("scoring.no_responses")
    model, tokenizer = _cached(workspace, checkpoint)
    user = [{"role": "user", "content": prompt}]
    return score_conversations(model, tokenizer, [user + [{"role": "assistant", "content": r}] for r in responses])


# ---- Jobs (pipelines/jobs.py): a reward model measured on preference pairs, every answer of a dataset scored.
# Each scores a batch at a time and reports it, so a long one shows rows done / total and can be cancelled.

BATCH = 8
EVALUATE_LIMIT, EVALUATE_MAX = 500, 5000
SCORE_LIMIT, SCORE_MAX = 1000, 10000


def _reward_source(workspace: Path, checkpoint) -> ModelSource:
    """The reward checkpoint a job scores with, checked without loading it."""
    from pipelines.models import resolve_model

    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise StudioError("scoring.no_checkpoint")
    source = resolve_model(checkpoint, workspace)
    check_reward_model(source)
    return source


def _limit(value, default: int, maximum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise StudioError("scoring.bad_limit", value=quote(value), maximum=maximum) from None
    return max(1, min(number, maximum))


def _dataset_name(spec: dict) -> str:
    dataset = spec.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise StudioError("scoring.no_dataset")
    return dataset


class _NoProgress:
    def total(self, count: int) -> None:
        pass

    def rows(self, rows: list[dict]) -> None:
        pass

    def replace(self, rows: list[dict]) -> None:
        pass


def _last_user(turns: list[dict]) -> str:
    return next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")


def prepare_evaluate_pairs(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoint (a reward run's), dataset (preference pairs), limit (pairs, at most 5000)."""
    from pipelines.data.store import load_rows

    checkpoint = spec.get("checkpoint")
    _reward_source(workspace, checkpoint)
    dataset, limit = _dataset_name(spec), _limit(spec.get("limit"), EVALUATE_LIMIT, EVALUATE_MAX)
    pairs = load_rows(dataset, workspace, "preference")[:limit]
    return {"checkpoint": checkpoint, "dataset": dataset, "limit": limit}, training_overlap(workspace, checkpoint, dataset, pairs)


def run_evaluate_pairs(workspace: Path, spec: dict, progress) -> dict:
    return evaluate_pairs(workspace, spec["checkpoint"], spec["dataset"], spec["limit"], progress)


def evaluate_pairs(workspace: Path, checkpoint: str, dataset: str, limit: int = EVALUATE_LIMIT, progress=None) -> dict:
    """Accuracy (chosen scored above rejected), margins, and how strongly reward follows answer length. Each batch
    of scored pairs goes to `progress` (a jobs.Progress) as rows: prompt, chosen, rejected, their rewards, margin."""
    from pipelines.data.store import load_rows

    progress = progress or _NoProgress()
    pairs = load_rows(dataset, workspace, "preference")[:limit]
    model, tokenizer = _cached(workspace, checkpoint)
    progress.total(len(pairs))
    rows = []
    for start in range(0, len(pairs), BATCH):
        batch = pairs[start:start + BATCH]
        scores = score_conversations(model, tokenizer, [p["prompt"] + p["chosen"] for p in batch]
                                     + [p["prompt"] + p["rejected"] for p in batch])
        scored = [{"prompt": _last_user(p["prompt"]), "chosen": p["chosen"][0]["content"],
                   "rejected": p["rejected"][0]["content"], "chosen_reward": chosen, "rejected_reward": rejected,
                   "margin": chosen - rejected}
                  for p, chosen, rejected in zip(batch, scores[:len(batch)], scores[len(batch):])]
        progress.rows(scored)
        rows += scored
    margins = [r["margin"] for r in rows]
    lengths = [len(r[side]) for r in rows for side in ("chosen", "rejected")]
    rewards = [r[f"{side}_reward"] for r in rows for side in ("chosen", "rejected")]
    correlation = pearson(lengths, rewards)
    warnings = []
    if abs(correlation) >= LENGTH_CORRELATION_WARNING:
        warnings.append(Message("reward.follows_length", correlation=correlation))
    return {"checkpoint": checkpoint, "dataset": dataset, "pairs": len(pairs),
            "accuracy": sum(m > 0 for m in margins) / max(len(margins), 1), "margins": margins,
            "mean_margin": sum(margins) / max(len(margins), 1), "length_correlation": correlation, "warnings": warnings}


def training_overlap(workspace: Path, checkpoint: str, dataset: str, pairs: list[dict]) -> list[Message]:
    """A warning when the pairs a reward model is measured on are pairs it trained on: its accuracy there says how
    well it learned them by heart, not how well it ranks answers it has not seen."""
    from pipelines.data.store import load_rows
    from pipelines.models import CHECKPOINT_ID
    from pipelines.runs import load_config

    match = CHECKPOINT_ID.fullmatch(checkpoint.strip())
    if not match:
        return []
    try:
        trained_on = load_config(Path(workspace) / "runs" / match["run"]).dataset
        training = pairs if trained_on == dataset else load_rows(trained_on, workspace, "preference")
    except (StudioError, OSError):   # its training data is gone or changed kind: nothing to compare
        return []
    seen = {_pair_key(p) for p in training}
    overlap = sum(_pair_key(p) in seen for p in pairs)
    if trained_on == dataset or overlap == len(pairs):
        return [Message("reward.own_training_set", run=match["run"], dataset=quote(dataset))]
    if overlap:
        return [Message("reward.training_overlap", overlap=overlap, pairs=len(pairs), run=match["run"],
                        dataset=quote(trained_on))]
    return []


def _pair_key(pair: dict) -> str:
    return json.dumps([pair["prompt"], pair["chosen"], pair["rejected"]], sort_keys=True, ensure_ascii=False)


LENGTH_CORRELATION_WARNING = 0.5


def pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return 0.0 if sx == 0 or sy == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def prepare_score_dataset(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoint (a reward run's), dataset (one with answers), limit (rows, at most 10000)."""
    checkpoint = spec.get("checkpoint")
    _reward_source(workspace, checkpoint)
    dataset, limit = _dataset_name(spec), _limit(spec.get("limit"), SCORE_LIMIT, SCORE_MAX)
    _answers_of(workspace, dataset, limit)
    return {"checkpoint": checkpoint, "dataset": dataset, "limit": limit}, []


def run_score_dataset(workspace: Path, spec: dict, progress) -> dict:
    ranked = score_dataset(workspace, spec["checkpoint"], spec["dataset"], spec["limit"], progress)
    return {"checkpoint": spec["checkpoint"], "dataset": spec["dataset"], "answers": len(ranked)}


def _answers_of(workspace: Path, dataset: str, limit: int) -> list[tuple[list[dict], str, str]]:
    """(prompt turns, answer, side) of every answer in the first `limit` rows; preference rows give both."""
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
            raise StudioError("scoring.no_answers", dataset=quote(dataset))
    return items


def score_dataset(workspace: Path, checkpoint: str, dataset: str, limit: int = SCORE_LIMIT, progress=None) -> list[dict]:
    """Every answer of a dataset with its reward, best first (preference rows give both of their answers). Each
    scored batch goes to `progress` as it comes, and the ranking replaces them at the end."""
    progress = progress or _NoProgress()
    items = _answers_of(workspace, dataset, limit)
    model, tokenizer = _cached(workspace, checkpoint)
    progress.total(len(items))
    scored = []
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        rewards = score_conversations(model, tokenizer, [p + [{"role": "assistant", "content": a}] for p, a, _ in batch])
        rows = [{"reward": r, "side": side, "prompt": _last_user(p), "answer": a} for (p, a, side), r in zip(batch, rewards)]
        progress.rows(rows)
        scored += rows
    ranked = sorted(scored, key=lambda item: item["reward"], reverse=True)
    progress.replace(ranked)
    return ranked
