"""Held-out loss and perplexity of checkpoints on a dataset: the Evaluate scorer that needs no judge and no reward.

Each row is measured the way its stage trains on it, so the number is the training loss's own, on rows the run did
not see: an instruction row through the chat template with the loss on the assistant tokens only (as SFT, when the
template marks them with {% generation %}; on every token otherwise, as SFT then does too), a text row as it is
written followed by its end-of-text token, every token counted (as continued pretraining). Rows longer than
max_length are cut there, as training cuts them.

The mean is per token over all rows (a long answer weighs as its tokens do), and perplexity is exp of that mean.
Runs as a job (pipelines/jobs.py kind "evaluate_loss"): one batch of rows at a time through the Chat model cache,
each batch's rows written as they are measured, so progress and Cancel work between batches.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.messages import Message

MAX_CHECKPOINTS = 8
DEFAULT_LIMIT, MAX_LIMIT = 500, 2000   # rows per checkpoint: a few minutes of CPU for a small model
DEFAULT_MAX_LENGTH, MAX_MAX_LENGTH = 512, 8192
BATCH_ROWS = 4          # a batch's logits are rows × tokens × vocabulary floats: 4 × 512 × 49k ≈ 400 MB for SmolLM2
SHOWN_CHARS = 200       # of each row's text in the results
MAX_LOSS = 50.0         # exp() beyond this is no useful number: a diverged model reads as exp(50)
KINDS = ("instruction", "text")
COLUMNS = ("checkpoint", "row", "tokens", "loss", "perplexity", "text")


def prepare_evaluate_loss(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoints (1 to 8 model ids), dataset (instruction or text rows), limit (rows, at most 2000),
    max_length (tokens a row is cut at, as train.max_length). Everything is checked before a folder is written."""
    from pipelines.data.store import load_dataset
    from pipelines.models import check_generative, resolve_model
    from pipelines.scoring import _dataset_name, _limit

    checkpoints = spec.get("checkpoints")
    if not isinstance(checkpoints, list) or not checkpoints or not all(isinstance(c, str) and c.strip() for c in checkpoints):
        raise StudioError("jobs.no_checkpoints")
    if len(checkpoints) > MAX_CHECKPOINTS:
        raise StudioError("compare.too_many", limit=MAX_CHECKPOINTS)
    for checkpoint in checkpoints:
        check_generative(resolve_model(checkpoint, workspace))
    dataset = _dataset_name(spec)
    limit = _limit(spec.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    max_length = spec.get("max_length", DEFAULT_MAX_LENGTH)
    if not (isinstance(max_length, int) and not isinstance(max_length, bool) and 8 <= max_length <= MAX_MAX_LENGTH):
        raise StudioError("eval_loss.bad_max_length", highest=MAX_MAX_LENGTH, value=quote(max_length))
    kind, _ = load_dataset(dataset, workspace)
    if kind not in KINDS:
        raise StudioError("eval_loss.wrong_kind", dataset=quote(dataset), has=Message(f"data.holds.{kind}"))
    return ({"checkpoints": checkpoints, "dataset": dataset, "kind": kind, "limit": limit, "max_length": max_length},
            own_training_data(workspace, checkpoints, dataset))


def own_training_data(workspace: Path, checkpoints: list[str], dataset: str) -> list[Message]:
    """A warning for each checkpoint measured on the very dataset its run trained on: a low loss there is memory."""
    from pipelines.models import CHECKPOINT_ID
    from pipelines.runs import load_config

    warnings = []
    for checkpoint in checkpoints:
        match = CHECKPOINT_ID.fullmatch(checkpoint.strip())
        try:
            trained_on = load_config(Path(workspace) / "runs" / match["run"]).dataset if match else None
        except (StudioError, OSError):
            trained_on = None
        if trained_on == dataset:
            warnings.append(Message("eval_loss.own_training_set", checkpoint=checkpoint, dataset=quote(dataset)))
    return warnings


def run_evaluate_loss(workspace: Path, spec: dict, progress) -> dict:
    return evaluate_loss(workspace, spec["checkpoints"], spec["dataset"], spec["limit"], spec["max_length"], progress)


def evaluate_loss(workspace: Path, checkpoints: list[str], dataset: str, limit: int = DEFAULT_LIMIT,
                  max_length: int = DEFAULT_MAX_LENGTH, progress=None) -> dict:
    """Per checkpoint: the mean loss per counted token on the first `limit` rows, its perplexity, and the tokens
    and rows counted; every row's own loss goes to `progress` (a jobs.Progress) batch by batch."""
    from pipelines.data.store import load_dataset
    from pipelines.inference import load_for_generation
    from pipelines.models import resolve_model

    kind, data = load_dataset(dataset, workspace)
    rows = data.rows[:limit]
    if progress:
        progress.total(len(rows) * len(checkpoints))
    results, skipped, loss_on = {}, {}, {}
    for checkpoint in checkpoints:
        loaded, adapter = load_for_generation(resolve_model(checkpoint, workspace))
        tokenizer = copy.copy(loaded.tokenizer)   # a training template may be set on it: never on the cached one
        encoded, assistant_only = encode_rows(tokenizer, kind, rows, max_length, checkpoint)
        loss_on[checkpoint] = "assistant" if assistant_only else "all"
        total_loss, total_tokens, counted = 0.0, 0, 0
        for start in range(0, len(encoded), BATCH_ROWS):
            batch = encoded[start:start + BATCH_ROWS]
            measured = [(ids, mask) for ids, mask in batch if sum(mask[1:])]   # a row cut before its answer: nothing
            sums = token_loss_sums(loaded, adapter, measured, tokenizer) if measured else []
            out, sums = [], iter(sums)
            for offset, (ids, mask) in enumerate(batch):
                tokens = sum(mask[1:])   # the first token is never predicted
                row_sum = next(sums) if tokens else None
                if tokens:
                    total_loss, total_tokens, counted = total_loss + row_sum, total_tokens + tokens, counted + 1
                loss = row_sum / tokens if tokens else None
                out.append({"checkpoint": checkpoint, "row": start + offset, "tokens": tokens, "loss": loss,
                            "perplexity": perplexity(loss) if loss is not None else None,
                            "text": row_text(rows[start + offset])[:SHOWN_CHARS]})
            if progress:
                progress.rows(out)
        skipped[checkpoint] = len(rows) - counted
        mean = total_loss / total_tokens if total_tokens else None
        results[checkpoint] = {"loss": mean, "perplexity": perplexity(mean) if mean is not None else None,
                               "tokens": total_tokens, "rows": counted}
    warnings = [Message("eval_loss.rows_skipped", checkpoint=c, skipped=n, max_length=max_length)
                for c, n in skipped.items() if n]
    return {"dataset": dataset, "kind": kind, "rows": len(rows), "max_length": max_length, "loss_on": loss_on,
            "checkpoints": results, "warnings": warnings}


def perplexity(loss: float) -> float:
    return math.exp(min(loss, MAX_LOSS))


def encode_rows(tokenizer, kind: str, rows: list[dict], max_length: int, checkpoint: str):
    """[(ids, mask)] per row, mask 1 where a token counts in the loss, cut at max_length; and whether only the
    assistant's tokens count (instruction rows through a template that marks them)."""
    if kind == "text":
        from pipelines.stages.pretrain import separator_id, tokenised

        ids = [row["input_ids"][:max_length] for row in tokenised(rows, tokenizer, separator_id(tokenizer))]
        return [(i, [1] * len(i)) for i in ids], False
    from pipelines.stages.sft import prepare_chat_template

    assistant_only = prepare_chat_template(tokenizer, checkpoint)   # SFT's own choice of where the loss is
    encoded = []
    for row in rows:
        # What TRL's SFTTrainer does with a conversation: the template's ids and, with markers, the assistant mask.
        out = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=assistant_only)
        ids = list(out["input_ids"])[:max_length]
        mask = list(out["assistant_masks"])[:max_length] if assistant_only else [1] * len(ids)
        encoded.append((ids, mask))
    return encoded, assistant_only


def token_loss_sums(loaded, adapter: str, batch: list[tuple[list[int], list[int]]], tokenizer) -> list[float]:
    """Each row's summed next-token cross-entropy (natural log) over its counted tokens, in one padded pass."""
    import torch

    from pipelines.inference import model_with_adapter

    width = max(len(ids) for ids, _ in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])        # (B, T)
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])  # (B, T)
    counted = torch.tensor([mask + [0] * (width - len(mask)) for _, mask in batch])          # (B, T)
    with model_with_adapter(loaded, adapter) as model:
        device = next(model.parameters()).device
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        logits = logits[:, :-1].float()                                                       # (B, T-1, V)
        targets = input_ids[:, 1:].to(device)                                                 # (B, T-1)
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T-1)
        sums = (losses * counted[:, 1:].to(device)).sum(dim=1)                                # (B,)
    return sums.cpu().tolist()


def row_text(row: dict) -> str:
    """A row as a person recognises it: a text row's text, an instruction row's last user turn."""
    if "text" in row:
        return row["text"]
    return next((t["content"] for t in reversed(row["messages"]) if t["role"] == "user"), "")
