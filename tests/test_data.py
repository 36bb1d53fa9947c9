import json

import pytest

from pipelines.data.files import read_records
from pipelines.data.formats import normalise_instruction
from pipelines.data.store import list_datasets, load_rows, save_upload
from pipelines.errors import StudioError
from pipelines.messages import has_message, speaking
from pipelines.paths import ASSETS_DIR
from tests.conftest import TINY_ROWS, write_jsonl

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
    ("tabs.csv", b"instruction\tinput\toutput\nx\t\ty\n", ["single column", "tabs"]),
    ("zipped.json", b"PK\x03\x04rest-of-a-zip", ["zip archive"]),
    ("pickled.json", b"\x80\x04\x95\x00", ["pickle"]),
    ("page.json", b"<!DOCTYPE html><html><body>hi</body></html>", ["HTML page"]),
    ("image.jsonl", b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", ["SVG image"]),
    ("fake.parquet", b'[{"a": 1}]', ["not a Parquet file"]),
    ("extra.csv", b'instruction,output\n"a","b","c"\n', ["row 1", "more cells"]),
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


@pytest.mark.parametrize("name", ["../up", "a/b", "x" * 81, "bad\nname"])
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


SAME_CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_sharegpt_and_message_list_prompt_completion_normalise_like_chat():
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
    listed = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello!"}]}
    for record in (sharegpt, listed, {"prompt": "Hi", "response": "Hello!"}, {"messages": SAME_CONVERSATION}):
        result = normalise_instruction([record])
        assert result.rows == [{"messages": SAME_CONVERSATION}], (record, result.errors)
    bad = normalise_instruction([sharegpt, {"conversations": [{"from": "robot", "value": "?"}]}])
    assert [(e.row, e.field) for e in bad.errors] == [(2, "conversations[1].from")]


def test_csv_tsv_and_parquet_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    quoted = 'instruction,input,output\n"Write two lines","","Line one,\nline two"\n'
    (tmp_path / "a.csv").write_text(quoted, encoding="utf-8")
    (tmp_path / "a.tsv").write_text('instruction\tinput\toutput\nWrite two lines\t\t"Line one,\nline two"\n', encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([{"instruction": "Write two lines", "input": "", "output": "Line one,\nline two"}]),
                   tmp_path / "a.parquet")
    expected = normalise_instruction([{"instruction": "Write two lines", "input": "", "output": "Line one,\nline two"}]).rows
    for name in ("a.csv", "a.tsv", "a.parquet"):
        assert normalise_instruction(read_records(tmp_path / name)).rows == expected, name


def test_a_huge_single_field_is_refused_naming_row_and_field(tmp_path):
    rows = [{"instruction": "ok", "output": "ok"}, {"instruction": "big", "output": "x" * (10 * 1024 * 1024 + 1)}]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    with pytest.raises(StudioError, match="row 2, field 'output'"):
        read_records(path)


def test_a_column_whose_type_changes_is_named_by_row(workspace, tmp_path):
    rows = [ALPACA, {"instruction": "x", "input": "", "output": 42}]
    report = save_upload(write_jsonl(tmp_path / "types.jsonl", rows), "types", workspace)
    assert report["errors"] == [{"row": 2, "field": "output", "message": "must be text, got int"}] and not report["saved"]


def test_control_characters_in_a_dataset_name_are_refused(workspace, tmp_path):
    with pytest.raises(StudioError, match="not allowed"):
        save_upload(write_jsonl(tmp_path / "up.jsonl", [ALPACA]), "bad\x00name", workspace)


def test_a_dataset_name_that_would_hide_a_workspace_file_is_refused(workspace, tmp_path):
    from pipelines.compare import vote

    with pytest.raises(StudioError, match="looks like a file name.*without '.jsonl'"):
        save_upload(write_jsonl(tmp_path / "up.jsonl", [ALPACA]), "tiny.jsonl", workspace)
    with pytest.raises(StudioError, match="looks like a file name"):
        vote(workspace, "votes.JSON", "Hi", ["a", "b"], ["x/final", "y/final"], [1, 2])
    assert load_rows("tiny.jsonl", workspace)[0]["messages"][-1]["content"] == "Hi there! Hope this helps!"


def _pair(prompt, chosen, rejected):
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_preference_shapes_normalise_to_the_same_pairs():
    from pipelines.data.store import normalise_records

    question = [{"role": "user", "content": "2+2?"}]
    shapes = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": question, "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]},
        # UltraFeedback-binarized: chosen and rejected are whole conversations repeating the prompt
        {"prompt": "2+2?", "chosen": question + [{"role": "assistant", "content": "4"}],
         "rejected": question + [{"role": "assistant", "content": "5"}]},
        # Anthropic HH-RLHF: no prompt column; the shared prefix is the prompt
        {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"},
    ]
    for shape in shapes:
        kind, result = normalise_records([shape])
        assert kind == "preference" and result.rows == [_pair("2+2?", "4", "5")], (shape, result.errors)


def test_ranked_answers_become_every_ordered_pair():
    from pipelines.data.store import normalise_records

    dinner = {"prompt": "What should I cook for dinner?", "answers": [
        {"text": "a: cereal", "rank": 3}, {"text": "b: a stir-fry with rice", "rank": 1}, {"text": "c: pasta", "rank": 2}]}
    kind, result = normalise_records([dinner])
    pairs = [(r["chosen"][0]["content"][0], r["rejected"][0]["content"][0]) for r in result.rows]
    assert kind == "preference" and pairs == [("b", "c"), ("b", "a"), ("c", "a")]


def test_preference_row_errors_name_the_row():
    from pipelines.data.preference import normalise_preference

    result = normalise_preference([{"prompt": "q", "chosen": "same", "rejected": "same"},
                                   {"prompt": "q", "chosen": "", "rejected": "x"},
                                   {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: OTHER\n\nAssistant: c"}])
    assert [(e.row, e.field) for e in result.errors] == [(1, "rejected"), (2, "chosen"), (3, "rejected")]
    assert "identical" in result.errors[0].message


def test_unpaired_and_prompt_only_kinds():
    from pipelines.data.store import normalise_records

    kind, result = normalise_records([{"prompt": "q", "completion": "a", "label": True},
                                      {"prompt": "q", "completion": "b", "label": "false"}])
    assert kind == "unpaired" and [r["label"] for r in result.rows] == [True, False]
    kind, result = normalise_records([{"prompt": "Tell me a joke"}])
    assert kind == "prompt_only" and result.rows == [{"prompt": [{"role": "user", "content": "Tell me a joke"}]}]


def test_a_stage_given_the_wrong_kind_of_data_says_which_kind_it_needs(workspace, tmp_path):
    save_upload(write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]), "prefs", workspace)
    with pytest.raises(StudioError, match="holds preference pairs.*needs instruction rows"):
        load_rows("prefs", workspace)
    assert load_rows("prefs", workspace, kind="preference")[0]["chosen"][0]["content"] == "a"


def test_duplicates_and_length_bias_are_warned_about_not_refused():
    from pipelines.data.store import normalise_records

    _, result = normalise_records([ALPACA, {"instruction": "x"}, dict(ALPACA, output="Other."), ALPACA])
    assert len(result.rows) == 3 and [str(w) for w in result.warnings] == ["1 duplicate row; it is row 4, a copy of row 1."]
    _, result = normalise_records([ALPACA, ALPACA, ALPACA])
    assert [str(w) for w in result.warnings] == ["2 duplicate rows; the first is row 2, a copy of row 1."]
    _, result = normalise_records([{"prompt": f"q{i}", "chosen": "a long and careful answer " * 4, "rejected": "no"}
                                   for i in range(3)])
    assert "as long as rejected" in str(result.warnings[0])
    with speaking("ko"):
        assert "배" in result.report()["warnings"][0]   # the report is in the visitor's language


def test_a_preference_dataset_is_named_by_the_format_its_rows_came_in():
    from pipelines.data.store import normalise_records

    prompt = [{"role": "user", "content": "Hi?"}]
    hh = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go."}
    ultrafeedback = {"prompt": "Hi?", "chosen": prompt + [{"role": "assistant", "content": "Hello!"}],
                     "rejected": prompt + [{"role": "assistant", "content": "Go."}]}
    conversational = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "Hello!"}],
                      "rejected": [{"role": "assistant", "content": "Go."}]}
    columns = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go."}
    ranked = {"prompt": "Hi?", "answers": [{"text": "Hello!", "rank": 1}, {"text": "Go.", "rank": 2}]}
    for record, named in ((hh, "hh_rlhf"), (ultrafeedback, "ultrafeedback"), (conversational, "chosen_rejected_messages"),
                          (columns, "chosen_rejected"), (ranked, "ranked")):
        kind, result = normalise_records([record, record | {}])
        assert (kind, result.format, result.errors) == ("preference", named, []), record
        assert has_message(f"data.format.{named}")


def test_row_errors_keep_their_structure_in_the_visitors_language():
    from pipelines.data.store import normalise_records

    records = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}, {"prompt": "Bye", "chosen": "", "rejected": "No."}]
    assert normalise_records(records)[1].report()["errors"] == [{"row": 2, "field": "chosen", "message": "missing or empty"}]
    with speaking("ko"):
        assert normalise_records(records)[1].report()["errors"] == [{"row": 2, "field": "chosen", "message": "없거나 비어 있습니다"}]


def test_the_preview_marks_exactly_the_assistant_tokens(tiny_model, workspace):
    from pipelines.api import preview_dataset
    from studio.tabs.data import preview_html

    rows = preview_dataset(workspace, "tiny.jsonl", str(tiny_model), 2)
    for row, source in zip(rows, TINY_ROWS[:2]):
        marked = "".join(s["text"] for s in row["segments"] if s["loss"])
        assert marked == source["output"] + "<|im_end|>"
        assert "".join(s["text"] for s in row["segments"]) == row["text"]
        assert 0 < row["loss_tokens"] < row["tokens"]
    assert "<span style=" in preview_html(workspace, "tiny.jsonl", str(tiny_model), 1)


def test_the_preview_of_a_preference_pair_shows_the_chosen_and_the_rejected_answer(tiny_model, workspace):
    from pipelines.api import preview_dataset
    from studio.tabs.data import preview_html

    write_jsonl(workspace / "pairs.jsonl", [{"prompt": "Sky?", "chosen": "Blue, by day.", "rejected": "Green."}])
    row = preview_dataset(workspace, "pairs.jsonl", str(tiny_model), 1)[0]
    assert "".join(s["text"] for s in row["segments"] if s["loss"]).startswith("Blue, by day.")
    assert "".join(s["text"] for s in row["rejected"]["segments"] if s["loss"]).startswith("Green.")
    shown = preview_html(workspace, "pairs.jsonl", str(tiny_model), 1)
    assert "Blue, by day." in shown and "Green." in shown and "rejected" in shown


def test_line_separators_inside_jsonl_strings_are_text_not_line_breaks(workspace, tmp_path):
    row = {"instruction": "Join\u2028these\u2029lines\u0085", "input": "", "output": "Done."}
    path = write_jsonl(tmp_path / "separators.jsonl", [row])
    assert read_records(path) == [row]
    assert save_upload(path, "separators", workspace)["saved"]   # saved as UTF-8 text, and read back the same
    assert load_rows("separators", workspace)[0]["messages"][0]["content"] == row["instruction"]
