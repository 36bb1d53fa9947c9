"""Try the road: SFT → DPO and SFT → reward model → PPO chained as ordinary runs, stopped, continued and compared."""

from __future__ import annotations

import pytest
import yaml

from pipelines import api, road, run_files, runs
from pipelines.errors import StudioError


@pytest.mark.parametrize("language", road.LANGUAGES)
def test_held_out_prompts_are_in_no_sample(language):
    for prompt, (overlap, row) in road.closest_sample_rows(language).items():
        assert overlap <= 0.5, (prompt, row)


def test_each_step_starts_from_the_sft_model_and_ppo_scores_with_the_road_reward_model(tmp_path):
    story = {"road_id": "road-ko-1", "language": "ko", "model": "smollm2-135m-instruct", "max_steps": 0}
    run_ids = {"sft": "road-ko-1-sft", "reward": "road-ko-1-reward"}
    assert road.step_config(story, "sft", run_ids) == {"name": "road-ko-1-sft", "stage": "sft", "dataset": "alpaca-ko-sample",
                                                       "model": "smollm2-135m-instruct"}
    assert road.step_config(story, "dpo", run_ids)["model"] == "road-ko-1-sft/final"
    ppo = road.step_config(story, "ppo", run_ids)
    assert (ppo["model"], ppo["dataset"], ppo["ppo"]) == ("road-ko-1-sft/final", "prompts-ko-sample",
                                                          {"reward": "road-ko-1-reward/final"})
    assert "train" not in ppo   # every stage keeps its defaults


@pytest.mark.parametrize("arguments, words", [
    ({"language": "fr"}, "language"), ({"max_steps": -1}, "max_steps"), ({"max_steps": 2.5}, "max_steps"),
    ({"max_steps": True}, "max_steps"), ({"model": " "}, "model"),
])
def test_bad_road_settings_are_refused_before_anything_is_written(workspace, tiny_model, arguments, words):
    with pytest.raises(StudioError, match=words):
        road.create_road(workspace, **{"model": str(tiny_model), **arguments})
    assert not list(road.roads_root(workspace).iterdir())


def test_a_road_walks_every_step_stops_between_them_and_continues(workspace, tiny_model, monkeypatch):
    road_dir = road.create_road(workspace, "en", str(tiny_model), max_steps=2)
    road_id = road_dir.name
    # Stop asked while SFT trains: SFT ends (stopped or done), and no later step starts.
    waited = road._wait_for
    def stop_during_first_step(run_dir, folder):
        (folder / run_files.STOP_REQUEST_FILE).touch()
        waited(run_dir, folder)
    monkeypatch.setattr(road, "_wait_for", stop_during_first_step)
    assert road.walk(road_dir) == "stopped"
    report = api.road_status(workspace, road_id)
    assert report["status"] == "stopped"
    assert [s["run_id"] is not None for s in report["steps"]] == [True, False, False, False]
    sft_run = report["steps"][0]["run_id"]

    monkeypatch.setattr(road, "_wait_for", waited)
    (road_dir / run_files.STOP_REQUEST_FILE).unlink()
    assert road.walk(road_dir) == "completed"
    report = api.road_status(workspace, road_id)
    assert [s["status"] for s in report["steps"]] == ["completed"] * 4
    assert report["steps"][0]["run_id"] == sft_run   # kept (or resumed), not trained again from scratch
    by_step = {s["step"]: s["run_id"] for s in report["steps"]}
    for step in ("dpo", "reward", "ppo"):
        config = yaml.safe_load((runs.runs_root(workspace) / by_step[step] / "config.yaml").read_text())
        assert config["model"] == f"{sft_run}/final"
    ppo_config = yaml.safe_load((runs.runs_root(workspace) / by_step["ppo"] / "config.yaml").read_text())
    assert ppo_config["ppo"]["reward"] == f"{by_step['reward']}/final"
    assert set(report["checkpoints"]) == {"base", "sft", "dpo", "ppo"}   # the reward model only scores

    rows = road.compare_road(workspace, road_id, max_new_tokens=4)
    assert [r["prompt"] for r in rows] == road.HELD_OUT_PROMPTS["en"][:road.COMPARE_PROMPTS]
    assert all(list(r["answers"]) == ["base", "sft", "dpo", "ppo"] for r in rows)
    with pytest.raises(StudioError, match="already completed"):
        api.continue_road(workspace, road_id)

    # The Road tab's button fills Compare: four columns, labelled, the first held-out prompt typed in.
    from types import SimpleNamespace

    from studio.tabs import road as road_tab
    columns = SimpleNamespace(count="count", pickers=["p0", "p1", "p2", "p3"], labels=["l0", "l1", "l2", "l3"],
                              prompt="prompt", eval_prompts="eval")
    filled = road_tab.compare_clicked(workspace, "tabs", columns, road_id)
    assert filled["count"] == 4 and [filled[f"l{i}"] for i in range(4)] == ["base", "SFT", "DPO", "PPO"]
    assert filled["p3"]["value"] == f"{by_step['ppo']}/final" and filled["prompt"] == road.HELD_OUT_PROMPTS["en"][0]
    line, rows, button = road_tab.view(workspace, road_id)
    assert "completed" in line and [r[2] for r in rows["value"]["data"]] == ["completed"] * 4 and button["interactive"]


def test_a_road_whose_process_died_reads_interrupted(workspace, tiny_model):
    from studio.tabs import road as road_tab

    road_dir = road.create_road(workspace, "en", str(tiny_model))
    line, rows, button = road_tab.view(workspace, road_dir.name)
    assert "queued" in line and [r[2] for r in rows["value"]["data"]] == ["waiting"] * 4 and not button["interactive"]
    run_files.update_status(road_dir, status="running", pid=2 ** 22 + 7, pid_started=1.0)
    report = api.road_status(workspace, road_dir.name)
    assert report["status"] == "interrupted" and "start it again" in report["error"]
    from pipelines.messages import speaking
    with speaking("ko"):   # kept as a code in status.json: told in the visitor's language
        assert "다시 시작하세요" in api.road_status(workspace, road_dir.name)["error"]
    assert api.list_roads(workspace)[0]["status"] == "interrupted"


def test_no_road_id_leaves_the_roads_folder(workspace):
    for bad in ("../runs", "/etc", "road/../../x"):
        with pytest.raises(StudioError):
            api.road_status(workspace, bad)


def test_a_step_that_cannot_start_fails_the_road_with_its_reason(workspace, tiny_model, tmp_path):
    import shutil

    model = shutil.copytree(tiny_model, tmp_path / "gone-model")
    road_dir = road.create_road(workspace, "en", str(model))
    shutil.rmtree(model)   # the model went missing after the road was created
    assert road.walk(road_dir) == "failed"
    report = api.road_status(workspace, road_dir.name)
    assert report["status"] == "failed" and "gone-model" in report["error"]
    assert "Traceback" not in report["error"] and all(s["run_id"] is None for s in report["steps"])
