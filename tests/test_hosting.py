"""Hosted limits (pipelines/hosting.py) and the server-wide run queue's turns between users (pipelines/run_queue.py).

Each limit refuses in one sentence, in English and Korean, before anything is written; the local default has none;
the queue gives a user's second run a place only after every other waiting user's first; a run past its training
time saves a checkpoint and stops saying why."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from pipelines import api, hosting, jobs, run_queue, runs
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.errors import StudioError
from pipelines.messages import render
from pipelines.run_files import checkpoint_steps, read_status, update_status
from pipelines.users import user_workspace
from tests.conftest import REPO_ROOT, TINY_ROWS, tiny_config, write_jsonl
from tests.test_ppo import ppo_config

LENGTHS = "def reward(prompts, completions):\n    return [float(len(c)) for c in completions]\n"


@pytest.fixture
def hosted(monkeypatch, tiny_model):
    """Serve this test under HostedLimits(**limits), the tiny model allowed unless allow_models is given."""
    def serve(**limits):
        limits.setdefault("allow_models", (str(tiny_model),))
        monkeypatch.setenv(hosting.HOSTED_ENV, json.dumps(asdict(hosting.HostedLimits(**limits))))
        return hosting.current()
    return serve


@pytest.fixture
def fake_launch(monkeypatch):
    """runs.launch that starts nothing: the run reads as running in this (live) process, launched now."""
    import time
    launched = []

    def launch(run_dir, resume=False):
        launched.append(run_dir.name)
        update_status(run_dir, status="running", pid=os.getpid(), pid_started=runs.process_start_time(os.getpid()),
                      launched_at=time.time())
        return os.getpid()

    monkeypatch.setattr(runs, "launch", launch)
    monkeypatch.delenv(run_queue.MAX_PARALLEL_ENV, raising=False)   # one run at a time
    return launched


def written(workspace: Path) -> set[Path]:
    """Every file and folder under the workspace, less the empty roots and the locks readers take."""
    return {p.relative_to(workspace) for p in Path(workspace).rglob("*")
            if not p.name.endswith(".lock") and (p.is_file() or any(p.iterdir()))}


def refused(code: str, call, workspace: Path) -> StudioError:
    """`call()` raises StudioError `code`, one sentence in each language, and leaves the workspace as it was."""
    before = written(workspace)
    with pytest.raises(StudioError) as raised:
        call()
    error = raised.value
    assert error.code == code, str(error)
    params = error.catalog_message.params
    assert str(error) == render(code, "en", **params) and "\n" not in str(error)
    assert error.text("ko") == render(code, "ko", **params) != str(error)
    assert written(workspace) == before, "nothing is written"
    return error


def _start(workspace, tiny_model, name, **train):
    return api.start_run(workspace, tiny_config(tiny_model, max_steps=2, **train) + f"name: {name}\n")


# --- the local default ---

def test_the_local_default_has_no_limits(tiny_model, workspace, monkeypatch, tmp_path):
    import launch
    monkeypatch.delenv(hosting.HOSTED_ENV, raising=False)
    monkeypatch.delenv(hosting.SPACE_ENV, raising=False)
    assert launch.parse_args(["--workspace", str(tmp_path / "w"), "--skip-model-prepare"]).hosted_limits is None
    assert hosting.current() is None
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_steps=5000))   # over any hosted cap
    assert run_dir.is_dir()
    (workspace / "rules.py").write_text(LENGTHS, encoding="utf-8")
    hosting.check_user_code("rules.py")
    hosting.check_model("org/any-model", workspace)
    hosting.check_data(workspace, 10 ** 9, "file")


def test_launch_options_make_the_limits_and_the_children_inherit_them(monkeypatch):
    parser = argparse.ArgumentParser()
    hosting.add_arguments(parser)
    monkeypatch.delenv(hosting.SPACE_ENV, raising=False)
    assert hosting.from_args(parser.parse_args([])) is None
    with pytest.raises(ValueError, match="--max-steps: limits of hosted mode only; add --hosted"):
        hosting.from_args(parser.parse_args(["--max-steps", "9"]))
    limits = hosting.from_args(parser.parse_args(["--hosted", "--max-steps", "9", "--max-wall-minutes", "0.5",
                                                  "--allow-models", "org/a, ./b", "--allow-user-code"]))
    assert limits == hosting.HostedLimits(max_steps=9, max_wall_minutes=0.5, allow_user_code=True,
                                          allow_models=("org/a", str(Path("./b").resolve())))   # as the children see it
    monkeypatch.setenv(hosting.SPACE_ENV, "someone/studio")
    assert hosting.from_args(parser.parse_args([])) == hosting.HostedLimits(), "on a Space by itself"

    monkeypatch.setenv(hosting.HOSTED_ENV, "")
    hosting.export(limits)
    child = subprocess.run([sys.executable, "-c", "from pipelines.hosting import current; print(current())"],
                           capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert child.stdout.strip() == repr(limits), "a training process reads the limits the app was given"
    hosting.export(None)
    assert hosting.current() is None


# --- runs ---

def test_a_run_over_the_step_cap_or_of_epochs_only_is_refused(tiny_model, workspace, hosted):
    hosted(max_steps=50)
    error = refused("hosting.too_many_steps", lambda: api.prepare_run(workspace, tiny_config(tiny_model, max_steps=51)),
                    workspace)
    assert str(error) == "On this server a run trains at most 50 steps, and train.max_steps is 51: set it from 1 to 50."
    refused("hosting.steps_unbounded", lambda: api.prepare_run(workspace, tiny_config(tiny_model, max_steps=0)), workspace)
    assert api.prepare_run(workspace, tiny_config(tiny_model, max_steps=50)).is_dir(), "at the cap it is fine"
    from pipelines.config import parse_config_text   # best-of-N trains nothing: its default 0 is every prompt once
    hosting.check_run(workspace, parse_config_text("stage: rejection_sampling\nmodel: x\ndataset: prompts-en-sample\n"
                                                   "rejection_sampling: {reward: a/final}\n"))


def test_a_run_may_not_log_to_the_owners_wandb_or_mlflow_but_to_its_own_folder(tiny_model, workspace, hosted):
    hosted()
    for tracker in ("wandb", "mlflow"):
        error = refused("hosting.remote_tracker", lambda: api.prepare_run(
            workspace, tiny_config(tiny_model, max_steps=5, report_to=tracker)), workspace)
        assert tracker in str(error) and "trackio, tensorboard" in str(error)
    assert api.prepare_run(workspace, tiny_config(tiny_model, max_steps=5, report_to="tensorboard")).is_dir()


def test_only_the_bundled_model_own_checkpoints_and_allowed_models_are_used(tiny_model, workspace, hosted, tmp_path):
    hosted(allow_models=())
    error = refused("hosting.model_not_allowed", lambda: api.prepare_run(workspace, tiny_config(tiny_model)), workspace)
    assert BUNDLED_MODEL_ID in str(error) and "operator can allow others" in str(error)
    hub = "HuggingFaceTB/SmolLM2-360M-Instruct"   # refused before any Hub lookup, so no download either
    refused("hosting.model_not_allowed", lambda: api.prepare_run(workspace, tiny_config(tiny_model).replace(
        f"model: {tiny_model}", f"model: {hub}")), workspace)
    refused("hosting.model_not_allowed", lambda: api.chat(workspace, hub, "Hi", [], {}), workspace)

    hosted()   # the tiny model on the allow-list: a run of it, then its checkpoints, are this user's
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    hosting.check_model(f"{run_dir.name}/final", workspace)
    other = user_workspace(tmp_path / "server", "bob")
    refused("hosting.model_not_allowed", lambda: hosting.check_model(f"{run_dir.name}/final", other), other)


def test_python_reward_and_scorer_files_are_refused_unless_allowed(tiny_model, workspace, hosted):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    (workspace / "rules.py").write_text(LENGTHS, encoding="utf-8")
    hosted()
    error = refused("hosting.no_user_code", lambda: api.prepare_run(workspace, ppo_config(tiny_model)), workspace)
    assert "'rules.py'" in str(error) and "--allow-user-code" in str(error)
    spec = {"checkpoints": [str(tiny_model)], "prompts": ["Say hi"], "scorer": "rules.py", "settings": {}}
    refused("hosting.no_user_code", lambda: api.start_job(workspace, "evaluate", spec), workspace)
    assert not jobs.list_job_dirs(workspace)
    hosted(allow_user_code=True)
    assert api.prepare_run(workspace, ppo_config(tiny_model)).is_dir()


def test_a_user_at_the_active_run_cap_can_start_or_resume_no_more(tiny_model, workspace, hosted, fake_launch):
    hosted(max_active_runs=2)
    first, second = _start(workspace, tiny_model, "first"), _start(workspace, tiny_model, "second")
    assert [api.run_status(workspace, r)["status"] for r in (first, second)] == ["running", "queued"]
    error = refused("hosting.too_many_active", lambda: _start(workspace, tiny_model, "third"), workspace)
    assert "2 runs queued or training" in str(error)

    first_dir = workspace / "runs" / first
    (first_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    update_status(first_dir, status="stopped", pid=None)   # its place is free: a third may start
    third = _start(workspace, tiny_model, "third")
    refused("hosting.too_many_active", lambda: api.resume_run(workspace, first), workspace)
    assert read_status(first_dir)["status"] == "stopped"
    api.stop_run(workspace, third)   # cancelled while queued: a place again
    assert api.resume_run(workspace, first)["status"] == "queued"


def test_a_workspace_over_its_disk_quota_starts_nothing_and_says_how_much_it_uses(tiny_model, workspace, hosted):
    hosted(disk_quota_mb=1)
    big = workspace / "datasets" / "big"
    big.mkdir(parents=True)
    (big / "rows.jsonl").write_bytes(b"x" * (3 * 1024 * 1024 // 2))
    error = refused("hosting.quota_full", lambda: api.prepare_run(workspace, tiny_config(tiny_model)), workspace)
    assert "use 1.5 MB of your 1.0 MB" in str(error)
    shutil.rmtree(big)
    exported = workspace / "exports" / "a-model"   # exports count as well: a visitor fills no disk with them
    exported.mkdir(parents=True)
    (exported / "model.safetensors").write_bytes(b"x" * (3 * 1024 * 1024 // 2))
    refused("hosting.quota_full", lambda: api.prepare_run(workspace, tiny_config(tiny_model)), workspace)
    error = refused("hosting.quota_export", lambda: api.export_model(workspace, str(tiny_model), "merged"), workspace)
    assert "exports already use 1.5 MB" in str(error)


# --- data ---

def _rows_of(size: int) -> list[dict]:
    """Instruction rows of about `size` bytes in all."""
    answer = "Hope this helps! " * 50
    return [{"instruction": f"Question {i}?", "input": "", "output": answer} for i in range(size // len(answer) + 1)]


def test_uploads_tables_and_hub_imports_over_the_upload_size_are_refused_before_saving(workspace, hosted, monkeypatch,
                                                                                        tmp_path):
    hosted(upload_mb=1)
    upload = write_jsonl(tmp_path / "big.jsonl", _rows_of(1200 * 1024))
    error = refused("hosting.data_too_big", lambda: api.upload_dataset(workspace, str(upload), "big"), workspace)
    assert "at most 1 MB at a time: upload a smaller file" in str(error)

    table = [[r["instruction"], r["input"], r["output"], ""] for r in _rows_of(1200 * 1024)]
    assert "save fewer or shorter rows" in str(
        refused("hosting.data_too_big", lambda: api.save_table(workspace, "instruction", table, "tbl"), workspace))

    from pipelines.data import hub
    monkeypatch.setattr(hub, "fetch_rows", lambda repo_id, config, split, max_rows: _rows_of(1200 * 1024))
    assert "import fewer rows (max_rows)" in str(refused(
        "hosting.data_too_big", lambda: api.import_hub_dataset(workspace, "org/rows", None, "train", "hub"), workspace))

    small = write_jsonl(tmp_path / "small.jsonl", TINY_ROWS)   # within the limits, a Hub import and an upload save
    assert api.upload_dataset(workspace, str(small), "small")["saved"]
    monkeypatch.setattr(hub, "fetch_rows", lambda repo_id, config, split, max_rows: TINY_ROWS)
    assert api.import_hub_dataset(workspace, "org/rows", None, "train", "hub")["saved"]


def test_an_upload_that_would_pass_the_quota_is_refused(workspace, hosted, tmp_path):
    hosted(disk_quota_mb=1)
    assert api.upload_dataset(workspace, str(write_jsonl(tmp_path / "a.jsonl", _rows_of(600 * 1024))), "a")["saved"]
    upload = write_jsonl(tmp_path / "b.jsonl", _rows_of(600 * 1024))
    error = refused("hosting.quota_upload", lambda: api.upload_dataset(workspace, str(upload), "b"), workspace)
    assert "of your 1.0 MB" in str(error)


# --- the queue ---

def test_the_queue_takes_turns_between_users(tiny_model, tmp_path, fake_launch):
    root = tmp_path / "server"
    alice, bob = user_workspace(root, "alice"), user_workspace(root, "bob")
    for workspace in (alice, bob):
        write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    for name in ("a1", "a2", "a3"):
        _start(alice, tiny_model, name)
    _start(bob, tiny_model, "b1")
    assert fake_launch == ["a1"], "one run at a time on the whole server"
    places = {r: api.run_status(w, r)["queue_position"] for w, r in ((bob, "b1"), (alice, "a2"), (alice, "a3"))}
    assert places == {"b1": 1, "a2": 2, "a3": 3}, "Bob's first run before Alice's second, though queued after it"

    for workspace, run_id in ((alice, "a1"), (bob, "b1"), (alice, "a2")):
        update_status(workspace / "runs" / run_id, status="completed", pid=None)
        api.list_runs(workspace)   # anyone looking frees the place
    assert fake_launch == ["a1", "b1", "a2", "a3"]


def test_one_users_queue_is_first_queued_first_started(tiny_model, workspace, fake_launch):
    for name in ("first", "second", "third"):
        _start(workspace, tiny_model, name)
    assert [api.run_status(workspace, r)["queue_position"] for r in ("second", "third")] == [1, 2]
    for run_id in ("first", "second"):
        update_status(workspace / "runs" / run_id, status="completed", pid=None)
        api.list_runs(workspace)
    assert fake_launch == ["first", "second", "third"]


# --- the training time ---

def test_a_run_past_its_training_time_saves_a_checkpoint_and_stops_saying_why(tiny_model, workspace, hosted):
    from pipelines.train import train_run

    hosted(max_wall_minutes=0.03)   # about two seconds
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_steps=300, save_steps=1000))
    assert train_run(run_dir, echo=False) == "stopped"
    status = api.run_status(workspace, run_dir.name)
    assert status["status"] == "stopped" and 1 <= status["step"] < 300
    assert checkpoint_steps(run_dir) == [status["step"]], "saved as at a user's Stop"
    assert status["error"] == render("hosting.wall_time", "en", minutes=0.03)
    assert "0.03 minutes" in status["error"]
    assert read_status(run_dir)["error_message"]["code"] == "hosting.wall_time", "told in the visitor's language"


def test_a_user_runs_one_job_at_a_time_in_hosted_mode(tiny_model, workspace, hosted, monkeypatch):
    hosted(allow_user_code=True)
    monkeypatch.setattr(jobs, "launch", lambda job_dir, env=None: None)   # the job stays queued, as in its first seconds
    (workspace / "lengths.py").write_text(LENGTHS)
    spec = {"checkpoints": [str(tiny_model)], "prompts": ["Hi?"], "scorer": "lengths.py"}
    first = api.start_job(workspace, "evaluate", spec)
    error = refused("hosting.too_many_jobs", lambda: api.start_job(workspace, "evaluate", spec), workspace)
    assert "1 job running (an evaluation, a scoring, an export or a push" in str(error)
    update_status(jobs.job_dir_of(workspace, first), status="completed")
    assert api.start_job(workspace, "evaluate", spec) != first, "once it ended, another may start"


def test_evaluate_scores_with_declarative_rules_where_python_files_are_off(tiny_model, workspace, hosted):
    """In hosted mode rules are the scorer anyone may use: Compare's Evaluate with rules alone, as a job."""
    from studio.tabs import compare
    from tests.conftest import wait_for
    hosted()
    refused("hosting.no_user_code", lambda: api.start_job(workspace, "evaluate", {
        "checkpoints": [str(tiny_model)], "prompts": ["Hi?"], "scorer": "rules.py"}), workspace)
    picker, _ = compare.start_evaluation(workspace, "", "Say hi\nName a color\n", "", [str(tiny_model)], 6,
                                         "- {max_chars: 1000}\n- {contains: zzzz-never, weight: 2}\n")
    wait_for(lambda: api.job_status(workspace, picker["value"])["status"] in ("completed", "failed"), timeout=120,
             what="the evaluation")
    results = api.job_results(workspace, picker["value"])
    assert api.job_status(workspace, picker["value"])["status"] == "completed", results
    assert [row["score"] for row in results["rows"]] == [1.0, 1.0], "max_chars met (1), the missing text scores 0"
    assert results["summary"]["scorer"] == "2 rules"


def test_the_form_words_model_and_reward_for_a_hosted_server(hosted, monkeypatch):
    """A hosted visitor is offered what the server takes: no Hub download, no Python reward file."""
    import dataclasses

    from pipelines.config import sections
    from studio.form import field_component

    reward = next(f for f in dataclasses.fields(sections()["ppo"]) if f.name == "reward")

    def keys():
        component = field_component("ppo", reward)
        return component.label.key, component.info.key

    monkeypatch.delenv(hosting.HOSTED_ENV, raising=False)
    assert keys() == ("ppo.reward", "help.ppo.reward"), "the local default: as always"
    hosted()
    assert keys() == ("hosted.ppo.reward", "hosted.help.ppo.reward")
    hosted(allow_user_code=True)
    assert keys() == ("ppo.reward", "help.ppo.reward"), "files allowed: the usual words"
    assert "Python reward files are off" in render("hosted.help.ppo.reward", "en")
