"""Datasets a run can use: the bundled samples in assets/ and those saved in workspace/datasets/<name>/.

A saved dataset is its normalised rows (`data.jsonl`) plus `meta.json` (kind, format, source, rows,
created). Samples and saved datasets are used by name; a file path is read in place but must lie
inside the workspace.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from pipelines.data.files import SUFFIXES, paused_gc, read_records
from pipelines.data.formats import Normalised, normalise_instruction
from pipelines.data.preference import detect_kind, normalise_preference, normalise_prompt_only, normalise_unpaired
from pipelines.data.text import normalise_text
from pipelines.errors import StudioError, quote, shorten
from pipelines.messages import Message
from pipelines.paths import ASSETS_DIR, check_name, inside

SAMPLES_DIR = ASSETS_DIR / "datasets"


def datasets_root(workspace: Path) -> Path:
    root = Path(workspace) / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sample_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SAMPLES_DIR.iterdir()) if p.suffix in SUFFIXES}


def list_datasets(workspace: Path) -> list[dict]:
    """Every dataset a picker offers: bundled samples first, then saved ones."""
    items = []
    for name, path in sample_files().items():   # small files: checking them costs milliseconds
        kind, result = normalise_records(read_records(path))
        items.append({"name": name, "source": "sample", "kind": kind, "format": result.format, "rows": len(result.rows)})
    for folder in sorted(datasets_root(workspace).iterdir()):
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            items.append({"name": folder.name, **json.loads(meta_path.read_text(encoding="utf-8"))})
    return items


def locate(name: str, workspace: Path) -> Path:
    """The file behind a dataset name or path."""
    samples = sample_files()
    if name in samples:
        return samples[name]
    saved = datasets_root(workspace) / name / "data.jsonl"
    if "/" not in name and "\\" not in name and saved.is_file():
        return saved
    if name.lower().endswith(SUFFIXES):
        path = inside(Path(workspace), name, "dataset path")
        if path.is_file():
            return path
    raise StudioError("data.no_dataset", name=quote(name))


def dataset_kind(name: str, workspace: Path) -> str:
    """The kind of rows a dataset holds: a saved one's meta.json says; a sample or a file is read."""
    path = locate(name, workspace)
    meta = path.with_name("meta.json")
    if path.name == "data.jsonl" and meta.is_file():
        kind = json.loads(meta.read_text(encoding="utf-8")).get("kind")
        if kind:
            return kind
    found = detect_kind(read_records(path))
    return "preference" if found == "ranked" else found


KINDS = ("instruction", "preference", "unpaired", "prompt_only", "text")   # data.holds.<kind>, data.wrong_kind.<kind>


def normalise_records(records: list) -> tuple[str, Normalised]:
    """(kind, normalised rows) of records of any supported shape."""
    with paused_gc():   # 100k rows are 100k new dicts: collecting only once they are built saves a fifth
        return _normalise(records, detect_kind(records))


def _normalise(records: list, kind: str) -> tuple[str, Normalised]:
    if kind in ("preference", "ranked"):
        kind, result = "preference", normalise_preference(records)
    elif kind == "unpaired":
        result = normalise_unpaired(records)
    elif kind == "prompt_only":
        result = normalise_prompt_only(records)
    elif kind == "text":
        result = normalise_text(records)
    else:
        result = normalise_instruction(records)
    result.warnings.extend(quality_warnings(kind, result.rows, result.sources))
    return kind, result


LENGTH_IMBALANCE = 1.5   # chosen answers this much longer (or shorter) on average than rejected ones


def quality_warnings(kind: str, rows: list[dict], sources: list[int]) -> list[Message]:
    """Not errors, but worth knowing before training: duplicates, and a length bias a reward model would learn."""
    warnings = []
    seen: dict[str, int] = {}
    duplicates = []
    for number, row in zip(sources, rows):
        key = _row_key(row)
        if key in seen:
            duplicates.append((number, seen[key]))
        seen.setdefault(key, number)
    if duplicates:
        number, first = duplicates[0]
        warnings.append(Message("data.one_duplicate" if len(duplicates) == 1 else "data.duplicates",
                                count=len(duplicates), row=number, copy=first))
    if kind == "preference" and rows:
        chosen = sum(len(r["chosen"][0]["content"]) for r in rows) / len(rows)
        rejected = sum(len(r["rejected"][0]["content"]) for r in rows) / len(rows)
        ratio = chosen / max(rejected, 1)
        if ratio > LENGTH_IMBALANCE or ratio < 1 / LENGTH_IMBALANCE:
            warnings.append(Message("data.length_imbalance", ratio=ratio))
    return warnings


def _row_key(row: dict) -> tuple:
    """A normalised row as a hashable value made of its own strings (no copy of the text, unlike a JSON dump)."""
    return tuple(tuple((turn["role"], turn["content"]) for turn in value) if isinstance(value, list) else value
                 for value in row.values())


def normalise_file(path: Path) -> Normalised:
    return normalise_records(read_records(path))[1]


def load_dataset(name: str, workspace: Path, kind: str | None = None) -> tuple[str, Normalised]:
    """(kind, normalised rows) of a dataset that is usable as it is, and of `kind` when one is asked for;
    refused in one sentence (naming the first bad row, or the kind it holds) if not."""
    path = locate(name, workspace)
    if path.name == "data.jsonl" and not path.stat().st_size and path.with_name("votes.jsonl").is_file():
        raise StudioError("data.votes_without_pairs", name=quote(name))   # only ties: votes, yet no pair to learn
    found, result = normalise_records(read_records(path))
    if kind and found != kind:
        _refuse_kind(name, found, kind)
    if result.errors:
        first, more = result.errors[0].as_message(), len(result.errors) - 1
        if more:
            raise StudioError("data.has_bad_rows_more", name=quote(name), first=first, more=more)
        raise StudioError("data.has_bad_rows", name=quote(name), first=first)
    if not result.rows:
        raise StudioError("data.no_usable_rows_in", name=quote(name))
    return found, result


def load_rows(name: str, workspace: Path, kind: str = "instruction") -> list[dict]:
    """The normalised rows of a dataset of `kind`, refusing another kind, bad rows (named) or no rows."""
    return load_dataset(name, workspace, kind)[1].rows


def load_stage_rows(name: str, workspace: Path, stage: str, seed: int = 42) -> list[dict]:
    """The rows `stage` trains on. KTO also takes preference pairs: each becomes a desirable and an undesirable
    row, shuffled, so that no batch is all one label (TRL would put every chosen row before every rejected one)."""
    found, result = load_dataset(name, workspace)
    return stage_rows(name, found, result.rows, stage, seed)


def stage_rows(name: str, found: str, rows: list[dict], stage: str, seed: int = 42) -> list[dict]:
    """`rows` of kind `found` as `stage` takes them, or one sentence naming the kind it needs."""
    import random

    from pipelines.stages import get_stage

    kind = get_stage(stage).data_kind
    if kind == "unpaired" and found == "preference":
        unpaired = [{"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen"}
                    for pair in rows for side in ("chosen", "rejected")]
        random.Random(seed).shuffle(unpaired)
        return unpaired
    if found != kind:
        _refuse_kind(name, found, kind)
    return rows


def _refuse_kind(name: str, found: str, kind: str):
    raise StudioError(f"data.wrong_kind.{kind}", name=quote(name), has=Message(f"data.holds.{found}"),
                      needs=Message(f"data.holds.{kind}"))


def parse_columns(columns: dict | str | None) -> dict[str, str]:
    """A column mapping {field the studio reads: column in the file}, from a dict or "instruction=question, output=answer"."""
    if not columns:
        return {}
    if isinstance(columns, dict):
        pairs = list(columns.items())
    else:
        pairs = []
        for part in str(columns).replace("\n", ",").split(","):
            if part.strip():
                field_name, sep, column = part.partition("=")
                if not sep or not field_name.strip() or not column.strip():
                    raise StudioError("data.bad_column_mapping", mapping=quote(part.strip()))
                pairs.append((field_name, column))
    return {str(k).strip(): str(v).strip() for k, v in pairs}


def map_columns(records: list, columns: dict | str | None) -> list:
    """Rename the file's columns to the names a format uses, so a file with `question`/`answer` reads as Alpaca."""
    mapping = parse_columns(columns)
    if not mapping:
        return records
    present = set().union(*(r.keys() for r in records if isinstance(r, dict)))
    for field_name, column in mapping.items():
        if column not in present:
            columns_present = ", ".join(sorted(map(str, present)))
            if columns_present:
                raise StudioError("data.no_such_column", field=field_name, column=quote(column),
                                  present=shorten(columns_present))
            raise StudioError("data.no_columns", field=field_name, column=quote(column))
    renamed = set(mapping.values())
    return [{**{k: v for k, v in r.items() if k not in renamed}, **{f: r.get(c) for f, c in mapping.items()}}
            if isinstance(r, dict) else r for r in records]


def save_records(records: list, name: str, workspace: Path, source: str, drop_bad_rows: bool = False,
                 columns: dict | str | None = None, replace: bool = False) -> dict:
    """Validate records of any supported shape and save them as a named dataset; return the check report.

    Nothing is written when a row is bad (unless `drop_bad_rows`) or no row is usable, and an existing dataset
    of that name is replaced only when `replace` is set."""
    check_new_name(name, workspace, overwrite=replace)
    kind, result = normalise_records(map_columns(records, columns))
    report = {"name": name, "kind": kind, **result.report(), "saved": False}
    if (result.errors and not drop_bad_rows) or not result.rows:
        return report
    write_dataset(name, workspace, kind, result.format, result.rows, source, dropped_rows=len(result.errors))
    return {**report, "saved": True}


def save_upload(upload: Path, name: str, workspace: Path, drop_bad_rows: bool = False,
                columns: dict | str | None = None, replace: bool = False) -> dict:
    """Validate an uploaded file and save it as a named dataset; return the report (nothing written on errors).
    Without a name, the dataset is named after the file."""
    if name is None or (isinstance(name, str) and not name.strip()):
        name = free_name(Path(upload).stem, workspace)
    check_new_name(name, workspace, overwrite=replace)   # before reading what may be 200 MB
    if Path(upload).is_file():   # hosted mode: the upload's size and the user's quota, before it is read
        from pipelines.hosting import check_data
        check_data(workspace, Path(upload).stat().st_size, "file")
    return save_records(read_records(Path(upload)), name, workspace, Path(upload).name, drop_bad_rows, columns, replace)


def free_name(wanted: str, workspace: Path) -> str:
    """A free dataset name made from a file's or a Hub dataset's: "My data (v2)" → "My-data-v2", or "My-data-v2-2"
    if taken."""
    import re

    while Path(wanted).suffix.lower() in SUFFIXES:   # "x.json.csv": a name must not look like a file's
        wanted = Path(wanted).stem
    base = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", wanted)).strip("-._")[:60] or "dataset"
    name, n = base, 1
    while name in sample_files() or (datasets_root(workspace) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def check_new_name(name: str, workspace: Path, overwrite: bool) -> None:
    check_name(name, "dataset name")
    if name.lower().endswith(SUFFIXES):   # `dataset: x.jsonl` in a config must mean one thing: the file
        raise StudioError("data.name_like_file", name=quote(name), suffix=quote(Path(name).suffix))
    if name in sample_files():
        raise StudioError("data.sample_name", name=quote(name))
    if not overwrite and (datasets_root(workspace) / name).exists():
        raise StudioError("data.name_taken", name=quote(name))


def write_dataset(name: str, workspace: Path, kind: str, format_name: str, rows: list[dict], source: str,
                  **meta_extra) -> Path:
    """Write rows and meta.json into a staging folder, then swap it in whole: a reader never sees half a dataset."""
    folder = datasets_root(workspace) / name
    staging = folder.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with open(staging / "data.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    meta = {"kind": kind, "format": format_name, "source": source, "rows": len(rows), "created": time.time(), **meta_extra}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def preview(name: str, workspace: Path, tokenizer, n: int = 3) -> list[dict]:
    """The first `n` rows as the model sees them: chat template applied, token counts, and the text split into
    segments marked `loss: True` where the tokens carry the training loss (assistant tokens, when the
    template marks them with {% generation %}; otherwise every token). A preference row is shown with its chosen
    answer, and under `rejected` the same for its rejected answer. A text dataset's documents are shown as a
    pretraining run reads them: no template, every token trained on."""
    kind, result = normalise_records(read_records(locate(name, workspace)))
    rows = result.rows[:n]
    if kind == "text":
        return [_rendered_document(tokenizer, row["text"]) for row in rows]
    rendered = []
    for row in rows:
        conversation = row.get("messages") or row["prompt"] + (row.get("chosen") or row.get("completion") or [])
        shown = _rendered(tokenizer, conversation)
        if row.get("rejected"):   # a pair is two conversations: the answer preferred, and the one it is preferred to
            shown["rejected"] = _rendered(tokenizer, row["prompt"] + row["rejected"])
        rendered.append(shown)
    return rendered


def _rendered(tokenizer, conversation: list[dict]) -> dict:
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    encoded = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded.get("assistant_masks") or [1] * len(encoded["input_ids"])
    return {"messages": conversation, "text": text, "tokens": len(ids), "loss_tokens": sum(mask),
            "segments": _segments(tokenizer, ids, mask)}


PREVIEW_CHARS = 20_000   # of a document shown: a 10 MB one would not fit a page


def _rendered_document(tokenizer, document: str) -> dict:
    """A document's first PREVIEW_CHARS characters, tokenized as a pretraining run does (no special tokens)."""
    shown = document[:PREVIEW_CHARS]
    ids = tokenizer(shown, add_special_tokens=False)["input_ids"]
    return {"text": shown, "characters": len(document), "truncated": len(shown) < len(document),
            "tokens": len(ids), "loss_tokens": len(ids), "segments": _segments(tokenizer, ids, [1] * len(ids))}


def _segments(tokenizer, ids: list[int], mask: list[int]) -> list[dict]:
    """Consecutive tokens with the same mask, decoded together (so multi-byte characters stay whole)."""
    segments: list[dict] = []
    start = 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or mask[index] != mask[start]:
            segments.append({"text": tokenizer.decode(ids[start:index]), "loss": bool(mask[start])})
            start = index
    return segments
