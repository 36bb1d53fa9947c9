"""Runs as processes: start, stop with a checkpoint, SIGKILL then interrupted, resume from the checkpoint."""

import os
import signal

import pytest

from pipelines import api, runs
from pipelines.errors import StudioError
from pipelines.run_files import checkpoint_steps, read_jsonl, read_metrics, read_status
from tests.conftest import tiny_config, wait_for

# Long enough never to finish by itself; the tests stop or kill it.
ENDLESS = {"max_steps": 100000, "save_steps": 20, "learning_rate": 1e-3}


def _step(run_dir):
    metrics = read_metrics(run_dir)
    return metrics[-1]["step"] if metrics else 0


def test_stop_saves_a_loadable_checkpoint_and_ends_stopped(tiny_model, workspace):
    run_id = api.start_run(workspace, tiny_config(tiny_model, **ENDLESS))
    run_dir = workspace / "runs" / run_id
    wait_for(lambda: _step(run_dir) >= 3, what="training to start")
    api.stop_run(workspace, run_id)
    status = wait_for(lambda: (s := api.run_status(workspace, run_id))["status"] in ("stopped", "failed") and s,
                      timeout=60, what="the run to stop")
    assert status["status"] == "stopped", status
    step = checkpoint_steps(run_dir)[-1]
    assert step == read_status(run_dir)["step"], "the stop checkpoint is the last step"

    from pipelines.inference import chat
    reply = chat(workspace, f"{run_id}/checkpoint-{step}", "Say hi", [], {"max_new_tokens": 5, "temperature": 0})
    assert isinstance(reply, str)


def test_sigkill_marks_interrupted_keeps_metrics_and_resume_continues(tiny_model, workspace):
    run_id = api.start_run(workspace, tiny_config(tiny_model, **ENDLESS))
    run_dir = workspace / "runs" / run_id
    wait_for(lambda: checkpoint_steps(run_dir) and _step(run_dir) > checkpoint_steps(run_dir)[-1] + 2,
             what="a checkpoint and a few more steps")
    os.kill(read_status(run_dir)["pid"], signal.SIGKILL)
    lines_before = len(read_jsonl(run_dir / "metrics.jsonl"))

    # What an app restart sees: a dead pid means interrupted, never "running" forever.
    status = wait_for(lambda: (s := api.run_status(workspace, run_id))["status"] == "interrupted" and s,
                      timeout=20, what="interrupted")
    assert "resume" in status["error"]
    kept = read_metrics(run_dir)
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == lines_before
    assert [m["step"] for m in kept] == list(range(1, kept[-1]["step"] + 1))
    resume_step = checkpoint_steps(run_dir)[-1]
    assert not list((run_dir / "checkpoints").glob("*.tmp*")), "only complete checkpoints are visible"

    api.resume_run(workspace, run_id)
    wait_for(lambda: read_status(run_dir).get("status") == "running" and len(read_jsonl(run_dir / "metrics.jsonl")) > lines_before + 2,
             what="the resumed run to log")
    api.stop_run(workspace, run_id)
    wait_for(lambda: api.run_status(workspace, run_id)["status"] == "stopped", timeout=60, what="stop after resume")
    new_records = read_jsonl(run_dir / "metrics.jsonl")[lines_before:]
    assert new_records[0]["resumed_from"] == resume_step
    assert new_records[1]["step"] == resume_step + 1, "training continued from the checkpoint's step"
    view = [m["step"] for m in read_metrics(run_dir)]
    assert view == list(range(1, view[-1] + 1)), "one history, no gaps or duplicates"
    assert "resuming from checkpoint-" in (run_dir / "train.log").read_text()


def test_start_refuses_bad_input_and_starts_nothing(tiny_model, workspace):
    cases = [
        (tiny_config(tiny_model).replace("stage: sft", "stage: nope"), "Unknown stage"),
        (tiny_config(tiny_model, learning_rate=0), "learning_rate"),
        (tiny_config(tiny_model, batch_size=-2), "batch_size"),
        (tiny_config(tiny_model, max_length=100000), "context of 512"),
        (tiny_config(tiny_model).replace("tiny.jsonl", "../../etc/passwd.jsonl"), "outside the workspace"),
        (tiny_config(tiny_model).replace("tiny.jsonl", "/etc/hosts.jsonl"), "relative path"),
        ("name: ../../x\n" + tiny_config(tiny_model), "not allowed"),
        (tiny_config(tiny_model).replace(str(tiny_model), "no-such-org/no-such-model"), "no-such-org/no-such-model"),
        (tiny_config(tiny_model).replace(str(tiny_model), "https://evil.example/model"), "not a model id"),
    ]
    import torch
    if not torch.cuda.is_available():
        cases += [(tiny_config(tiny_model).replace("method: lora", "method: qlora"), "QLoRA needs"),
                  (tiny_config(tiny_model, precision="fp16"), "fp16 training needs a GPU")]
    (workspace / "empty.jsonl").write_text('{"instruction": "x", "output": ""}\n')
    cases.append((tiny_config(tiny_model).replace("tiny.jsonl", "empty.jsonl"), "row 1"))
    for text, words in cases:
        with pytest.raises(StudioError) as error:
            api.start_run(workspace, text)
        assert words in str(error.value), (words, str(error.value))
        assert "\n" not in str(error.value)
    assert api.list_runs(workspace) == []


def test_the_hardware_check_is_one_function_with_one_sentence_each_in_english_and_korean(monkeypatch, tiny_model):
    """check_hardware is what start_run refuses with (above) and what load_policy checks again in the trainer."""
    import importlib.util
    from pathlib import Path

    from pipelines.config import parse_config_text
    from pipelines.messages import render
    from pipelines.models import ModelSource
    from pipelines.stages.common import check_hardware

    qlora = parse_config_text(tiny_config(tiny_model).replace("method: lora", "method: qlora"))
    on_adapter = ModelSource("sft-run/final", "checkpoint", str(tiny_model), [Path("sft-run/final")])
    installed = {"bitsandbytes": True}
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *rest):
        if name == "bitsandbytes":
            return object() if installed["bitsandbytes"] else None
        return real_find_spec(name, *rest)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    cases = [(qlora, "cpu", None, "stage.qlora_needs_cuda"), (qlora, "cuda", on_adapter, "stage.qlora_on_adapters"),
             (parse_config_text(tiny_config(tiny_model, precision="fp16")), "cpu", None, "stage.fp16_needs_gpu")]
    for config, device, source, code in cases:
        with pytest.raises(StudioError) as error:
            check_hardware(config, device, source)
        assert error.value.code == code and error.value.text("ko") == render(code, "ko") != str(error.value)
    check_hardware(qlora, "cuda", ModelSource(str(tiny_model), "local", str(tiny_model)))   # a GPU with bitsandbytes
    installed["bitsandbytes"] = False
    with pytest.raises(StudioError, match="QLoRA needs the bitsandbytes package"):
        check_hardware(qlora, "cuda")


def test_launch_uses_an_argument_list_not_a_shell(monkeypatch, tiny_model, workspace):
    seen = {}

    class FakePopen:
        pid = 123456

        def __init__(self, command, **kwargs):
            seen["command"], seen["shell"] = command, kwargs.get("shell", False)

        def wait(self):
            return 0

    monkeypatch.setattr(runs.subprocess, "Popen", FakePopen)
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    runs.launch(run_dir)
    assert isinstance(seen["command"], list) and seen["shell"] is False
    assert seen["command"][1:4] == ["-m", "pipelines", "train"]


def test_a_crash_in_training_ends_failed_with_one_sentence_and_keeps_the_run(monkeypatch, tiny_model, workspace):
    import pipelines.stages as stages
    from pipelines.train import train_run

    def crashing_stage(context):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setattr(stages, "stage_runner", lambda stage: crashing_stage)
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    before = signal.getsignal(signal.SIGINT)   # whatever an earlier test (or the browser driver) left installed
    assert train_run(run_dir, echo=False) == "failed"
    status = api.run_status(workspace, run_dir.name)
    assert status["error"].startswith("Out of memory: lower batch_size") and "\n" not in status["error"]
    assert (run_dir / "config.yaml").is_file()
    assert signal.getsignal(signal.SIGINT) is before, "signal handlers are given back"


def test_stop_before_the_first_step_then_cli_resume_runs_to_the_end(tiny_model, workspace):
    from pipelines.cli import main
    from pipelines.train import train_run

    run_dir = api.prepare_run(workspace, "name: early\n" + tiny_config(tiny_model, max_steps=8, save_steps=4))
    (run_dir / "stop_requested").touch()  # pressed while the process was still starting up
    assert train_run(run_dir, echo=False) == "stopped"
    assert checkpoint_steps(run_dir) == [1] and not (run_dir / "stop_requested").exists()
    assert main(["resume", "early", "--workspace", str(workspace)]) == 0
    assert read_status(run_dir)["status"] == "completed"
    assert [m["step"] for m in read_metrics(run_dir)] == list(range(1, 9))
    assert {"resumed_from": 1} == {k: v for k, v in read_jsonl(run_dir / "metrics.jsonl")[1].items() if k != "time"}


def test_metrics_of_an_abandoned_branch_leave_the_view_after_a_resume(workspace):
    from pipelines.run_files import append_jsonl
    run_dir = workspace / "r"
    run_dir.mkdir()
    for step in (1, 2, 3, 4, 5):
        append_jsonl(run_dir / "metrics.jsonl", {"step": step, "loss": 1.0})
    append_jsonl(run_dir / "metrics.jsonl", {"resumed_from": 2})
    append_jsonl(run_dir / "metrics.jsonl", {"step": 3, "loss": 0.5})
    assert [(m["step"], m["loss"]) for m in read_metrics(run_dir)] == [(1, 1.0), (2, 1.0), (3, 0.5)]
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 7, "the file itself keeps every line"


def test_a_dead_pid_means_interrupted_but_never_overwrites_a_final_status(workspace):
    from pipelines.run_files import update_status, write_json_atomic
    run_dir = workspace / "r"
    run_dir.mkdir()
    dead = {"status": "running", "pid": 2 ** 22 + 12345, "pid_started": 1.0}
    write_json_atomic(run_dir / "status.json", dead)
    assert runs.refresh_status(run_dir)["status"] == "interrupted"
    write_json_atomic(run_dir / "status.json", {**dead, "status": "completed"})
    assert runs.refresh_status(run_dir)["status"] == "completed"
    write_json_atomic(run_dir / "status.json", {"status": "queued", "pid": None})  # created, never launched
    assert runs.refresh_status(run_dir)["status"] == "queued"
    assert update_status(run_dir, only_if=lambda s: s["status"] == "running", status="x")["status"] == "queued"
    assert not runs.process_alive(os.getpid(), started=1.0), "a reused pid has another start time"
    assert runs.process_alive(os.getpid(), started=runs.process_start_time(os.getpid()))


def test_a_second_trainer_of_the_same_run_is_refused_and_changes_nothing(tiny_model, workspace):
    import fcntl

    from pipelines.train import train_run
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    with open(run_dir / ".train.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert train_run(run_dir, echo=False) == "queued"
    assert read_metrics(run_dir) == []


def test_run_names_leave_room_for_a_suffix(tiny_model, workspace):
    with pytest.raises(StudioError, match="at most 72"):
        api.start_run(workspace, f"name: {'a' * 73}\n" + tiny_config(tiny_model))
