"""train.report_to: TensorBoard and Trackio (and W&B offline and MLflow, where installed) receive every step a run
logs, under the names of metrics.jsonl, from the TRL stages and from our own loops (PPO, best-of-N), into the run
folder; a tracker that is unknown or not installed is one sentence before anything starts. No network: Trackio keeps
a local store, TensorBoard writes event files, W&B an offline log, MLflow a file store."""

import json
import os
import subprocess
import sys

import pytest

from pipelines import api
from pipelines.errors import StudioError
from pipelines.messages import render
from pipelines.run_files import read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import REPO_ROOT, tiny_config, write_jsonl
from tests.test_ppo import LOWERCASE_RULE, ppo_config

BOOKKEEPING = {"step", "epoch", "time", "split"}   # the recorder's own columns of a metrics.jsonl line


def sent_names(record: dict) -> dict:
    """A metrics.jsonl line as every tracker receives it: `loss` as train/loss, `eval_loss` as eval/loss."""
    return {(f"eval/{name[5:]}" if name.startswith("eval_") else f"train/{name}"): value
            for name, value in record.items()
            if name not in BOOKKEEPING and isinstance(value, (int, float)) and not isinstance(value, bool)}


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def assert_every_step_in_tensorboard(run_dir):
    metrics = read_metrics(run_dir)
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    for record in metrics:
        for name, value in sent_names(record).items():
            assert record["step"] in scalars.get(name, {}), f"{name} at step {record['step']} missing from TensorBoard"
            assert scalars[name][record["step"]] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    return metrics, scalars


def without_tracker_variables() -> dict:
    """This process's environment without the variables a run of it pointed into its own folder."""
    from pipelines.trackers import _run_folders

    managed = {name for folders in _run_folders(REPO_ROOT).values() for name in folders}
    return {name: value for name, value in os.environ.items() if name not in managed}


def test_sft_with_tensorboard_logs_every_step_and_eval_under_the_names_of_metrics_jsonl(tiny_model, workspace):
    config = tiny_config(tiny_model, max_steps=4, eval_steps=2, report_to="tensorboard")
    run_dir = api.prepare_run(workspace, config.replace("dataset: tiny.jsonl", "dataset: tiny.jsonl\neval_dataset: tiny.jsonl"))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    metrics, scalars = assert_every_step_in_tensorboard(run_dir)
    assert [m["step"] for m in metrics if m["split"] == "train"] == [1, 2, 3, 4]
    assert [m["step"] for m in metrics if m["split"] == "eval"] == [2, 4]
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4] and sorted(scalars["eval/loss"]) == [2, 4]
    assert not (run_dir / ".staging").exists(), "the event files live in the run folder, not the trainer's staging"


def train_in_a_process(workspace, name: str, config: str, **env):
    """Train headless in a process of its own, as the studio does (trackio reads TRACKIO_DIR once, when imported)."""
    file = workspace / f"{name}.yaml"
    file.write_text(f"name: {name}\n" + config, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(file)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                            env={**without_tracker_variables(), "HF_HUB_OFFLINE": "1", **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return workspace / "runs" / name


def test_sft_with_trackio_keeps_every_step_in_a_local_store_inside_the_run(tiny_model, workspace):
    run_dir = train_in_a_process(workspace, "tracked", tiny_config(tiny_model, max_steps=4, report_to="trackio"))
    assert (run_dir / "trackio" / "alignment-studio.db").is_file()

    # Read back through trackio's own storage, in a process whose TRACKIO_DIR is the run's store.
    read = ("import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage\n"
            "print(json.dumps(SQLiteStorage.get_logs('alignment-studio', 'tracked'), default=str))")
    stored = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, timeout=120,
                            env={**without_tracker_variables(), "TRACKIO_DIR": str(run_dir / "trackio")})
    assert stored.returncode == 0, stored.stderr
    logs = json.loads(stored.stdout.strip().splitlines()[-1])
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for record in metrics:
        at_step = [log for log in logs if log.get("train/global_step") == record["step"]]
        assert at_step, f"step {record['step']} missing from trackio"
        for name, value in sent_names(record).items():
            assert any(log.get(name) == pytest.approx(value) for log in at_step), name


def test_mlflow_receives_every_step_in_a_file_store_inside_the_run(tiny_model, workspace, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = train_in_a_process(workspace, "mlflow-run", tiny_config(tiny_model, max_steps=3, report_to="mlflow"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("alignment-studio").experiment_id])
    assert run.info.run_name == "mlflow-run"
    metrics = read_metrics(run_dir)
    for name in ("loss", "grad_norm", "learning_rate"):   # MLflow keeps the names of metrics.jsonl as they are
        history = {point.step: point.value for point in client.get_metric_history(run.info.run_id, name)}
        assert history == pytest.approx({m["step"]: m[name] for m in metrics}), name


def test_wandb_offline_receives_every_step_inside_the_run(tiny_model, workspace):
    pytest.importorskip("wandb")
    run_dir = train_in_a_process(workspace, "wandb-run", tiny_config(tiny_model, max_steps=3, report_to="wandb"),
                                 WANDB_MODE="offline", WANDB_SILENT="true")
    (offline,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb 0.31 has no Python reader for its offline log (wandb sync uploads it): its records hold each metric's
    # name and JSON value as plain bytes, and a 3-step log is one block, so nothing is split.
    written = offline.read_bytes()
    for record in read_metrics(run_dir):
        assert json.dumps(record["loss"]).encode() in written, f"the loss of step {record['step']}"
        assert all(name.encode() in written for name in sent_names(record))


def test_our_ppo_loop_reports_the_same_names_to_tensorboard(tiny_model, workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    (workspace / "rules.py").write_text(LOWERCASE_RULE, encoding="utf-8")
    config = ppo_config(tiny_model, steps=3, ppo_epochs=1).replace("lr_scheduler: constant}", "lr_scheduler: constant, report_to: tensorboard}")
    run_dir = api.prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    metrics, scalars = assert_every_step_in_tensorboard(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"train/objective/scores", "train/objective/kl", "train/loss/policy"} <= set(scalars)


def test_best_of_n_which_trains_no_model_reports_to_tensorboard_too(tiny_model, workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    run_dir = api.prepare_run(workspace, (
        f"stage: rejection_sampling\nmodel: {tiny_model}\ndataset: prompts.jsonl\n"
        "train: {batch_size: 4, max_steps: 2, report_to: tensorboard}\n"
        "rejection_sampling: {rules: [{max_chars: 12}], num_samples: 4, response_length: 16}\n"))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    metrics, scalars = assert_every_step_in_tensorboard(run_dir)
    assert [m["step"] for m in metrics] == [1, 2] and sorted(scalars["train/mean_score"]) == [1, 2]


def test_an_unknown_tracker_is_one_sentence_and_no_run(tiny_model, workspace):
    with pytest.raises(StudioError) as caught:
        api.prepare_run(workspace, tiny_config(tiny_model, report_to="comet"))
    assert str(caught.value) == ("`train.report_to` must be one of none, trackio, tensorboard, wandb, mlflow, "
                                 "not 'comet'.")
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_a_tracker_not_installed_is_refused_at_start_naming_how_to_install_it(tiny_model, workspace, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "wandb" else find_spec(name, *rest))
    with pytest.raises(StudioError) as caught:
        api.prepare_run(workspace, tiny_config(tiny_model, report_to="wandb"))
    assert caught.value.code == "stage.tracker_not_installed"
    assert "pip install wandb" in str(caught.value) and str(caught.value).count(".") >= 1
    korean = caught.value.text("ko")
    assert korean == render("stage.tracker_not_installed", "ko", tracker="wandb", package="wandb") != str(caught.value)
    assert "pip install wandb" in korean
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_the_train_form_offers_every_tracker_with_its_help_from_the_catalog(workspace):
    import gradio as gr
    import yaml

    from pipelines.config import describe_settings, parse_config_text
    from pipelines.messages import speaking
    from pipelines.trackers import TRACKERS
    from studio.app import build_app
    from studio.form import values_to_config
    from studio.i18n import EN, KO

    app = build_app(workspace)
    (component,) = [b for b in app.blocks.values() if getattr(getattr(b, "label", None), "key", None) == "train.report_to"]
    assert isinstance(component, gr.Dropdown) and component.value == "none"
    assert [choice[1] for choice in component.choices] == list(TRACKERS)
    assert component.info.key == "help.train.report_to"
    config = values_to_config({("", "stage"): "sft", ("train", "report_to"): "trackio"})
    assert parse_config_text(yaml.safe_dump(config)).train.report_to == "trackio"
    spec_help = next(s for s in describe_settings("train") if s["name"] == "report_to")["help"]
    assert EN["train.report_to"] and KO["train.report_to"] != EN["train.report_to"]
    assert KO["help.train.report_to"] != EN["help.train.report_to"] == spec_help
    with speaking("ko"):
        described = next(s for s in describe_settings("train") if s["name"] == "report_to")
    assert described["help"] == KO["help.train.report_to"] and described["choices"] == list(TRACKERS)


def test_wandb_without_a_login_is_refused_at_start_and_offline_mode_is_allowed(tiny_model, workspace, monkeypatch,
                                                                                tmp_path):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))   # no netrc: no `wandb login` on this machine
    with pytest.raises(StudioError) as caught:
        api.prepare_run(workspace, tiny_config(tiny_model, report_to="wandb"))
    assert caught.value.code == "stage.wandb_not_logged_in" and "wandb login" in str(caught.value)
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n", encoding="utf-8")
    from pipelines.trackers import wandb_can_log
    assert wandb_can_log(), "`wandb login` wrote the key"
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_can_log()
