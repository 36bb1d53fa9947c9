"""Runs side by side (pipelines/run_compare.py): curves of runs of different lengths aligned by step or by tokens
seen, exactly the settings that differ, final metrics, and bad requests refused before anything is read."""

import json

import pytest

from pipelines import api
from pipelines.config import parse_config_text
from pipelines.errors import StudioError
from pipelines.runs import create_run
from tests.conftest import write_jsonl


def made_run(workspace, name: str, steps: int, learning_rate: float, batch_size: int = 2, tokens_per_step=None,
             stage: str = "sft", eval_every: int = 0):
    """A run folder as a finished run leaves it, its metrics written by hand: loss 1/step, tokens per step."""
    config = parse_config_text(f"name: {name}\nstage: {stage}\nmodel: smollm2-135m-instruct\ndataset: tiny.jsonl\n"
                               f"train: {{max_steps: {steps}, learning_rate: {learning_rate}, batch_size: {batch_size}}}\n")
    run_dir = create_run(workspace, config)
    records = []
    for step in range(1, steps + 1):
        record = {"step": step, "epoch": step / steps, "time": 0.0, "split": "train", "loss": 1.0 / step,
                  "learning_rate": learning_rate}
        if tokens_per_step:
            record["num_tokens"] = float(step * tokens_per_step)
        records.append(record)
        if eval_every and step % eval_every == 0:
            records.append({"step": step, "epoch": step / steps, "time": 0.0, "split": "eval",
                            "eval_loss": 2.0 / step + (0.5 if step == steps else 0.0), "eval_runtime": 0.1})
    write_jsonl(run_dir / "metrics.jsonl", records)
    return run_dir.name


def test_two_runs_of_different_lengths_align_by_step_and_the_shorter_just_ends(workspace):
    short = made_run(workspace, "short", 3, 1e-4, eval_every=1)
    long = made_run(workspace, "long", 6, 2e-4, eval_every=2)
    result = api.compare_runs(workspace, [short, long])
    assert result["align"] == "step"
    assert result["metrics"]["loss"][short] == [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert [x for x, _ in result["metrics"]["loss"][long]] == [1, 2, 3, 4, 5, 6]
    assert [x for x, _ in result["metrics"]["eval_loss"][long]] == [2, 4, 6], "eval points at the steps they were taken"
    assert "eval_runtime" not in result["metrics"], "the trainer's bookkeeping is no curve"
    assert [row["steps"] for row in result["runs"]] == [3, 6]
    assert result["final"][long]["loss"] == pytest.approx(1 / 6)
    # eval_loss ends on a worse value (+0.5 at the last step): the final is the last, the best the lowest
    assert result["final"][long]["eval_loss"] == pytest.approx(2 / 6 + 0.5)
    assert result["final"][long]["best_eval_loss"] == pytest.approx(2 / 4)


def test_the_settings_diff_holds_exactly_the_keys_that_differ(workspace):
    a = made_run(workspace, "a", 2, 1e-4, batch_size=2)
    b = made_run(workspace, "b", 2, 2e-4, batch_size=2)
    c = made_run(workspace, "c", 2, 1e-4, batch_size=4)
    settings = api.compare_runs(workspace, [a, b, c])["settings"]
    assert set(settings) == {"train.learning_rate", "train.batch_size"}, "name is the id; everything else is equal"
    assert settings["train.learning_rate"] == {a: 1e-4, b: 2e-4, c: 1e-4}
    assert settings["train.batch_size"] == {a: 2, b: 2, c: 4}
    assert api.compare_runs(workspace, [a, a + " ", b])["runs"][0]["run_id"] == a, "a run named twice counts once"


def test_runs_align_by_the_tokens_they_have_seen(workspace):
    small = made_run(workspace, "small", 4, 1e-4, tokens_per_step=100, eval_every=2)
    big = made_run(workspace, "big", 2, 1e-4, batch_size=4, tokens_per_step=200)
    result = api.compare_runs(workspace, [small, big], align="tokens")
    assert result["metrics"]["loss"][small] == [[100.0, 1.0], [200.0, 0.5], [300.0, 1 / 3], [400.0, 0.25]]
    assert result["metrics"]["loss"][big] == [[200.0, 1.0], [400.0, 0.5]], "the same tokens at half the steps"
    assert [row["tokens"] for row in result["runs"]] == [400.0, 400.0]
    assert "eval_loss" not in result["metrics"], "only what every run logged is drawn"
    with_eval = api.compare_runs(workspace, [small, made_run(workspace, "small2", 2, 1e-4, tokens_per_step=50,
                                                              eval_every=1)], align="tokens")
    assert with_eval["metrics"]["eval_loss"][small] == [[200.0, 1.0], [400.0, 1.0]], \
        "an eval takes the training count logged at its step"


def test_a_run_without_a_token_count_can_only_be_aligned_by_step(workspace):
    counted = made_run(workspace, "counted", 2, 1e-4, tokens_per_step=10)
    uncounted = made_run(workspace, "uncounted", 2, 1e-4, stage="ppo")
    with pytest.raises(StudioError, match="uncounted.*aligned by step"):
        api.compare_runs(workspace, [counted, uncounted], align="tokens")
    assert api.compare_runs(workspace, [counted, uncounted])["metrics"]["loss"]


@pytest.mark.parametrize("run_ids, align, says", [
    (["only"], "step", "2 to 8 runs"),
    ([f"r{i}" for i in range(9)], "step", "2 to 8 runs"),
    ("only,other", "step", "2 to 8 runs"),
    (["only", "missing"], "step", "no run .missing."),
    (["only", "../only"], "step", "run id"),
    (["only", "other"], "wall_time", "align is one of step, tokens"),
])
def test_bad_requests_are_refused_in_one_sentence(workspace, run_ids, align, says):
    made_run(workspace, "only", 2, 1e-4)
    made_run(workspace, "other", 2, 1e-4)
    with pytest.raises(StudioError, match=says):
        api.compare_runs(workspace, run_ids, align)


def test_the_cli_prints_the_settings_diff_and_the_final_metrics(workspace, capsys):
    from pipelines.cli import main

    a, b = made_run(workspace, "a", 2, 1e-4), made_run(workspace, "b", 3, 3e-4)
    assert main(["--workspace", str(workspace), "compare-runs", a, b]) == 0
    out = capsys.readouterr().out
    settings, final = out.split("settings that differ")[1].split("final metrics")
    assert "train.learning_rate" in settings and "0.0003" in settings and "train.batch_size" not in settings
    assert "loss" in final and "0.3333" in final
    assert main(["--workspace", str(workspace), "compare-runs", a, b, "--json", "--align", "step"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["loss"][b][-1] == [3, pytest.approx(1 / 3)]
    assert main(["--workspace", str(workspace), "compare-runs", a]) == 2, "one run is refused"


def test_the_train_tab_view_overlays_the_picked_runs_and_tables_what_differs(workspace):
    from studio.tabs import runs_compare

    a, b = made_run(workspace, "a", 12, 1e-4, tokens_per_step=10), made_run(workspace, "b", 5, 3e-4, tokens_per_step=10)
    metric, note, chart, settings, final = runs_compare.show_runs(workspace, [a, b], None, "step")
    assert metric["value"] == "loss" and "learning_rate" in metric["choices"]
    assert {trace.name for trace in chart.data} == {a, b}, "one colour per run (a long one smoothed over its raw curve)"
    assert settings["value"]["headers"] == ["setting", a, b] and len(settings["column_widths"]) == 3
    assert ["train.learning_rate", "0.0001", "0.0003"] in settings["value"]["data"]
    assert final["value"]["data"][0][0] == "loss"
    _, _, by_tokens, _, _ = runs_compare.show_runs(workspace, [a, b], "loss", "tokens")
    assert by_tokens.layout.xaxis.title.text == "tokens seen" and max(by_tokens.data[-1].x) == 50
    _, note, chart, _, _ = runs_compare.show_runs(workspace, [a], None, "step")
    assert chart is None and "Pick two or more runs" in note
