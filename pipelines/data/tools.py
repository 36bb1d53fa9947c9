"""Less but better data (the lesson of LIMA and phi): remove duplicates, filter by length, split off an eval set.

Each tool reads a clean dataset and writes a new named one; the original is never touched.
"""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

from pipelines.data.stats import token_lengths
from pipelines.data.store import check_new_name, load_dataset, write_dataset
from pipelines.errors import StudioError, quote

SHINGLE = 5          # characters per shingle: works for Korean as well as English, which word n-grams would not
NUM_HASHES = 64      # MinHash signature length
BANDS = 16           # 16 bands of 4 hashes: pairs with Jaccard ≳ 0.5 become candidates, then are checked exactly
_PRIME = (1 << 31) - 1  # hash coefficients and shingle hashes stay below 2^31, so a*g+b fits in int64


def row_text(row: dict) -> str:
    """Every turn of every field of a normalised row, in order: what two rows must share to be duplicates."""
    parts = []
    for value in row.values():
        if isinstance(value, list):
            parts.extend(f"{turn['role']}: {turn['content']}" for turn in value)
        else:
            parts.append(str(value))
    return "\n".join(parts)


def canonical(text: str) -> str:
    """Case and spacing do not make a row new (punctuation may: "2+2" is not "22")."""
    return re.sub(r"\s+", " ", text.lower()).strip()


def _letters(text: str) -> str:
    """What near-duplicate detection compares: words without punctuation."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text)).strip()


def _shingles(text: str) -> set[int]:
    if len(text) <= SHINGLE:
        return {zlib.crc32(text.encode()) & _PRIME}
    return {zlib.crc32(text[i:i + SHINGLE].encode()) & _PRIME for i in range(len(text) - SHINGLE + 1)}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(texts: list[str], threshold: float) -> dict[int, int]:
    """{index of a later row: index of the earlier row it nearly repeats}, by MinHash LSH, each candidate verified
    by its exact Jaccard similarity of character shingles (so the answer has no false positives)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, size=(NUM_HASHES, 1), dtype=np.int64)
    b = rng.integers(0, _PRIME, size=(NUM_HASHES, 1), dtype=np.int64)
    rows_per_band = NUM_HASHES // BANDS
    buckets: dict[tuple, list[int]] = {}
    shingles = [_shingles(t) for t in texts]
    copies: dict[int, int] = {}
    for index, grams in enumerate(shingles):
        signature = ((a * np.fromiter(grams, np.int64)[None, :] + b) % _PRIME).min(axis=1).tolist()  # (NUM_HASHES,)
        candidates = set()
        for band in range(BANDS):
            key = (band, *signature[band * rows_per_band:(band + 1) * rows_per_band])
            candidates.update(buckets.setdefault(key, []))
            buckets[key].append(index)
        for earlier in sorted(candidates):
            if earlier not in copies and _jaccard(grams, shingles[earlier]) >= threshold:
                copies[index] = earlier
                break
    return copies


def deduplicate(name: str, workspace: Path, new_name: str, near: bool = True, threshold: float = 0.8) -> dict:
    """Keep the first of each group of exact (ignoring case and spacing) or near duplicates."""
    if not 0.5 <= threshold <= 1:
        raise StudioError("data.bad_threshold")
    check_new_name(new_name, workspace, overwrite=False)
    kind, data = load_dataset(name, workspace)
    texts = [canonical(row_text(row)) for row in data.rows]
    first_of: dict[str, int] = {}
    exact = {}
    for index, text in enumerate(texts):
        if text in first_of:
            exact[index] = first_of[text]
        first_of.setdefault(text, index)
    unique = [i for i in range(len(texts)) if i not in exact]
    near_copies = {}
    if near:
        found = near_duplicates([_letters(texts[i]) for i in unique], threshold)
        near_copies = {unique[later]: unique[earlier] for later, earlier in found.items()}
    kept = [row for index, row in enumerate(data.rows) if index not in exact and index not in near_copies]
    examples = [{"removed_row": data.sources[later], "copy_of_row": data.sources[earlier]}
                for later, earlier in sorted({**exact, **near_copies}.items())[:5]]
    return _save(new_name, workspace, kind, data.format, kept, f"deduplicated from {name}", len(data.rows),
                 exact_removed=len(exact), near_removed=len(near_copies), examples=examples)


def filter_by_length(name: str, workspace: Path, new_name: str, tokenizer, min_tokens: int = 0,
                     max_tokens: int | None = None) -> dict:
    """Keep rows whose token length (chat template included) lies in [min_tokens, max_tokens]."""
    if min_tokens < 0 or (max_tokens is not None and max_tokens < max(min_tokens, 1)):
        raise StudioError("data.bad_length_filter")
    check_new_name(new_name, workspace, overwrite=False)
    kind, data = load_dataset(name, workspace)
    lengths = token_lengths(kind, data.rows, tokenizer)
    kept = [row for row, n in zip(data.rows, lengths) if n >= min_tokens and (max_tokens is None or n <= max_tokens)]
    return _save(new_name, workspace, kind, data.format, kept, f"length-filtered from {name}", len(data.rows),
                 min_tokens=min_tokens, max_tokens=max_tokens)


def split(name: str, workspace: Path, new_name: str, eval_fraction: float = 0.1, seed: int = 42) -> dict:
    """Write `<new_name>-train` and `<new_name>-eval`. Rows with the same prompt stay on one side, so pairs made
    from one ranked prompt cannot leak from train into eval."""
    if not 0 < eval_fraction < 1:
        raise StudioError("data.bad_eval_fraction")
    if not new_name:
        raise StudioError("data.split_needs_name")
    train_name, eval_name = f"{new_name}-train", f"{new_name}-eval"
    check_new_name(train_name, workspace, overwrite=False)
    check_new_name(eval_name, workspace, overwrite=False)
    kind, data = load_dataset(name, workspace)
    groups: dict[str, list[dict]] = {}
    for row in data.rows:
        if "text" in row:   # a document: copies of it stay on one side
            groups.setdefault(row["text"], []).append(row)
            continue
        prompt = row.get("prompt") or [t for t in row["messages"] if t["role"] != "assistant"]
        groups.setdefault(row_text({"prompt": prompt}), []).append(row)
    keys = list(groups)
    if len(keys) < 2:
        raise StudioError("data.one_prompt", name=quote(name))
    random.Random(seed).shuffle(keys)
    n_eval = min(max(1, round(len(keys) * eval_fraction)), len(keys) - 1)
    eval_rows = [row for key in keys[:n_eval] for row in groups[key]]
    train_rows = [row for key in keys[n_eval:] for row in groups[key]]
    source = f"split from {name} (eval fraction {eval_fraction}, seed {seed})"
    write_dataset(train_name, workspace, kind, data.format, train_rows, source)
    write_dataset(eval_name, workspace, kind, data.format, eval_rows, source)
    return {"train": train_name, "eval": eval_name, "train_rows": len(train_rows), "eval_rows": len(eval_rows),
            "kind": kind, "source_rows": len(data.rows)}


def _save(new_name, workspace, kind, format_name, rows, source, rows_in, **details) -> dict:
    if not rows:
        raise StudioError("data.nothing_left")
    write_dataset(new_name, workspace, kind, format_name, rows, source, **details)
    return {"name": new_name, "kind": kind, "rows_in": rows_in, "rows_out": len(rows), **details}
