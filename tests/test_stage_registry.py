"""A stage is one module: a toy stage registered from the test suite shows up in the form, the CLI's help, config
validation and the API, and trains as a run, without any other file knowing its name."""

import contextlib
import io
from dataclasses import dataclass

import pytest

from pipelines import api, stages
from pipelines.config import parse_config_text, sections, setting, stage_names
from pipelines.errors import StudioError
from pipelines.runs import load_config


@dataclass
class ToySettings:
    loudness: int = setting(3, "How loud the toy is.", minimum=1, maximum=10)
    mood: str = setting("calm", "The toy's mood.", choices=("calm", "wild"))


def _validate(config):
    if config.toy.mood == "wild" and config.toy.loudness < 5:
        raise StudioError("A wild toy is loud: raise toy.loudness to 5 or more.")


def run(context):   # the toy's training: it writes what it was given, so the test can see the run took place
    (context.run_dir / "toy.txt").write_text(f"{context.config.toy.mood} {context.config.toy.loudness}")


@pytest.fixture
def toy_stage():
    toy = stages.register(stages.Stage(
        name="toy", order=99, data_kind="instruction", settings=ToySettings, output="datasets", validate=_validate,
        defaults={"dataset": "tiny.jsonl", "train": {"max_steps": 2, "learning_rate": 1e-3}}, run_module=__name__))
    yield toy
    stages.unregister("toy")


def test_a_registered_stage_is_in_the_config_and_its_validation(toy_stage):
    assert stage_names()[-1] == "toy" and sections()["toy"] is ToySettings
    config = parse_config_text("stage: toy\ntoy: {mood: wild, loudness: 7}")
    assert (config.toy.mood, config.toy.loudness, config.dataset, config.train.max_steps) == ("wild", 7, "tiny.jsonl", 2)
    assert "toy:" in config.to_yaml() and "dpo:" not in config.to_yaml()
    for text, words in (("stage: toy\ntoy: {loudness: 11}", "`toy.loudness` must be at most 10"),
                        ("stage: toy\ntoy: {mood: sad}", "`toy.mood` must be one of calm, wild"),
                        ("stage: toy\ntoy: {mood: wild}", "raise toy.loudness"),
                        ("stage: toy\ntoy: {color: red}", "known toy settings are: loudness, mood")):
        with pytest.raises(StudioError, match=words):
            parse_config_text(text)


def test_a_registered_stage_is_in_the_form(toy_stage, workspace):
    import gradio as gr

    from studio.tabs import train
    with gr.Blocks() as page:
        train.build(workspace)
    labels = {getattr(block.label, "key", None): block for block in page.blocks.values() if hasattr(block, "label")}
    assert isinstance(labels["toy.loudness"], gr.Number) and labels["toy.loudness"].maximum == 10
    assert labels["toy.mood"].choices == [("calm", "calm"), ("wild", "wild")]
    assert ("toy", "toy") in labels["stage"].choices
    dataset, box, *groups_and_defaults = train.stage_changed("toy")
    assert dataset["value"] == "tiny.jsonl" and box["visible"] is True


def test_a_registered_stage_is_in_the_cli_help(toy_stage):
    from pipelines.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["stages"]) == 0
        assert main(["stages", "toy"]) == 0
    assert "toy " in out.getvalue() and "toy.loudness = 3 [1, 10]" in out.getvalue()
    assert "How loud the toy is." in out.getvalue()


def test_a_registered_stage_runs_through_the_api(toy_stage, tiny_model, workspace):
    from pipelines.train import train_run
    listed = {stage["stage"]: stage for stage in api.list_stages(workspace)}
    assert [s["name"] for s in listed["toy"]["settings"]] == ["loudness", "mood"]
    run_dir = api.prepare_run(workspace, f"stage: toy\nmodel: {tiny_model}\ntoy: {{loudness: 9}}\n"
                                         "train: {max_length: 64}")
    assert load_config(run_dir).toy.loudness == 9
    assert train_run(run_dir, echo=False) == "completed"
    assert (run_dir / "toy.txt").read_text() == "calm 9"
    assert not (run_dir / "final").exists(), "a stage that makes datasets publishes no model"


def test_a_preference_run_on_a_handful_of_pairs_starts_but_says_so(tiny_model, workspace):
    from tests.conftest import write_jsonl
    write_jsonl(workspace / "one-pair.jsonl", [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}])
    run_dir = api.prepare_run(workspace, f"stage: dpo\nmodel: {tiny_model}\ndataset: one-pair.jsonl\n"
                                         "train: {max_length: 64}")
    warnings = api.run_status(workspace, run_dir.name)["warnings"]
    assert any("Too few rows for DPO" in w and "(1; at least 8" in w for w in warnings), warnings
    from pipelines.messages import speaking
    with speaking("ko"):   # kept as a code: a Korean visitor reads it in Korean
        assert any("행이 너무 적습니다(1개" in w for w in api.run_status(workspace, run_dir.name)["warnings"])
    many = [{"prompt": f"Q{i}", "chosen": "Yes.", "rejected": "No."} for i in range(8)]
    write_jsonl(workspace / "eight-pairs.jsonl", many)
    run_dir = api.prepare_run(workspace, f"stage: dpo\nmodel: {tiny_model}\ndataset: eight-pairs.jsonl\n"
                                         "train: {max_length: 64}")
    assert not any("by heart" in w for w in api.run_status(workspace, run_dir.name)["warnings"])


def test_every_cli_command_prints_its_help(capsys):
    """argparse formats each help text with %: a bare % in one (a "95% interval") breaks `--help` for all."""
    import pytest

    from pipelines import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    commands = capsys.readouterr().out.split("{", 1)[1].split("}", 1)[0].split(",")
    assert "leaderboard" in commands
    for command in commands:
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0, command
