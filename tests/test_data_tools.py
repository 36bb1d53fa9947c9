"""Data sources beyond a file (Hub, the editable table), column mapping, length statistics, and the tools that make
smaller, cleaner datasets without touching the original."""

import json
import time

import pytest

from pipelines import api
from pipelines.data.store import list_datasets, load_dataset, load_rows
from pipelines.errors import StudioError
from tests.conftest import TINY_ROWS, write_jsonl


def saved_names(workspace):
    return {d["name"] for d in list_datasets(workspace) if d["source"] != "sample"}


def test_a_column_mapping_reads_a_file_with_other_column_names(workspace, tmp_path):
    rows = [{"question": r["instruction"], "answer": r["output"], "id": i} for i, r in enumerate(TINY_ROWS)]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    unmapped = api.upload_dataset(workspace, str(path), "qa")
    assert not unmapped["saved"] and "unrecognised format" in unmapped["errors"][0]["message"]
    report = api.upload_dataset(workspace, str(path), "qa", columns="instruction=question, output=answer")
    assert report["saved"] and report["format"] == "alpaca" and report["rows"] == 4
    assert load_rows("qa", workspace)[1]["messages"][1]["content"] == TINY_ROWS[1]["output"]
    with pytest.raises(StudioError, match="no column 'reply'"):
        api.upload_dataset(workspace, str(path), "qa2", columns={"output": "reply"})


def test_hub_import_offline_is_one_sentence_fast_and_writes_nothing(workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(StudioError, match="not in the local Hugging Face cache and the Hub is off") as error:
        api.import_hub_dataset(workspace, "nobody-has/this-dataset", None, "train", "hub-data")
    assert time.time() - started < 15 and "\n" not in str(error.value)
    assert saved_names(workspace) == set()


def test_hub_import_with_no_network_says_so_without_hanging(workspace, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.time()
    with pytest.raises(StudioError, match="Could not reach the Hugging Face Hub") as for_data:
        api.import_hub_dataset(workspace, "org/data", None, "train", "hub-data")
    assert time.time() - started < 15
    assert saved_names(workspace) == set()
    from pipelines.models import resolve_model
    with pytest.raises(StudioError) as for_model:   # one check, one wording, for models and datasets
        resolve_model("org/model", workspace)
    assert for_data.value.code == for_model.value.code == "hub.unreachable"


@pytest.mark.parametrize("repo_id", ["https://evil.example/x", "../etc", "a/b/c", "", "secretdir", "json",
                                     "org/na\nme", "buckets/x"])
def test_hub_ids_that_are_not_ids_are_refused(workspace, repo_id):
    with pytest.raises(StudioError, match="not a Hub dataset id"):
        api.import_hub_dataset(workspace, repo_id, None, "train", "x")


def test_a_hub_id_is_never_read_as_a_folder_beside_the_app(workspace, tmp_path, monkeypatch):
    # Found: with the Hub off, "secretdir" was handed to datasets.load_dataset, which read the folder of that name
    # relative to the app's working directory, and its rows came back through dataset_table.
    import datasets

    for folder in ("secretdir", "secret/dir"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "passwords.txt").write_text("db_password=hunter2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALIGNMENT_STUDIO_CACHE", str(tmp_path / "app-cache"))
    with pytest.raises(StudioError, match="not a Hub dataset id"):
        api.import_hub_dataset(workspace, "secretdir", None, "train", "leak")
    asked = {}
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **kw: asked.update(path=path, **kw) or real(path, *a, **kw))
    with pytest.raises(StudioError) as error:
        api.import_hub_dataset(workspace, "secret/dir", None, "train", "leak")
    assert "hunter2" not in str(error.value) and saved_names(workspace) == set()
    assert asked["path"] == "hf://datasets/secret/dir" and asked["cache_dir"] == str(tmp_path / "app-cache" / "datasets")


def test_hub_rows_go_through_the_same_checks_as_an_upload(workspace, monkeypatch):
    from pipelines.data import hub

    hh = [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?",
           "rejected": "\n\nHuman: Hi\n\nAssistant: What."},
          {"chosen": "\n\nHuman: Bye\n\nAssistant: Goodbye!", "rejected": "\n\nHuman: Bye\n\nAssistant: Goodbye!"}]
    asked = {}
    monkeypatch.setattr(hub, "fetch_rows", lambda *args: asked.setdefault("args", args) and hh)
    report = api.import_hub_dataset(workspace, "Anthropic/hh-rlhf", "", "test", "hh", max_rows=2)
    assert asked["args"] == ("Anthropic/hh-rlhf", None, "test", 2)
    assert not report["saved"] and report["errors"] == [{"row": 2, "field": "rejected",
                                                         "message": "is identical to chosen: the pair teaches nothing"}]
    report = api.import_hub_dataset(workspace, "Anthropic/hh-rlhf", "", "test", "hh", max_rows=2, drop_bad_rows=True)
    assert report["saved"] and report["kind"] == "preference" and report["rows"] == 1
    meta = next(d for d in list_datasets(workspace) if d["name"] == "hh")
    assert meta["source"] == "hub:Anthropic/hh-rlhf (test)" and meta["dropped_rows"] == 1


def test_the_editable_table_round_trip(workspace):
    table = api.dataset_table(workspace, "tiny.jsonl")
    assert table["kind"] == "instruction" and table["columns"] == ["instruction", "input", "output", "system"]
    assert table["rows"][0] == ["Say hi", "", "Hi there! Hope this helps!", ""]
    edited = [row[:] for row in table["rows"]]
    edited[0][2] = "Hello! Hope this helps!"                      # edit
    del edited[1]                                                # delete
    edited.append(["Name a fruit", "", "An apple. Hope this helps!", "Be brief."])   # add
    edited.append(["", "", "", ""])                              # the table's empty input row is not a row
    report = api.save_table(workspace, "instruction", edited, "typed")
    assert report["saved"] and report["rows"] == 4 and report["format"] == "alpaca"
    again = api.dataset_table(workspace, "typed")["rows"]
    assert again == [edited[0], edited[1], edited[2], edited[3]]
    assert load_rows("typed", workspace)[3]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_a_bad_table_row_is_named_and_nothing_is_saved(workspace):
    rows = [["What is 2+2?", "4", "5"], ["Same?", "yes", "yes"], ["", "", ""]]
    report = api.save_table(workspace, "preference", rows, "prefs")
    assert not report["saved"] and report["errors"][0]["row"] == 2 and report["errors"][0]["field"] == "rejected"
    assert "prefs" not in saved_names(workspace)
    assert api.save_table(workspace, "unpaired", [["Hi", "Hello", " True "]], "kto")["saved"]
    assert api.dataset_table(workspace, "kto")["rows"] == [["Hi", "Hello", "true"]]


def test_multi_turn_rows_are_not_forced_into_the_table(workspace, tmp_path):
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    write_jsonl(workspace / "chat.jsonl", [chat])
    with pytest.raises(StudioError, match="row 1 has 4 turns"):
        api.dataset_table(workspace, "chat.jsonl")


def test_length_stats_count_template_tokens_and_what_max_length_cuts(tiny_model, workspace):
    preview = api.preview_dataset(workspace, "tiny.jsonl", str(tiny_model), 4)
    stats = api.dataset_stats(workspace, "tiny.jsonl", str(tiny_model), max_length=512)
    assert stats["lengths"] == [row["tokens"] for row in preview]
    assert (stats["rows"], stats["kind"], stats["format"]) == (4, "instruction", "alpaca")
    assert stats["max_tokens"] == max(stats["lengths"]) and stats["warnings"] == []
    short = min(stats["lengths"])
    cut = api.dataset_stats(workspace, "tiny.jsonl", str(tiny_model), max_length=short)
    over = [n - short for n in stats["lengths"] if n > short]
    assert cut["rows_over_max_length"] == len(over) and cut["tokens_cut"] == sum(over)
    assert f"{len(over)} of 4 rows are longer than max_length {short}" in cut["warnings"][0]


def test_preference_lengths_are_the_longer_side(tiny_model, workspace):
    write_jsonl(workspace / "p.jsonl", [{"prompt": "Hi", "chosen": "Yo", "rejected": "Hello there, my friend"}])
    write_jsonl(workspace / "sft.jsonl", [{"prompt": "Hi", "completion": answer} for answer in ("Yo", "Hello there, my friend")])
    pair = api.dataset_stats(workspace, "p.jsonl", str(tiny_model))["lengths"]
    sides = api.dataset_stats(workspace, "sft.jsonl", str(tiny_model))["lengths"]
    assert sides[0] < sides[1] and pair == [sides[1]]


def test_deduplicate_removes_exact_and_near_copies_and_keeps_the_original(workspace):
    base = "Explain photosynthesis in simple words for a child who is curious about plants and sunlight"
    rows = [{"instruction": base, "input": "", "output": "Plants make food from light."},
            {"instruction": base.upper(), "input": "", "output": "plants  make food from light."},    # exact, modulo case/spaces
            {"instruction": base + " please", "input": "", "output": "Plants make food from light."},    # near
            {"instruction": "What is the capital of Korea?", "input": "", "output": "Seoul."}]
    write_jsonl(workspace / "dups.jsonl", rows)
    before = (workspace / "dups.jsonl").read_bytes()
    report = api.deduplicate_dataset(workspace, "dups.jsonl", "dups-clean")
    assert (report["rows_in"], report["rows_out"], report["exact_removed"], report["near_removed"]) == (4, 2, 1, 1)
    assert report["examples"] == [{"removed_row": 2, "copy_of_row": 1}, {"removed_row": 3, "copy_of_row": 1}]
    assert [r["messages"][1]["content"] for r in load_rows("dups-clean", workspace)] == ["Plants make food from light.", "Seoul."]
    assert (workspace / "dups.jsonl").read_bytes() == before
    exact_only = api.deduplicate_dataset(workspace, "dups.jsonl", "dups-exact", near=False)
    assert exact_only["rows_out"] == 3
    with pytest.raises(StudioError, match="already exists"):
        api.deduplicate_dataset(workspace, "dups.jsonl", "dups-clean")


def test_length_filter_keeps_rows_in_range(tiny_model, workspace):
    lengths = api.dataset_stats(workspace, "tiny.jsonl", str(tiny_model))["lengths"]
    limit = sorted(lengths)[1]
    report = api.filter_dataset(workspace, "tiny.jsonl", "short", str(tiny_model), 0, limit)
    assert report["rows_out"] == sum(n <= limit for n in lengths) < 4
    with pytest.raises(StudioError, match="No rows would be left"):
        api.filter_dataset(workspace, "tiny.jsonl", "none", str(tiny_model), 10_000, 20_000)
    assert "none" not in saved_names(workspace)


def test_split_keeps_pairs_of_one_prompt_on_one_side(workspace):
    ranked = [{"prompt": f"Question {i}?", "answers": [{"text": f"best {i}", "rank": 1}, {"text": f"ok {i}", "rank": 2},
                                                        {"text": f"bad {i}", "rank": 3}]} for i in range(20)]
    write_jsonl(workspace / "ranked.jsonl", ranked)
    report = api.split_dataset(workspace, "ranked.jsonl", "ranked", eval_fraction=0.2, seed=1)
    assert (report["train_rows"], report["eval_rows"]) == (48, 12)
    prompts = {side: {json.dumps(r["prompt"]) for r in load_rows(f"ranked-{side}", workspace, "preference")}
               for side in ("train", "eval")}
    assert len(prompts["eval"]) == 4 and not prompts["train"] & prompts["eval"]
    kind, eval_data = load_dataset("ranked-eval", workspace)
    assert kind == "preference" and eval_data.format == "chosen_rejected_messages"
    with pytest.raises(StudioError, match="between 0 and 1"):
        api.split_dataset(workspace, "ranked.jsonl", "other", eval_fraction=1.5)


def test_a_run_records_the_rows_its_max_length_would_cut(tiny_model, workspace):
    from tests.conftest import tiny_config

    shortest = min(api.dataset_stats(workspace, "tiny.jsonl", str(tiny_model))["lengths"])
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_length=shortest - 1))
    warnings = api.run_status(workspace, run_dir.name)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("4 of 4 rows are longer than max_length")
    assert api.run_status(workspace, api.prepare_run(workspace, tiny_config(tiny_model)).name)["warnings"] == []


def test_a_runs_warnings_and_error_are_kept_as_codes_and_read_in_the_visitors_language(tiny_model, workspace):
    import json

    from pipelines import run_files
    from pipelines.messages import Message, speaking
    from tests.conftest import tiny_config

    shortest = min(api.dataset_stats(workspace, "tiny.jsonl", str(tiny_model))["lengths"])
    with speaking("ko"):   # a Korean visitor starts it: status.json still keeps English beside the codes
        run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_length=shortest - 1))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["warnings"][0].startswith("4 of 4 rows are longer") and \
        status["warning_messages"][0]["code"] == "data.rows_over_max_length"
    run_files.update_status(run_dir, status="failed", **run_files.error_fields(Message("runs.out_of_memory")))
    assert api.run_status(workspace, run_dir.name)["error"].startswith("Out of memory")
    with speaking("ko"):
        said = api.run_status(workspace, run_dir.name)
        assert said["error"].startswith("메모리가 부족합니다") and "행 중" in said["warnings"][0]
        assert next(r for r in api.list_runs(workspace) if r["run_id"] == run_dir.name)["error"] == said["error"]


def test_punctuation_keeps_rows_apart_for_exact_matching(workspace):
    write_jsonl(workspace / "math.jsonl", [{"instruction": "What is 2+2?", "input": "", "output": "x = a + b"},
                                           {"instruction": "What is 22?", "input": "", "output": "x = a - b"}])
    assert api.deduplicate_dataset(workspace, "math.jsonl", "math-clean", near=False)["rows_out"] == 2


def test_an_upload_without_a_name_is_named_after_its_file(workspace):
    path = write_jsonl(workspace / "My data (v2).jsonl", TINY_ROWS)
    first = api.upload_dataset(workspace, str(path), "")
    second = api.upload_dataset(workspace, str(path), "  ")
    assert (first["name"], second["name"]) == ("My-data-v2", "My-data-v2-2") and first["saved"] and second["saved"]
    assert {"My-data-v2", "My-data-v2-2"} <= saved_names(workspace)
    from pipelines.data.store import free_name
    assert free_name("x.json", workspace) == "x" and free_name("data..v2", workspace) == "data.v2"


def test_a_hub_import_without_a_name_is_named_after_the_dataset(workspace, monkeypatch):
    from pipelines.data import hub

    monkeypatch.setattr(hub, "fetch_rows", lambda *args: [{"prompt": "Hi", "chosen": "Hello!", "rejected": "No."}])
    assert api.import_hub_dataset(workspace, "Anthropic/hh-rlhf", None, "train", "")["name"] == "hh-rlhf"
