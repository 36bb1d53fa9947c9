"""The `text` kind: raw documents for continued pretraining, read from text files and data files with a text column,
checked like any rows, and measured in the tokens a model's tokenizer spends on them."""

import json
from pathlib import Path

import pytest

from pipelines.data.files import MAX_FIELD_CHARS, read_records
from pipelines.data.store import list_datasets, load_dataset, load_stage_rows, normalise_records, save_upload
from pipelines.data.text import read_corpus, save_texts
from pipelines.errors import StudioError
from tests.conftest import write_jsonl

ENGLISH = "The court held that the contract was void because both parties were mistaken about its subject."
KOREAN = "법원은 두 당사자가 계약의 목적물에 관하여 착오에 빠졌으므로 그 계약이 무효라고 판단하였다."


def test_a_text_file_is_one_document_or_one_per_blank_line_block(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\nFirst paragraph,\nstill first.\n\n  \nSecond one.\r\n\r\nThird.\n", encoding="utf-8")
    assert read_records(notes) == [{"text": "First paragraph,\nstill first.\n\n  \nSecond one.\n\nThird."}]
    assert read_records(notes, "blank_lines") == [{"text": "First paragraph,\nstill first."}, {"text": "Second one."},
                                                  {"text": "Third."}]
    with pytest.raises(StudioError, match="blank_lines"):
        read_records(notes, "sentences")


@pytest.mark.parametrize("name, write", [
    ("doc.txt", lambda path: path.write_text(ENGLISH, encoding="utf-8")),
    ("doc.md", lambda path: path.write_text(f"# Ruling\n\n{ENGLISH}", encoding="utf-8")),
    ("docs.jsonl", lambda path: write_jsonl(path, [{"text": ENGLISH, "id": 1, "url": "https://x"}])),
    ("docs.csv", lambda path: path.write_text(f'id,text\n1,"{ENGLISH}"\n', encoding="utf-8")),
    ("docs.parquet", lambda path: __import__("pyarrow.parquet").parquet.write_table(
        __import__("pyarrow").table({"text": [ENGLISH], "source": ["court"]}), path)),
])
def test_text_uploads_of_every_format_become_a_text_dataset_of_their_documents(tmp_path, workspace, name, write):
    path = tmp_path / name
    write(path)
    report = save_upload(path, "corpus", workspace)
    assert (report["kind"], report["format"], report["rows"], report["saved"]) == ("text", "text", 1, True)
    kind, data = load_dataset("corpus", workspace)
    expected = f"# Ruling\n\n{ENGLISH}" if name.endswith(".md") else ENGLISH
    assert kind == "text" and data.rows == [{"text": expected}]   # exactly {"text": ...}: id, url, source left out
    assert {d["name"]: d["kind"] for d in list_datasets(workspace)}["corpus"] == "text"


def test_records_with_a_text_column_beside_another_kinds_columns_are_not_text():
    assert normalise_records([{"text": "a", "id": 3, "meta": {}}])[0] == "text"
    assert normalise_records([{"text": "a", "prompt": "b"}])[0] != "text"
    assert normalise_records([{"prompt": "p", "chosen": "a", "rejected": "b", "text": "x"}])[0] == "preference"


def test_bad_documents_are_named_by_row_and_field():
    kind, result = normalise_records([{"text": ENGLISH}, {"text": "   \n"}, {"text": 7}, {"text": ""}, "loose",
                                      {"text": "x" * (MAX_FIELD_CHARS + 1)}])
    assert kind == "text" and result.rows == [{"text": ENGLISH}]
    assert [(e.row, e.field) for e in result.errors] == [(2, "text"), (3, "text"), (4, "text"), (5, "-"), (6, "text")]
    assert "whitespace" in result.errors[0].message and "int" in result.errors[1].message
    assert "10 MB" in result.errors[4].message


@pytest.mark.parametrize("content, words", [
    (b"fine\nstill fine\n\xff\xfe broken\n", ["bad.txt", "UTF-8", "line 3"]),
    (b"text\nmore\x00binary", ["bad.txt", "binary", "NUL", "line 2"]),
    (b"", ["bad.txt", "empty"]),
    (b"  \n\n\t\n", ["bad.txt", "only whitespace"]),
    (b"PK\x03\x04zip", ["bad.txt", "zip archive"]),
])
def test_bad_text_files_are_refused_naming_the_file_and_line(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(StudioError) as error:
        read_records(path)
    for word in words:
        assert word in str(error.value)


def test_a_document_over_10_mb_is_named_by_file_and_the_line_it_starts_on(tmp_path):
    path = tmp_path / "huge.md"
    path.write_text("A short first paragraph.\n\n\n" + "y" * (MAX_FIELD_CHARS + 10) + "\n", encoding="utf-8")
    for split, line in (("file", 1), ("blank_lines", 4)):
        with pytest.raises(StudioError) as error:
            read_records(path, split)
        for word in ("huge.md", f"line {line}", "10 MB"):
            assert word in str(error.value)


def test_several_files_of_any_format_make_one_corpus(tmp_path, workspace):
    (tmp_path / "a.txt").write_text(ENGLISH, encoding="utf-8")
    (tmp_path / "b.md").write_text("One.\n\nTwo.\n", encoding="utf-8")
    write_jsonl(tmp_path / "c.jsonl", [{"text": KOREAN}, {"text": "Last."}])
    files = [tmp_path / "a.txt", tmp_path / "b.md", tmp_path / "c.jsonl"]
    report = save_texts(files, "law", workspace, split="blank_lines")
    assert report["saved"] and report["kind"] == "text" and report["rows"] == 5
    assert report["files"] == [{"file": "a.txt", "documents": 1}, {"file": "b.md", "documents": 2},
                               {"file": "c.jsonl", "documents": 2}]
    assert load_dataset("law", workspace, "text")[1].rows == [{"text": t} for t in (ENGLISH, "One.", "Two.", KOREAN, "Last.")]
    meta = json.loads((workspace / "datasets" / "law" / "meta.json").read_text(encoding="utf-8"))
    assert meta["kind"] == "text" and meta["files"] == report["files"] and meta["source"] == "a.txt, b.md, c.jsonl"


def test_a_corpus_names_a_bad_row_by_its_file_and_refuses_a_file_of_another_kind(tmp_path, workspace):
    (tmp_path / "a.txt").write_text(ENGLISH, encoding="utf-8")
    write_jsonl(tmp_path / "b.jsonl", [{"text": "ok"}, {"text": " "}])
    report = save_texts([tmp_path / "a.txt", tmp_path / "b.jsonl"], "law", workspace)
    assert not report["saved"] and report["errors"][0]["row"] == 2 and report["errors"][0]["field"] == "b.jsonl:text"
    assert not (workspace / "datasets" / "law").exists()
    assert save_texts([tmp_path / "a.txt", tmp_path / "b.jsonl"], "law", workspace, drop_bad_rows=True)["rows"] == 2
    write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    with pytest.raises(StudioError, match="sft.jsonl holds instruction rows"):
        read_corpus([tmp_path / "a.txt", tmp_path / "sft.jsonl"])
    with pytest.raises(StudioError, match="already exists"):
        save_texts([tmp_path / "a.txt"], "law", workspace)
    with pytest.raises(StudioError, match="not there"):
        save_texts([tmp_path / "absent.txt"], "other", workspace)


def test_stats_count_documents_tokens_and_what_korean_costs_per_character(workspace, tiny_model):
    from transformers import AutoTokenizer

    from pipelines import api

    save_texts([_text_file(workspace.parent, "en.txt", ENGLISH)], "english", workspace)
    save_texts([_text_file(workspace.parent, "ko.txt", KOREAN)], "korean", workspace)
    english = api.dataset_stats(workspace, "english", str(tiny_model), 64)
    korean = api.dataset_stats(workspace, "korean", str(tiny_model), 64)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokens = len(tokenizer(KOREAN, add_special_tokens=False)["input_ids"])
    assert (korean["documents"], korean["total_tokens"], korean["characters"]) == (1, tokens, len(KOREAN))
    assert korean["lengths"] == [tokens] and korean["blocks"] == -(-(tokens + 1) // 64)
    assert korean["tokens_per_char"] > english["tokens_per_char"] > 0
    assert korean["rows_over_max_length"] == 0 and korean["warnings"] == []   # documents are packed, never cut


def test_a_text_preview_shows_the_document_tokenized_without_a_template(workspace, tiny_model):
    from pipelines import api

    save_texts([_text_file(workspace.parent, "ko.txt", KOREAN)], "korean", workspace)
    shown = api.preview_dataset(workspace, "korean", str(tiny_model), 3)
    assert len(shown) == 1 and shown[0]["text"] == KOREAN and "<|im_start|>" not in shown[0]["text"]
    assert "".join(s["text"] for s in shown[0]["segments"]) == KOREAN
    assert shown[0]["tokens"] == shown[0]["loss_tokens"] > 0 and not shown[0]["truncated"]


@pytest.fixture
def text_stage():
    """A stage that trains on text rows: the pretrain stage once it exists, else one registered for this test."""
    from pipelines.stages import Stage, all_stages, register, unregister

    found = next((stage.name for stage in all_stages() if stage.data_kind == "text"), None)
    if found:
        yield found
        return
    register(Stage(name="text-kind-test", order=99, data_kind="text", defaults={}, run_module=__name__))
    yield "text-kind-test"
    unregister("text-kind-test")


def test_sft_refuses_a_text_dataset_and_text_stages_refuse_instruction_rows(tmp_path, workspace, text_stage):
    from pipelines.data.store import stage_rows

    save_texts([_text_file(tmp_path, "en.txt", ENGLISH)], "english", workspace)
    with pytest.raises(StudioError) as error:
        load_stage_rows("english", workspace, "sft")
    assert str(error.value).startswith("Dataset 'english' holds raw documents") and "instruction rows" in str(error.value)
    kind, data = load_dataset("tiny.jsonl", workspace)
    with pytest.raises(StudioError) as error:
        stage_rows("tiny.jsonl", kind, data.rows, text_stage)
    assert "holds instruction rows" in str(error.value) and "needs raw documents" in str(error.value)


def _text_file(folder, name, content):
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


def test_several_files_uploaded_through_gradio_client_make_one_corpus_and_no_other_path_is_read(tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from studio.app import launch_app
    from tests.conftest import free_port

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    app = launch_app(workspace, port=free_port(), prevent_thread_lock=True)
    try:
        client = Client(app.local_url, verbose=False)
        files = [_text_file(tmp_path, "a.txt", "One.\n\nTwo."), _text_file(tmp_path, "b.md", KOREAN)]
        report = client.predict([handle_file(str(f)) for f in files], "corpus", "blank_lines",
                                api_name="/upload_texts")
        assert report["saved"] and report["kind"] == "text" and report["rows"] == 3
        assert report["files"] == [{"file": "a.txt", "documents": 2}, {"file": "b.md", "documents": 1}]
        for forged in ([{"path": "/etc/hostname"}], ["/etc/hostname"], "/etc/hostname"):
            with pytest.raises(AppError, match="uploaded|handle_file"):
                client.predict(forged, "stolen", api_name="/upload_texts")
    finally:
        app.close()


def test_a_text_dataset_is_a_one_column_table_splits_by_document_and_exports_with_a_card(tmp_path, workspace):
    from pipelines import api

    path = _text_file(tmp_path, "a.txt", "One.\n\nTwo.\n\nThree.\n\nFour.")
    save_texts([path], "docs", workspace, split="blank_lines")
    table = api.dataset_table(workspace, "docs")
    assert table == {"kind": "text", "columns": ["text"], "rows": [["One."], ["Two."], ["Three."], ["Four."]]}
    assert api.save_table(workspace, "text", table["rows"][:2], "typed")["kind"] == "text"
    split = api.split_dataset(workspace, "docs", "docs", 0.25, 1)
    assert (split["train_rows"], split["eval_rows"]) == (3, 1)
    exported = api.export_dataset(workspace, "docs", "jsonl")
    card = Path(exported).with_name("README.md").read_text(encoding="utf-8")
    assert "pretraining" in card and "one document a row" in card and "conversational" not in card


def test_the_data_tab_saves_several_text_files_as_one_corpus_and_shows_what_it_costs(tmp_path, workspace, tiny_model):
    from studio.tabs.data import length_report, preview_html, save_file_dataset

    files = [str(_text_file(tmp_path, "a.txt", "One.\n\nTwo.")), str(_text_file(tmp_path, "b.md", KOREAN))]
    report, picked = save_file_dataset(workspace, files, "corpus", False, "", False, "blank_lines")
    assert "corpus** saved · 3 documents · raw text" in report and "from 2 files" in report
    assert picked["value"] == "corpus"
    stats, _ = length_report(workspace, "corpus", str(tiny_model), 64)
    assert "3 documents" in stats and "tokens per character" in stats
    assert KOREAN in preview_html(workspace, "corpus", str(tiny_model), 3)
    single, _ = save_file_dataset(workspace, [str(write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "Hi", "output": "Yo"}]))],
                                  "sft", False, "", False)
    assert "sft** saved · 1 row · instructions" in single


def test_a_hub_text_dataset_is_imported_as_a_corpus_with_its_bad_documents_named(workspace, monkeypatch):
    from pipelines import api
    from pipelines.data import hub

    wiki = [{"id": "1", "url": "u1", "title": "A", "text": "Bees make honey in the hive."},
            {"id": "2", "url": "u2", "title": "B", "text": "   "},
            {"id": "3", "url": "u3", "title": "C", "text": "The queen lays the eggs."}]
    monkeypatch.setattr(hub, "fetch_rows", lambda *args: wiki)
    report = api.import_hub_dataset(workspace, "someone/wiki-bees", "", "train", "bees", max_rows=3)
    assert report["kind"] == "text" and not report["saved"] and [e["row"] for e in report["errors"]] == [2]
    report = api.import_hub_dataset(workspace, "someone/wiki-bees", "", "train", "bees", max_rows=3, drop_bad_rows=True)
    assert report["saved"] and report["rows"] == 2
    from pipelines.data.store import load_stage_rows
    assert load_stage_rows("bees", workspace, "pretrain") == [{"text": wiki[0]["text"]}, {"text": wiki[2]["text"]}]
