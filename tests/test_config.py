import pytest

from pipelines.config import RunConfig, parse_config_text
from pipelines.errors import StudioError


def test_defaults_round_trip_through_yaml():
    config = RunConfig()
    assert parse_config_text(config.to_yaml()) == config


def test_yaml_scientific_notation_and_whole_floats_are_coerced():
    config = parse_config_text("train: {learning_rate: 2e-4, batch_size: 4.0}")
    assert config.train.learning_rate == pytest.approx(2e-4)
    assert config.train.batch_size == 4 and isinstance(config.train.batch_size, int)
    for text, value in (("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")):   # YAML reads bare on/off as booleans
        assert parse_config_text(f"train: {{gradient_checkpointing: {text}}}").train.gradient_checkpointing == value
    assert parse_config_text("dataset: yes").dataset == "True", "other text settings keep YAML's reading as text"


@pytest.mark.parametrize("text, words", [
    ("stage: sfx", ["Unknown stage", "sfx", "sft"]),
    ("train: {learning_rate: 0}", ["learning_rate", "greater than 0"]),
    ("train: {learning_rate: -1e-4}", ["learning_rate", "greater than 0"]),
    ("train: {batch_size: 0}", ["batch_size", "at least 1"]),
    ("train: {batch_size: 2.5}", ["batch_size", "whole number"]),
    ("name: ../escape", ["run name", "'..'"]),
    ("name: /abs/path", ["run name"]),
    ("train: {lr: 1}", ["Unknown setting 'train.lr'", "learning_rate"]),
    ("peft: {method: lorax}", ["peft.method", "lora"]),
    ("- a\n- b", ["mapping"]),
    ("stage: [unclosed", ["not valid YAML"]),
])
def test_bad_configs_get_one_clear_sentence(text, words):
    with pytest.raises(StudioError) as error:
        parse_config_text(text)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_each_stage_brings_its_own_defaults_and_only_its_own_section():
    dpo = parse_config_text("stage: dpo")
    assert (dpo.dataset, dpo.train.learning_rate, dpo.train.max_steps) == ("preference-en-sample", 2e-4, 40)
    assert parse_config_text("stage: dpo\ntrain: {learning_rate: 1.0e-6}").train.learning_rate == 1e-6, "written wins"
    assert "dpo:" in dpo.to_yaml() and "kto:" not in dpo.to_yaml() and "dpo:" not in RunConfig().to_yaml()
    assert parse_config_text(dpo.to_yaml()) == dpo
