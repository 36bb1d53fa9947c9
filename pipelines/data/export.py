"""A workspace dataset taken out of the studio: `workspace/exports/datasets/<name>/` holding `<name>.jsonl` or
`<name>.parquet` in TRL's column names, and a dataset card (pipelines/data/card.py), ready to download or to push to
the Hub as a dataset (pipelines/hub_push.py).

The rows are the studio's normalised rows, which already are TRL's conversational shapes (pipelines/data/formats.py,
preference.py): `messages` (SFT); `prompt`, `chosen`, `rejected` (DPO, reward, ORPO); `prompt`, `completion`,
`label` (KTO); `prompt` (PPO, GRPO, RLOO, best-of-N). Instruction data that came as prompt/completion goes out as
prompt/completion again, so a trainer that learns only the completion still can. Read back with upload_dataset, an
export gives the same rows.

The folder is written beside itself and swapped in whole, as model exports are: a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pipelines.errors import StudioError, quote

FORMATS = ("jsonl", "parquet")
DATASETS_DIR = "datasets"   # under exports/: pipelines/export.list_exports leaves it out of the model exports


def datasets_exports_root(workspace: Path) -> Path:
    from pipelines.export import exports_root
    return exports_root(workspace) / DATASETS_DIR


def export_dataset(workspace: Path, name: str, format: str = "jsonl") -> Path:
    """Write dataset `name` as exports/datasets/<name>/<name>.<format> with its card; return the data file."""
    from pipelines.data.card import card_text
    from pipelines.data.files import SUFFIXES
    from pipelines.data.store import load_dataset, locate
    from pipelines.hosting import check_disk
    from pipelines.paths import check_name, file_lock

    if not isinstance(format, str) or format.strip().lower() not in FORMATS:
        raise StudioError("data.export_format", format=quote(format), formats=", ".join(FORMATS))
    format = format.strip().lower()
    check_name(name, "dataset name")   # one folder name: a dataset's, or a data file's right in the workspace
    kind, data = load_dataset(name, workspace)   # refuses bad rows, no rows, an unknown name, in one sentence
    check_disk(workspace, locate(name, workspace).stat().st_size)   # hosted mode: about as big again
    stem = name[: -len(Path(name).suffix)] if name.lower().endswith(SUFFIXES) else name
    meta = _meta(workspace, name)
    # A saved dataset's rows are normalised already: the format they were read from is kept in its meta.json.
    rows = trl_rows(kind, meta.get("format") or data.format, data.rows)
    root = datasets_exports_root(workspace)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=root))
    try:
        file = f"{stem}.{format}"
        write_rows(rows, staging / file, format)
        card = card_text(workspace, stem, kind, list(rows[0]), len(rows), file, format, meta)
        (staging / "README.md").write_text(card, encoding="utf-8")
        final = root / stem
        with file_lock(root / f".{stem}.lock"):   # two exports of one dataset at once: one after the other
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / file


def trl_rows(kind: str, format_name: str, rows: list[dict]) -> list[dict]:
    """The rows in TRL's columns: as normalised, but instruction data read from prompt/completion goes out so again
    (the prompt's turns, then the answer's)."""
    if kind != "instruction" or format_name != "prompt_completion":
        return rows
    split = []
    for row in rows:
        turns = row["messages"]
        answer_from = max(i for i, turn in enumerate(turns) if turn["role"] != "assistant") + 1
        split.append({"prompt": turns[:answer_from], "completion": turns[answer_from:]})
    return split


def write_rows(rows: list[dict], path: Path, format: str) -> None:
    if format == "jsonl":
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)   # turns are list<struct<role, content>>, as datasets reads them


def _meta(workspace: Path, name: str) -> dict:
    """Where the dataset came from, for its card: a saved dataset's meta.json, a sample, or a file of the workspace."""
    from pipelines.data.store import datasets_root, sample_files

    if name in sample_files():
        return {"source": "sample"}
    try:
        return json.loads((datasets_root(workspace) / name / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"source": name}
