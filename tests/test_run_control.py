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
    assert new_records[0]["step"] == resume_step + 1, "training continued from the checkpoint's step"
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
    assert train_run(run_dir, echo=False) == "failed"
    status = api.run_status(workspace, run_dir.name)
    assert status["error"].startswith("Out of memory: lower batch_size") and "\n" not in status["error"]
    assert (run_dir / "config.yaml").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "signal handlers are given back"
