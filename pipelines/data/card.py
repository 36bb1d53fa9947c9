"""A dataset card: `README.md` with the Hub's YAML front matter (task, tags, size, the data file), then what the rows
are, how many, in which columns, what trains on them, and where they came from — for Compare's votes the checkpoints
compared and the votes cast, for best-of-N outputs the run that sampled them, for an import or an upload its source.

Its words are in assets/dataset_card.md.jinja; this module gathers the facts. In English, as cards on the Hub are.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipelines import run_files
from pipelines.paths import ASSETS_DIR

TEMPLATE = ASSETS_DIR / "dataset_card.md.jinja"
WHAT = {"instruction": "Instruction conversations for supervised fine-tuning",
        "preference": "Preference pairs: a prompt, the answer preferred and the one rejected",
        "unpaired": "Answers labelled desirable or not (unpaired preference)",
        "prompt_only": "Prompts for RL and best-of-N, with no answers",
        "text": "Raw documents for continued pretraining (next-token prediction)"}
TRAINER = {"instruction": "SFTTrainer", "preference": "DPOTrainer", "unpaired": "KTOTrainer",
           "prompt_only": "GRPOTrainer", "text": "SFTTrainer"}   # a `text` column: language modelling
KIND_TAGS = {"instruction": ["sft"], "preference": ["preference", "dpo"], "unpaired": ["unpaired-preference", "kto"],
             "prompt_only": ["prompt-only", "rl"], "text": ["pretraining"]}
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"))
BEST_OF_N = re.compile(r"rejection sampling run (\S+)")   # the source pipelines/stages/rejection_sampling.py writes
SHOWN_CHECKPOINTS = 20


def size_category(rows: int) -> str:
    return next((label for limit, label in SIZES if rows < limit), "n>10M")


def front_matter(kind: str, rows: int, file: str) -> dict:
    """Task, tags and size for the Hub's search, and the one data file as the train split (so the Hub's viewer and
    load_dataset read it, not the card). No license: the studio cannot know the data's."""
    return {"task_categories": ["text-generation"], "tags": ["alignment-studio", "trl", *KIND_TAGS[kind]],
            "size_categories": [size_category(rows)],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": file}]}]}


def trains(kind: str) -> str:
    """The stages that train on rows of `kind`, from the stage registry; KTO also takes pairs."""
    from pipelines.stages import all_stages

    names = [stage.name.upper() for stage in all_stages() if stage.data_kind == kind]
    if kind == "preference":
        names.append("KTO (each pair as two labelled rows)")
    return ", ".join(names) or "—"


def origin(workspace: Path, name: str, meta: dict) -> list[str]:
    """Where the rows came from, as Markdown paragraphs."""
    source = str(meta.get("source") or "")
    if "votes" in meta:
        return _votes(workspace, name, meta)
    if found := BEST_OF_N.fullmatch(source):
        return _best_of_n(workspace, found[1], meta)
    if source == "sample":
        return ["A sample bundled with Alignment Studio."]
    if source.startswith("hub:"):
        repo, _, rest = source.removeprefix("hub:").partition(" ")
        return [f"Imported from the Hub dataset [{repo}](https://huggingface.co/datasets/{repo}) {rest}, then checked "
                "and normalised by the studio; see its own card for its license and terms."]
    if source == "table":
        return ["Typed into the studio's Data table."]
    dropped = f" ({meta['dropped_rows']} bad rows dropped)" if meta.get("dropped_rows") else ""
    return [f"From `{_cell(source) or 'a file'}`{dropped}, checked and normalised by the studio."]


def _votes(workspace: Path, name: str, meta: dict) -> list[str]:
    """Compare's votes: how many, and for each checkpoint how often its answer was chosen and rejected."""
    tally: dict[str, list[int]] = {}
    for row in run_files.read_jsonl(Path(workspace) / "datasets" / name / "data.jsonl"):
        for side, index in (("chosen_checkpoint", 0), ("rejected_checkpoint", 1)):
            if row.get(side):
                tally.setdefault(str(row[side]), [0, 0])[index] += 1
    paragraphs = [f"Votes cast in Alignment Studio's Compare tab: {meta['votes']} votes gave {meta.get('rows', '?')} "
                  f"pairs, each the answer a person ranked higher over one ranked lower, for the same prompt."]
    if tally:
        lines = [f"Checkpoints compared ({len(tally)}): " + ", ".join(f"`{c}`" for c in list(tally)[:SHOWN_CHECKPOINTS])
                 + (" …" if len(tally) > SHOWN_CHECKPOINTS else ""), "",
                 "| Checkpoint | Chosen | Rejected |", "|---|---:|---:|"]
        lines += [f"| `{_cell(c)}` | {won} | {lost} |" for c, (won, lost) in sorted(tally.items())[:SHOWN_CHECKPOINTS]]
        paragraphs.append("\n".join(lines))
    return paragraphs


def _best_of_n(workspace: Path, run_id: str, meta: dict) -> list[str]:
    """Best-of-N: the run that sampled the answers, its model, N and what scored them (if the run is still there)."""
    from pipelines.errors import StudioError
    from pipelines.runs import load_config

    said = f"Answers sampled and scored by the rejection-sampling (best-of-N) run `{run_id}`"
    try:
        config = load_config(Path(workspace) / "runs" / run_id)
    except (OSError, StudioError):
        return [said + "."]
    settings = config.rejection_sampling
    scorer = " + ".join(filter(None, [settings.reward, f"{len(settings.rules)} rules" if settings.rules else ""]))
    kept = ("each prompt's best answer" if meta.get("kind") == "instruction"
            else "each prompt's best answer over its worst")
    return [f"{said}: `{_cell(config.model)}` answered each prompt of `{_cell(config.dataset)}` "
            f"{settings.num_samples} times (temperature {settings.temperature:g}, at most {settings.response_length} "
            f"tokens), scored by {_cell(scorer) or '?'}; these rows keep {kept}."]


def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")[:200]


def card_text(workspace: Path, name: str, kind: str, columns: list[str], rows: int, file: str, format: str,
              meta: dict) -> str:
    from jinja2 import Environment

    environment = Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return environment.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        front_matter=yaml.safe_dump(front_matter(kind, rows, file), sort_keys=False, allow_unicode=True),
        name=name, what=WHAT[kind], kind=kind, columns=", ".join(f"`{c}`" for c in columns), rows=rows, file=file,
        format=format.upper() if format == "jsonl" else "Parquet", trains=trains(kind),
        origin=origin(workspace, name, meta), loader="json" if format == "jsonl" else "parquet",
        trainer=TRAINER[kind])

