"""How long a dataset's rows are for one model: token lengths through its chat template, and what a max length cuts;
for raw documents (kind text), what a corpus costs in that model's tokens."""

from __future__ import annotations

import statistics

from pipelines.messages import Message

MAX_MEASURED_ROWS = 5000   # beyond this, rows are sampled evenly: the histogram's shape does not need them all


def conversations(kind: str, row: dict) -> list[list[dict]]:
    """The conversations a trainer renders from one row (a preference row is two: prompt+chosen and prompt+rejected)."""
    if kind == "instruction":
        return [row["messages"]]
    if kind == "preference":
        return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]
    if kind == "unpaired":
        return [row["prompt"] + row["completion"]]
    return [row["prompt"]]


def token_lengths(kind: str, rows: list[dict], tokenizer) -> list[int]:
    """Each row's length in tokens as the trainer sees it: the longest of its conversations, template included;
    a document's through the tokenizer alone (pretraining adds no template and no special tokens to it)."""
    if kind == "text":
        return [len(ids) for ids in tokenizer([row["text"] for row in rows], add_special_tokens=False)["input_ids"]]
    texts, owners = [], []
    for index, row in enumerate(rows):
        for conversation in conversations(kind, row):
            texts.append(tokenizer.apply_chat_template(conversation, tokenize=False,
                                                       add_generation_prompt=kind == "prompt_only"))
            owners.append(index)
    lengths = [0] * len(rows)
    # The template already wrote the special tokens; adding them again would count them twice.
    for owner, ids in zip(owners, tokenizer(texts, add_special_tokens=False)["input_ids"]):
        lengths[owner] = max(lengths[owner], len(ids))
    return lengths


def length_stats(kind: str, format_name: str, rows: list[dict], tokenizer, max_length: int) -> dict:
    """Rows, mean/median/max tokens, a histogram's worth of lengths, and the rows `max_length` would cut: its warnings
    as sentences in the visitor's language, and as messages (code and parameters, `warning_messages`) to keep."""
    step = max(1, -(-len(rows) // MAX_MEASURED_ROWS))
    measured = rows[::step]
    lengths = token_lengths(kind, measured, tokenizer)
    over = [n - max_length for n in lengths if n > max_length]
    scale = len(rows) / max(len(measured), 1)   # sampled counts scaled back to the whole dataset
    warnings = []
    if kind == "text":   # documents are packed into blocks of max_length, not cut: what counts is what they cost
        return {**_corpus_stats(rows, measured, lengths, max_length), "kind": kind, "format": format_name,
                "warnings": [], "warning_messages": []}
    if over:
        warnings.append(Message("data.rows_over_max_length", over=round(len(over) * scale), rows=len(rows),
                                max_length=max_length, cut=round(sum(over) * scale), longest=max(lengths)))
    return {"kind": kind, "format": format_name, "rows": len(rows), "measured_rows": len(measured),
            "mean_tokens": round(statistics.fmean(lengths), 1) if lengths else 0,
            "median_tokens": statistics.median(lengths) if lengths else 0,
            "max_tokens": max(lengths, default=0), "min_tokens": min(lengths, default=0),
            "max_length": max_length, "rows_over_max_length": round(len(over) * scale),
            "tokens_cut": round(sum(over) * scale), "lengths": lengths,
            "warnings": [w.text() for w in warnings], "warning_messages": [w.to_dict() for w in warnings]}


def _corpus_stats(rows: list[dict], measured: list[dict], lengths: list[int], max_length: int) -> dict:
    """Documents, tokens, characters and tokens per character (the tokenizer's price of a language: SmolLM2's
    spends several times more tokens on a Korean character than on an English one), and the blocks of max_length
    a pretraining run packs them into (an end-of-text token between documents)."""
    measured_chars = sum(len(row["text"]) for row in measured)
    scale = len(rows) / max(len(measured), 1)
    tokens = round(sum(lengths) * scale)
    return {"rows": len(rows), "documents": len(rows), "measured_rows": len(measured),
            "total_tokens": tokens, "characters": sum(len(row["text"]) for row in rows),
            "tokens_per_char": round(sum(lengths) / measured_chars, 4) if measured_chars else 0,
            "blocks": -(-(tokens + len(rows)) // max_length) if rows else 0,
            "mean_tokens": round(statistics.fmean(lengths), 1) if lengths else 0,
            "median_tokens": statistics.median(lengths) if lengths else 0,
            "max_tokens": max(lengths, default=0), "min_tokens": min(lengths, default=0),
            "max_length": max_length, "rows_over_max_length": 0, "tokens_cut": 0, "lengths": lengths}
