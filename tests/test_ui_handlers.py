"""UI handlers are plain functions: test them without a browser."""

import dataclasses

from pipelines.config import RunConfig, parse_config_text, sections, stage_sections, stage_train_settings, top_fields
from pipelines.messages import speaking
from studio.i18n import EN, KO
from studio.tabs import train


def _form_defaults() -> dict[tuple[str, str], object]:
    """The training form's settings by (section, field), each at its default."""
    settings = {("", spec.name): spec.default for spec in top_fields()}
    for section, cls in sections().items():
        settings.update({(section, inner.name): inner.default for inner in dataclasses.fields(cls)})
    return settings


def test_every_text_has_english_and_korean_and_every_field_has_a_label_and_help():
    assert set(EN) == set(KO)
    for section, name in _form_defaults():
        key = f"{section}.{name}" if section else name
        assert key in EN and f"help.{key}" in EN, key
        assert KO[key] != EN[key] or key in ("peft.target_modules",), key


def test_the_form_sends_the_same_config_the_cli_reads():
    assert parse_config_text(train.config_text(_form_defaults())) == RunConfig()


def test_the_start_handler_takes_the_form_as_named_inputs(workspace, monkeypatch):
    """Gradio's dict inputs: {component: value}; the handler finds each setting by its component, not its place."""
    import gradio as gr

    settings = _form_defaults()
    form = {gr.Textbox(): key for key in settings}   # components in any order, each knowing its (section, field)
    values = {component: settings[key] for component, key in reversed(list(form.items()))}
    values[next(c for c, key in form.items() if key == ("", "stage"))] = "kto"
    sent = []
    monkeypatch.setattr(train.api, "start_run", lambda ws, text: sent.append(text) or "run-1")
    monkeypatch.setattr(train.gr, "Info", lambda message: None)
    train.start_clicked(workspace, form, values)
    assert parse_config_text(sent[0]).stage == "kto" and "kto:" in sent[0]


def test_named_handlers_meet_their_inputs_by_name():
    import gradio as gr

    from studio.form import named
    a, b = gr.Textbox(), gr.Number()
    handler = named(lambda first, second: f"{first}-{second}", second=b, first=a)
    assert handler({b: 2, a: "x"}) == "x-2"


def test_status_line_shows_progress_eta_and_errors():
    line = train.status_markdown({"status": "running", "step": 15, "max_steps": 60, "eta_s": 560,
                                  "last_metrics": {"loss": 1.23456}, "checkpoints": [10]})
    assert "15 / 60" in line and "25%" in line and "⏱ 9 min left" in line and "loss 1.2346" in line
    assert "💾 checkpoints 10" in line and "**🟢 running**" in line
    assert "⏱ 40 s left" in train.status_markdown({"status": "running", "step": 1, "max_steps": 9, "eta_s": 40.2})
    assert "⏱ 1.5 h left" in train.status_markdown({"status": "running", "step": 1, "max_steps": 9, "eta_s": 5400})
    assert "⏱" not in train.status_markdown({"status": "queued", "step": 5, "max_steps": 9, "eta_s": 40}), \
        "a queued (resumed) run shows no time left"
    failed = train.status_markdown({"status": "failed", "error": "Dataset 'x' has no usable rows."})
    assert "failed" in failed and "no usable rows" in failed


def test_the_train_tab_speaks_korean():
    with speaking("ko"):
        line = train.status_markdown({"status": "running", "step": 15, "max_steps": 60, "eta_s": 560, "queue_position": 0,
                                      "last_metrics": {"loss": 1.5}, "checkpoints": [10, 20]})
        queued = train.status_markdown({"status": "queued", "queue_position": 2, "step": 0, "max_steps": 12})
        table = train.runs_table_value([{"run_id": "r1", "status": "completed", "stage": "sft", "parent": "",
                                         "model": "m", "dataset": "d", "step": 6, "max_steps": 6, "checkpoints": [3, 6]}])
        probes = train.probe_table({"steps": [2, 4], "rows": [{"prompt": "p", "answers": {2: "a", 4: "b"}}]})
        samples = train.samples_table([{"step": 3, "score": 0.51234, "prompt": "p", "response": "r"}])
    assert "학습 중" in line and "9분 남음" in line and "손실 1.5000" in line and "체크포인트 10, 20" in line
    assert "대기 중" in queued and "대기열 #2" in queued
    assert table["headers"][:3] == ["실행", "상태", "단계"] and table["data"][0][1] == "완료"
    assert probes["value"]["headers"] == ["프롬프트", "스텝 2", "스텝 4"]
    assert samples["value"]["headers"] == ["스텝", "점수", "프롬프트", "응답"] and samples["value"]["data"][0][1] == 0.512


def test_the_probe_grid_keeps_every_answer_column_readable():
    steps = [5, 10, 15, 20, 25, 30]
    grid = train.probe_table({"steps": steps, "rows": [{"prompt": "p", "answers": {s: f"a{s}" for s in steps}}]})
    headers = grid["value"]["headers"]
    assert headers == ["prompt", "step 5", "step 20", "step 25", "step 30"], "the first save and the newest ones"
    assert grid["value"]["data"][0] == ["p", "a5", "a20", "a25", "a30"]
    assert len(grid["column_widths"]) == len(headers) and grid["column_widths"][0] == "24%"
    assert train.samples_table([])["visible"] is False
    assert train.samples_table([{"step": 1, "score": 1.0, "prompt": "p", "response": "r"}])["column_widths"] == \
        train.SAMPLE_WIDTHS


def test_stop_and_resume_confirm_what_they_did(workspace, monkeypatch):
    told = []
    monkeypatch.setattr(train.gr, "Info", told.append)
    monkeypatch.setattr(train.api, "stop_run", lambda ws, run_id: {"message": f"Run {run_id} will save and stop."})
    monkeypatch.setattr(train.api, "resume_run", lambda ws, run_id: {"message": f"Run {run_id} resumes now."})
    monkeypatch.setattr(train.api, "run_status", lambda ws, run_id: {"status": "stopping", "step": 3, "max_steps": 9})
    assert "stopping" in train.stop_clicked(workspace, "r1")
    train.resume_clicked(workspace, "r1")
    assert told == ["Run r1 will save and stop.", "Run r1 resumes now."]
    assert train.stop_clicked(workspace, None) == "" and len(told) == 2, "no run picked: nothing to confirm"


def test_a_resumed_run_shows_no_old_time_left(workspace, monkeypatch):
    from pipelines import run_files, run_queue

    run_dir = workspace / "runs" / "r1"
    run_dir.mkdir(parents=True)
    run_files.write_json_atomic(run_dir / "status.json", {"status": "stopped", "step": 5, "max_steps": 10, "eta_s": 561})
    monkeypatch.setattr(run_queue, "dispatch", lambda workspace: [])   # nothing launches: the run waits its turn
    run_queue.start(run_dir, resume=True)
    assert run_files.read_status(run_dir)["eta_s"] is None


def test_the_check_report_names_bad_rows_and_says_what_to_do():
    from studio.tabs.data import check_report

    errors = [{"row": 2, "field": "chosen", "message": "missing or empty"}]
    refused = check_report({"name": "x", "kind": "preference", "format": "preference", "rows": 3, "errors": errors,
                            "warnings": ["1 duplicate row(s); the first is row 4, a copy of row 1."], "saved": False})
    assert "1 bad row, nothing saved" in refused and "Drop bad rows" in refused and "save the other 3 rows." in refused
    assert "| 2 | `chosen` | missing or empty |" in refused and "⚠️ 1 duplicate row(s)" in refused
    saved = check_report({"name": "x", "kind": "preference", "format": "ranked", "rows": 3, "errors": errors * 2,
                          "warnings": [], "saved": True})
    assert saved.startswith("✅ **x** saved · 3 rows · preference pairs · read as ranked answers · 2 bad rows dropped")
    with speaking("ko"):
        korean = check_report({"name": "x", "kind": "preference", "format": "preference", "rows": 1, "errors": errors,
                               "warnings": [], "saved": False})
    assert korean.startswith("❌ 잘못된 행 1개, 저장하지 않았습니다") and "| 행 | 필드 | 문제 |" in korean


def test_the_data_tab_names_the_source_format_not_the_kind_twice():
    from studio.tabs.data import what_it_holds

    assert what_it_holds("preference", "preference") == "preference pairs"
    assert what_it_holds("preference", "hh_rlhf") == "preference pairs · read as Anthropic HH-RLHF transcripts"
    assert what_it_holds("instruction", "alpaca") == "instructions · read as Alpaca"
    with speaking("ko"):
        assert what_it_holds("preference", "UltraFeedback") == "선호 쌍 · UltraFeedback 형식으로 읽음"


def test_the_train_tab_offers_datasets_saved_after_the_page_loaded(workspace):
    from pipelines import api
    from studio.choices import dataset_choices

    before = train.refresh_pickers(workspace)[1]["choices"]
    (workspace / "fresh.jsonl").write_text('{"instruction": "a", "input": "", "output": "b"}\n', encoding="utf-8")
    api.upload_dataset(workspace, str(workspace / "fresh.jsonl"), "fresh")
    model, dataset, eval_dataset = train.refresh_pickers(workspace)
    assert "fresh" not in before and "fresh" in dataset["choices"] and eval_dataset["choices"][0] == ""
    assert "fresh" in eval_dataset["choices"] and "value" not in dataset, "the pick stays the visitor's"
    assert "fresh" in dataset_choices(workspace)["choices"]


def test_the_model_and_data_tabs_hand_a_choice_to_train_only_when_asked(workspace, monkeypatch):
    import gradio as gr
    import pytest

    from pipelines.errors import StudioError
    from studio.app import build_app

    told = []
    monkeypatch.setattr(train.gr, "Info", told.append)
    assert train.use_model(" org/some-model ")["value"] == "org/some-model"
    assert train.use_dataset(workspace, "alpaca-en-sample")["value"] == "alpaca-en-sample"
    assert told == ["The Train tab will now train org/some-model.", "The Train tab will now train on alpaca-en-sample."]
    with pytest.raises(StudioError):
        train.use_model("")
    app = build_app(workspace)
    model_pick = next(b for b in app.blocks.values() if getattr(getattr(b, "label", None), "key", None) == "model.pick")
    train_model = next(b for b in app.blocks.values() if getattr(getattr(b, "label", None), "key", None) == "model")
    writers = [d for d in app.config["dependencies"] if train_model._id in d["outputs"]]
    assert not any(model_pick._id in d["inputs"] and d["targets"][0][1] == "change" for d in writers), \
        "picking a model on the Model tab does not touch the Train form"
    assert any(model_pick._id in d["inputs"] and d["targets"][0][1] == "click" for d in writers)
    assert isinstance(model_pick, gr.Dropdown)


def test_the_model_card_and_the_road_table_speak_korean(workspace, monkeypatch):
    from studio.tabs import model, road

    info = {"model": "m", "kind": "bundled", "architecture": "LlamaForCausalLM", "parameters": 134_515_008,
            "dtype": "bfloat16", "device": "cpu", "context_length": 0, "chat_template": False, "adapters": [],
            "memory_gb": {"batch_size": 4, "seq_len": 512, "full": 2.1, "lora": 0.9}}
    monkeypatch.setattr(model.api, "describe_model", lambda ws, name: info)
    with speaking("ko"):
        card = model.model_card(workspace, "m")
        steps = road.steps_table([{"step": "sft", "stage": "sft", "run_id": "road-sft", "status": "running",
                                   "progress": 3, "max_steps": 30, "eta_s": 30},
                                  {"step": "dpo", "stage": "dpo", "run_id": None, "status": "waiting",
                                   "progress": 0, "max_steps": 0, "eta_s": None}])
    assert "| 모델 | `m` (내장 모델) |" in card and "| 컨텍스트 길이 | 알 수 없음 |" in card
    assert "배치 4 × 512토큰" in card and "**없음**" in card and "unknown" not in card
    assert steps["value"]["headers"] == ["단계", "실행", "상태", "진행", "남은 시간"]
    assert steps["value"]["data"] == [["1. SFT (지시 튜닝)", "road-sft", "학습 중", "3 / 30", "30초 남음"],
                                      ["2. DPO", "", "기다리는 중", "", ""]]


def test_choosing_a_stage_brings_its_defaults_and_its_own_settings_box():
    names = stage_train_settings()
    dataset, box, *rest = train.stage_changed("dpo")
    groups, values = rest[:-len(names)], {name: update["value"] for name, update in zip(names, rest[-len(names):])}
    assert dataset["value"] == "preference-en-sample" and box["visible"] is True
    assert [g["visible"] for g in groups] == [section == "dpo" for section in stage_sections()]
    assert (values["learning_rate"], values["max_steps"], values["save_steps"]) == (2e-4, 40, 20)
    assert values["max_length"] == 512, "a setting only another stage changes comes back to its default"
    ppo = dict(zip(names, train.stage_changed("ppo")[-len(names):]))
    assert ppo["save_steps"]["value"] == 10, "each stage brings its own save interval"
    assert dict(zip(names, train.stage_changed("pretrain")[-len(names):]))["max_length"]["value"] == 256
    assert train.stage_changed("sft")[1]["visible"] is False


def test_the_config_text_carries_only_the_chosen_stages_section():
    settings = _form_defaults()
    settings[("", "stage")] = "kto"
    text = train.config_text(settings)
    assert "kto:" in text and "dpo:" not in text and "reward:" not in text


def test_chat_takes_its_inputs_by_name_and_marks_a_reply_cut_at_max_new_tokens(workspace, monkeypatch):
    from pipelines.inference import Reply
    from studio.tabs import chat

    sent = []

    def replies(ws, checkpoint, message, history, settings):
        sent.append((checkpoint, message, history, settings))
        yield Reply("Once upon")
        yield Reply("Once upon a time", cut=True)

    monkeypatch.setattr(chat.api, "chat_stream", replies)
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": [{"type": "text", "text": "Hello … (cut at 8 tokens)"}]}]
    with speaking("ko"):
        *_, (shown, box) = chat.respond_stream(workspace, checkpoint="m", message="A story?", history=history,
                                               max_new_tokens=16, temperature=0, top_p=0.9, system_prompt="")
    assert box == "" and shown[-1] == {"role": "assistant", "content": "Once upon a time … (16 토큰에서 잘림)"}
    assert sent[0][2] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], \
        "the model gets its own words back, without the mark"


def test_compare_send_takes_its_columns_by_name_clears_the_message_and_marks_cut_answers(workspace, monkeypatch):
    from pipelines.inference import Reply
    from studio.tabs import compare

    monkeypatch.setattr(compare.api, "compare_notice", lambda ws, checkpoints: "")
    monkeypatch.setattr(compare.api, "compare_stream", lambda ws, checkpoints, prompt, settings, histories, columns:
                        iter([[Reply("Blue"), Reply("Re")], [Reply("Blue."), Reply("Red and", cut=True)]]))
    *chatbots, mapping, asked, report, message = list(compare.ask(
        workspace, prompt="A color?", count=2, blind=False, max_new=2, temperature=0, top_p=0.9, seed=0, system="",
        pickers=["a/final", "b/final", "", ""], overrides=["", '{"max_new_tokens": 3}', "", ""], labels=["", "", "", ""],
        chatbots=[[], [], [], []]))[-1]
    assert message == "" and mapping == ["a/final", "b/final"]
    assert [c["value"][-1]["content"] for c in chatbots[:2]] == ["Blue.", "Red and … (cut at 3 tokens)"]
    assert asked["answers"] == ["Blue.", "Red and"], "a vote records the answers, not the marks"


def test_a_named_streaming_handler_still_streams():
    import inspect

    import gradio as gr

    from studio.form import named
    box = gr.Textbox()

    def counting(upto):
        yield from range(int(upto))

    handler = named(counting, upto=box)
    assert inspect.isgeneratorfunction(handler), "Gradio streams only a generator function"
    assert list(handler({box: 3})) == [0, 1, 2]
