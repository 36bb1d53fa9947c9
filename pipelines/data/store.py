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

from pipelines.data.files import SUFFIXES, read_records
from pipelines.data.formats import Normalised, normalise_instruction
from pipelines.errors import StudioError
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
    items = [{"name": name, "source": "sample", "kind": "instruction", "path": str(path)}
             for name, path in sample_files().items()]
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
    raise StudioError(f"There is no dataset {name!r}: pick a sample, a saved dataset (list_datasets()), "
                      "or upload a file first.")


def normalise_file(path: Path) -> Normalised:
    return normalise_instruction(read_records(path))


def load_rows(name: str, workspace: Path) -> list[dict]:
    """The normalised rows of a dataset, refusing one with bad rows (named) or no rows."""
    result = normalise_file(locate(name, workspace))
    if result.errors:
        first = result.errors[0]
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        raise StudioError(f"Dataset {name!r} has bad rows: {first}{more}. Fix the file or re-upload it with bad rows dropped.")
    if not result.rows:
        raise StudioError(f"Dataset {name!r} has no usable rows.")
    return result.rows


def save_upload(upload: Path, name: str, workspace: Path, drop_bad_rows: bool = False) -> dict:
    """Validate an uploaded file and save it as a named dataset; return the report (nothing written on errors)."""
    check_name(name, "dataset name")
    if name in sample_files():
        raise StudioError(f"{name!r} is the name of a bundled sample; choose another name.")
    result = normalise_file(Path(upload))
    report = {"name": name, "kind": "instruction", **result.report(), "saved": False}
    if (result.errors and not drop_bad_rows) or not result.rows:
        return report
    folder = datasets_root(workspace) / name
    staging = folder.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with open(staging / "data.jsonl", "w", encoding="utf-8") as handle:
        for row in result.rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    meta = {"kind": "instruction", "format": result.format, "source": Path(upload).name, "rows": len(result.rows),
            "dropped_rows": len(result.errors), "created": time.time()}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return {**report, "saved": True, "rows": len(result.rows)}


def preview(name: str, workspace: Path, tokenizer, n: int = 3) -> list[dict]:
    """The first `n` rows as the model sees them: chat template applied, with token counts."""
    rows = normalise_file(locate(name, workspace)).rows[:n]
    rendered = []
    for row in rows:
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        rendered.append({"messages": row["messages"], "text": text, "tokens": len(tokenizer(text)["input_ids"])})
    return rendered
