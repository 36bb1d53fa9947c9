"""Datasets out (pipelines/data/export.py, pipelines/data/card.py): a workspace dataset written in TRL's column names
as JSONL or Parquet, reading back as the same rows (through upload_dataset too), with a dataset card that names its
kind, rows and where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines import api
from pipelines.data.files import read_records
from pipelines.data.store import load_dataset, save_records, write_dataset
from pipelines.errors import StudioError

KTO_ROWS = [{"prompt": "Say hi", "completion": "Hi there!", "label": True},
            {"prompt": "Say hi", "completion": "Go away.", "label": False},
            {"prompt": "2 + 2?", "completion": "4", "label": True}]
PROMPT_COMPLETION_ROWS = [{"prompt": "Capital of France?", "completion": "Paris."},
                          {"prompt": "Name a color", "completion": "Blue."}]
TRL_COLUMNS = {"alpaca-en-sample": ["messages"], "preference-en-sample": ["prompt", "chosen", "rejected"],
               "ranked-ko-sample": ["prompt", "chosen", "rejected"], "prompts-en-sample": ["prompt"],
               "kto-rows": ["prompt", "completion", "label"], "pc-rows": ["prompt", "completion"]}


@pytest.fixture
def datasets(workspace: Path) -> Path:
    save_records(KTO_ROWS, "kto-rows", workspace, "kto.csv")
    save_records(PROMPT_COMPLETION_ROWS, "pc-rows", workspace, "pc.jsonl")
    return workspace


def _card(path: Path) -> tuple[dict, str]:
    text = (path.parent / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
@pytest.mark.parametrize("name", list(TRL_COLUMNS))
def test_a_dataset_reads_back_with_the_same_rows_in_trls_columns(datasets, name, format):
    path = Path(api.export_dataset(datasets, name, format))
    assert path == datasets / "exports" / "datasets" / name / f"{name}.{format}"
    records = read_records(path)
    assert [list(r) for r in records] == [TRL_COLUMNS[name]] * len(records)
    kind, original = load_dataset(name, datasets)
    if name == "pc-rows":   # prompt/completion went out as such: the prompt's turns, then the answer's
        assert records[0] == {"prompt": [{"role": "user", "content": "Capital of France?"}],
                              "completion": [{"role": "assistant", "content": "Paris."}]}
    else:
        assert records == original.rows
    report = api.upload_dataset(datasets, str(path), f"{name}-back")   # and the studio takes it back as it was
    assert report["saved"] and report["errors"] == [] and report["kind"] == kind
    assert load_dataset(f"{name}-back", datasets)[1].rows == original.rows


def test_parquet_loads_in_the_datasets_library_with_turns_as_role_and_content(datasets, tmp_path):
    import datasets as hf_datasets

    path = api.export_dataset(datasets, "preference-en-sample", "parquet")
    loaded = hf_datasets.load_dataset("parquet", data_files=path, split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.column_names == ["prompt", "chosen", "rejected"]
    assert loaded[0]["chosen"][0]["role"] == "assistant" and len(loaded) == len(load_dataset("preference-en-sample",
                                                                                             datasets)[1].rows)


def test_the_folder_is_swapped_in_whole_and_holds_the_latest_export_alone(datasets):
    api.export_dataset(datasets, "kto-rows", "jsonl")
    api.export_dataset(datasets, "kto-rows", "parquet")
    root = datasets / "exports" / "datasets"
    assert sorted(p.name for p in (root / "kto-rows").iterdir()) == ["README.md", "kto-rows.parquet"]
    assert [p.name for p in root.iterdir() if p.name.endswith(".partial")] == []
    assert api.list_exports(datasets) == []   # dataset exports are not model exports


@pytest.mark.parametrize("name, format, code", [("kto-rows", "csv", "data.export_format"),
                                                ("no-such-data", "jsonl", "data.no_dataset"),
                                                ("../kto-rows", "jsonl", "paths.bad_name")])
def test_a_bad_format_or_name_is_one_sentence_and_writes_nothing(datasets, name, format, code):
    with pytest.raises(StudioError) as refused:
        api.export_dataset(datasets, name, format)
    assert refused.value.code == code
    assert not (datasets / "exports").exists() or not any((datasets / "exports").rglob("*.*"))


def test_the_card_of_compare_votes_names_the_checkpoints_compared_and_the_votes(workspace):
    prompt, answers = "What is RLHF?", ["Learning from human feedback.", "A fish.", "No idea, sorry."]
    checkpoints = ["sft-run/final", "dpo-run/final", "smollm2-135m-instruct"]
    api.vote(workspace, "my-votes", prompt, answers, checkpoints, [1, 3, 2])
    api.vote(workspace, "my-votes", "Say hi", ["Hi!", "Bye."], checkpoints[:2], [1, 2])
    front, body = _card(Path(api.export_dataset(workspace, "my-votes", "jsonl")))
    assert "alignment-studio" in front["tags"] and "dpo" in front["tags"] and "license" not in front
    assert front["task_categories"] == ["text-generation"] and front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "my-votes.jsonl"}]
    assert "| Kind | preference |" in body and "| Rows | 4 |" in body
    assert "2 votes gave 4 pairs" in body
    for checkpoint, chosen, rejected in (("sft-run/final", 3, 0), ("smollm2-135m-instruct", 1, 1),
                                         ("dpo-run/final", 0, 3)):
        assert f"| `{checkpoint}` | {chosen} | {rejected} |" in body


def test_the_card_of_best_of_n_outputs_names_the_run_that_sampled_them(workspace):
    from pipelines import runs
    from pipelines.config import parse_config_text

    config = parse_config_text("name: bon\nstage: rejection_sampling\nmodel: sft-run/final\ndataset: prompts-en-sample\n"
                               "rejection_sampling: {rules: [{min_words: 3}], num_samples: 6}\n")
    run_dir = runs.create_run(workspace, config)
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there, friend."}]}]
    write_dataset("bon-best", workspace, "instruction", "messages", rows, f"rejection sampling run {run_dir.name}")
    front, body = _card(Path(api.export_dataset(workspace, "bon-best", "parquet")))
    assert "sft" in front["tags"] and "| Kind | instruction |" in body and "| Rows | 1 |" in body
    assert "rejection-sampling (best-of-N) run `bon`" in body and "`sft-run/final`" in body and "6 times" in body
    assert "1 rules" in body and "| Trains | SFT |" in body


def test_the_card_of_an_upload_or_a_hub_import_names_its_source(datasets):
    _, body = _card(Path(api.export_dataset(datasets, "kto-rows", "jsonl")))
    assert "From `kto.csv`" in body and "| Kind | unpaired |" in body and "| Rows | 3 |" in body
    assert "| Trains | KTO |" in body and "KTOTrainer" in body
    save_records(KTO_ROWS, "from-hub", datasets, "hub:someone/kto-data (train)")
    _, body = _card(Path(api.export_dataset(datasets, "from-hub", "jsonl")))
    assert "[someone/kto-data](https://huggingface.co/datasets/someone/kto-data)" in body
    _, body = _card(Path(api.export_dataset(datasets, "prompts-en-sample", "jsonl")))
    assert "A sample bundled with Alignment Studio" in body and "| Kind | prompt_only |" in body


def test_the_cli_writes_the_export_and_prints_its_file(datasets, capsys):
    from pipelines.cli import main

    assert main(["--workspace", str(datasets), "export-dataset", "kto-rows", "--format", "parquet"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.is_file() and printed.name == "kto-rows.parquet"
    assert json.loads(json.dumps(read_records(printed)))[0]["label"] is True
