"""UI handlers are plain functions: test them without a browser."""

import dataclasses

from pipelines.config import RunConfig, parse_config_text, sections, stage_sections, top_fields
from studio.i18n import EN, KO
from studio.tabs import train


def _form_keys_and_defaults():
    keys, values = [], []
    for spec in top_fields():
        keys.append(("", spec.name))
        values.append(spec.default)
    for section, cls in sections().items():
        for inner in dataclasses.fields(cls):
            keys.append((section, inner.name))
            values.append(inner.default)
    return keys, values


def test_every_text_has_english_and_korean_and_every_field_has_a_label_and_help():
    assert set(EN) == set(KO)
    for section, name in _form_keys_and_defaults()[0]:
        key = f"{section}.{name}" if section else name
        assert key in EN and f"help.{key}" in EN, key
        assert KO[key] != EN[key] or key in ("peft.target_modules",), key


def test_the_form_sends_the_same_config_the_cli_reads():
    keys, values = _form_keys_and_defaults()
    assert parse_config_text(train.config_text(keys, *values)) == RunConfig()


def test_status_line_shows_progress_eta_and_errors():
    line = train.status_markdown({"status": "running", "step": 15, "max_steps": 60, "eta_s": 95,
                                  "last_metrics": {"loss": 1.23456}, "checkpoints": [10]})
    assert "15 / 60" in line and "25%" in line and "⏱ 01:35" in line and "loss 1.2346" in line and "💾 10" in line
    assert line.count("__i18n__") == 1 and '"status.running"' in line, "the state is translated in the browser"
    failed = train.status_markdown({"status": "failed", "error": "Dataset 'x' has no usable rows."})
    assert '"status.failed"' in failed and "no usable rows" in failed


def test_the_check_report_names_bad_rows_and_says_what_to_do():
    from studio.tabs.data import check_report

    errors = [{"row": 2, "field": "chosen", "message": "missing or empty"}]
    refused = check_report({"name": "x", "kind": "preference", "format": "preference", "rows": 3, "errors": errors,
                            "warnings": ["1 duplicate row(s); the first is row 4, a copy of row 1."], "saved": False})
    assert "nothing saved" in refused and "drop bad rows" in refused and "| 2 | `chosen` | missing or empty |" in refused
    assert "⚠️ 1 duplicate row(s)" in refused
    saved = check_report({"name": "x", "kind": "preference", "format": "ranked", "rows": 3, "errors": errors,
                          "warnings": [], "saved": True})
    assert saved.startswith("✅ **x** · 3 rows · preference · ranked · 1 bad row dropped")


def test_choosing_a_stage_brings_its_defaults_and_its_own_settings_box():
    dataset, box, *rest = train.stage_changed("dpo")
    groups, (learning_rate, max_steps, save_steps) = rest[:-3], rest[-3:]
    assert dataset["value"] == "preference-en-sample" and box["visible"] is True
    assert [g["visible"] for g in groups] == [section == "dpo" for section in stage_sections()]
    assert (learning_rate["value"], max_steps["value"], save_steps["value"]) == (2e-4, 40, 20)
    assert train.stage_changed("ppo")[-1]["value"] == 10, "each stage brings its own save interval"
    assert train.stage_changed("sft")[1]["visible"] is False


def test_the_config_text_carries_only_the_chosen_stages_section():
    keys, values = _form_keys_and_defaults()
    values[[k for _, k in keys].index("stage")] = "kto"
    text = train.config_text(keys, *values)
    assert "kto:" in text and "dpo:" not in text and "reward:" not in text
