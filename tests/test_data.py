import json

import pytest

from pipelines.data.files import read_records
from pipelines.data.formats import normalise_instruction
from pipelines.data.store import list_datasets, load_rows, save_upload
from pipelines.errors import StudioError
from pipelines.paths import ASSETS_DIR
from tests.conftest import write_jsonl

ALPACA = {"instruction": "Cluster these", "input": "apple, carrot", "output": "Fruit: apple. Vegetable: carrot."}
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello!"}]}


def test_alpaca_and_messages_normalise_to_the_same_conversational_shape():
    alpaca = normalise_instruction([ALPACA]).rows[0]["messages"]
    assert alpaca == [{"role": "user", "content": "Cluster these\n\napple, carrot"},
                      {"role": "assistant", "content": "Fruit: apple. Vegetable: carrot."}]
    assert normalise_instruction([CHAT]).rows[0]["messages"] == CHAT["messages"]
    completion = normalise_instruction([{"prompt": "Hi", "completion": "Hello!"}]).rows[0]["messages"]
    assert [m["role"] for m in completion] == ["user", "assistant"]


def test_row_errors_name_the_row_and_field():
    rows = [ALPACA, {"instruction": "x", "input": "", "output": ""}, ALPACA, {"instruction": 3, "output": "y"}]
    result = normalise_instruction(rows)
    assert len(result.rows) == 2
    assert [(e.row, e.field) for e in result.errors] == [(2, "output"), (4, "instruction")]
    bad_chat = normalise_instruction([CHAT, {"messages": [{"role": "assistant", "content": "first"}]},
                                      {"messages": [{"role": "robot", "content": "?"}]}])
    assert [(e.row, e.field) for e in bad_chat.errors] == [(2, "messages"), (3, "messages[1].role")]


@pytest.mark.parametrize("name, content, words", [
    ("empty.json", b"", ["empty"]),
    ("object.json", b'{"a": 1, "b": 2}', ["object", "array"]),
    ("broken.json", b'[{"a": 1},', ["not valid JSON", "line 1"]),
    ("latin1.jsonl", '{"instruction": "caf\u00e9"}\n'.encode("latin-1"), ["UTF-8"]),
    ("cut.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "outp', ["line 2", "cut off"]),
    ("data.pkl", b"\x80\x04K\x01.", ["unsupported file type"]),
])
def test_bad_files_get_one_clear_message(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StudioError) as error:
        read_records(path)
    for word in words:
        assert word in str(error.value)


def test_upload_saves_only_clean_data_unless_asked_to_drop(workspace, tmp_path):
    upload = write_jsonl(tmp_path / "up.jsonl", [ALPACA, {"instruction": "x", "output": ""}])
    report = save_upload(upload, "mine", workspace)
    assert report["saved"] is False and report["errors"][0]["row"] == 2
    assert not (workspace / "datasets" / "mine").exists()
    report = save_upload(upload, "mine", workspace, drop_bad_rows=True)
    assert report["saved"] and report["rows"] == 1
    assert load_rows("mine", workspace)[0]["messages"][1]["content"] == ALPACA["output"]
    assert "mine" in [d["name"] for d in list_datasets(workspace)]


@pytest.mark.parametrize("name", ["../up", "a/b", "", "x" * 81, "bad\nname"])
def test_dataset_names_that_escape_or_break_paths_are_refused(workspace, tmp_path, name):
    upload = write_jsonl(tmp_path / "up.jsonl", [ALPACA])
    with pytest.raises(StudioError, match="not allowed"):
        save_upload(upload, name, workspace)


def test_dataset_paths_must_stay_inside_the_workspace(workspace, tmp_path):
    outside = write_jsonl(tmp_path / "outside.jsonl", [ALPACA])
    for name in (str(outside), "../outside.jsonl"):
        with pytest.raises(StudioError):
            load_rows(name, workspace)


def test_bundled_samples_are_clean_alpaca_in_english_and_korean(workspace):
    names = {d["name"] for d in list_datasets(workspace) if d["source"] == "sample"}
    assert {"alpaca-en-sample", "alpaca-ko-sample"} <= names
    for name in ("alpaca-en-sample", "alpaca-ko-sample"):
        assert len(load_rows(name, workspace)) >= 100
        raw = json.loads((ASSETS_DIR / "datasets" / f"{name}.json").read_text(encoding="utf-8"))
        assert list(raw[0]) == ["instruction", "input", "output", "text"]
