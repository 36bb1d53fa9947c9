"""Faults injected for real: a learning rate that makes the loss NaN between two logged steps, a disk that fills (a
3 MB tmpfs as the workspace, when we are root), a trainer killed with SIGKILL on that full disk, a reward file that
prints without end, and a completed run asked to train again. Each ends in one true sentence and costs no
checkpoint, no final/ and no app."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines import api, run_files, runs
from pipelines.errors import StudioError
from pipelines.run_files import checkpoint_steps, read_jsonl, read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import REPO_ROOT, TINY_ROWS, tiny_config, wait_for, write_jsonl


def _all_finite(folder) -> bool:
    return all(torch.isfinite(t).all() for f in folder.glob("*.safetensors") for t in load_file(f).values())


def _temp_files(folder) -> list:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# 6. A NaN between two logged steps.

def test_a_loss_that_turns_nan_between_logged_steps_stops_the_run_before_it_saves(tiny_model, workspace, monkeypatch):
    from pipelines.recorder import RunRecorder

    def huge_learning_rate_from_step_8(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step >= 7:   # what lr 1e18 does, from the 8th optimizer step on (the config refuses it)
            for group in optimizer.param_groups:
                group["lr"] = 1e18

    monkeypatch.setattr(RunRecorder, "on_step_begin", huge_learning_rate_from_step_8, raising=False)
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, logging_steps=2, save_steps=3, max_steps=15))
    assert train_run(run_dir, echo=False) == "failed"

    assert all(_all_finite(run_dir / "checkpoints" / f"checkpoint-{s}") for s in checkpoint_steps(run_dir))
    # Step 9, the case of the issue: a save step between two logged ones (8 and 10), whose loss no log shows.
    assert checkpoint_steps(run_dir) == [3, 6] and not (run_dir / "final").exists()
    assert read_status(run_dir)["error"] == ("The loss became nan at step 9; checkpoint-9 was not saved; earlier "
                                             "checkpoints are intact. Lower the learning rate (or raise beta), then "
                                             "resume or restart.")


def _recorder(run_dir):
    from pipelines.recorder import RunRecorder
    from pipelines.stop import StopSignal

    return RunRecorder(run_dir, run_dir / ".staging", StopSignal(run_dir), echo=False)


def test_a_staged_checkpoint_with_a_non_finite_weight_is_never_published(workspace):
    """What catches it where no gradient is shown to the recorder (our own PPO loop)."""
    from transformers import TrainerControl, TrainerState

    run_dir = workspace / "runs" / "r"
    staged = run_dir / ".staging" / "checkpoint-4"
    staged.mkdir(parents=True)
    save_file({"a": torch.ones(3), "b": torch.tensor([1.0, float("inf")])}, str(staged / "adapter_model.safetensors"))
    recorder, control = _recorder(run_dir), TrainerControl()
    recorder.on_save(None, TrainerState(global_step=4), control)
    assert checkpoint_steps(run_dir) == [] and not staged.exists()
    assert control.should_training_stop
    assert str(recorder.failure) == ("The weights became NaN or infinite by step 4 (1 of 2 tensors); checkpoint-4 was not "
                                "saved; no checkpoint had been saved yet. Lower the learning rate (or raise beta), "
                                "then resume or restart.")


def test_final_is_never_saved_with_a_non_finite_weight(workspace):
    from pipelines.stages.common import save_final

    class BrokenTrainer:
        def is_world_process_zero(self):
            return True

        def save_model(self, folder):
            os.makedirs(folder)
            save_file({"w": torch.tensor([float("nan")])}, os.path.join(folder, "model.safetensors"))

    run_dir = workspace / "runs" / "r"
    run_dir.mkdir(parents=True)
    with pytest.raises(StudioError, match=r"^The weights at the end of training are NaN or infinite "
                                          r"\(1 of 1 tensors\); final/ was not saved"):
        save_final(BrokenTrainer(), run_dir, run_dir / ".staging")
    assert not (run_dir / "final").exists() and not (run_dir / ".staging" / "final").exists()


# 7. A full disk: a 3 MB tmpfs as the workspace.

@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"could not mount a tmpfs: {mounted.stderr.strip()}")
    started = []   # training processes a test launched: killed before the disk goes
    workspace = mount / "workspace"
    workspace.mkdir()
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    try:
        yield workspace, started
    finally:
        for pid in started:
            if runs.process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder, leave: int = 0) -> None:
    """Take every byte of the disk but `leave`."""
    with open(folder / "filler", "ab") as filler:
        try:
            while (free := shutil.disk_usage(folder).free - leave) > 0:
                filler.write(b"\0" * min(free, 256 * 1024))
                filler.flush()
        except OSError:
            pass


def _complete(run_dir) -> bool:
    """Every published checkpoint loads: adapter, optimizer and trainer state."""
    for step in checkpoint_steps(run_dir):
        folder = run_dir / "checkpoints" / f"checkpoint-{step}"
        load_file(folder / "adapter_model.safetensors")
        torch.load(folder / "optimizer.pt", weights_only=True)
        json.loads((folder / "trainer_state.json").read_text())
    return True


def test_a_save_the_disk_has_no_room_for_is_refused_before_it_is_written(tiny_model, small_disk):
    workspace, _ = small_disk
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, save_steps=1, logging_steps=1, max_steps=40, save_total_limit=0))
    assert train_run(run_dir, echo=False) == "failed"
    status = read_status(run_dir)
    steps = checkpoint_steps(run_dir)
    assert steps and steps == list(range(1, steps[-1] + 1)) and _complete(run_dir)
    assert re.fullmatch(rf"The disk is full \(\d\.\d MB free, about 1\.\d MB needed\); checkpoint-{steps[-1] + 1} was "
                        r"not written; earlier checkpoints are intact\. Free some space, then resume the run\.",
                        status["error"]), status["error"]
    assert not (run_dir / "final").exists() and not _temp_files(run_dir)


def test_a_save_that_fills_the_disk_ends_failed_naming_the_disk_and_leaves_no_half_files(tiny_model, small_disk,
                                                                                         monkeypatch):
    from pipelines.recorder import RunRecorder

    workspace, _ = small_disk
    monkeypatch.setattr(RunRecorder, "no_room", lambda self, what, model=None: None)   # an estimate that was wrong
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, save_steps=1, logging_steps=1, max_steps=40, save_total_limit=0))
    assert train_run(run_dir, echo=False) == "failed"
    status = json.loads((run_dir / "status.json").read_text())   # on disk, whole
    assert status["status"] == "failed" and status["pid"] is None
    assert re.fullmatch(r"The disk is full \(0\.\d MB free\); (checkpoint-\d+ was not written|training stopped at step "
                        r"\d+); earlier checkpoints are intact\. Free some space, then resume the run\.",
                        status["error"]), status["error"]
    assert _complete(run_dir) and checkpoint_steps(run_dir)
    assert not (run_dir / ".staging").exists(), "the half-written checkpoint is gone, its room given back"
    assert not _temp_files(run_dir) and not (run_dir / "final").exists()


def test_a_run_the_disk_has_no_room_for_is_not_started(tiny_model, small_disk):
    workspace, started = small_disk
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    _fill(workspace, leave=256 * 1024)
    assert runs.launch(run_dir) is None
    status = read_status(run_dir)
    assert status["status"] == "failed" and not (run_dir / "train.log").exists()
    assert re.fullmatch(r"The disk is full \(0\.\d MB free, about 1\.0 MB needed\); the run was not started; no "
                        r"checkpoint had been saved yet\. Free some space, then start the run again\.", status["error"])
    with pytest.raises(StudioError, match=r"^The disk is full \(0\.\d MB free\): free some space, then start the run\.$"):
        api.start_run(workspace, tiny_config(tiny_model) + "name: refused\n")
    assert not (workspace / "runs" / "refused").exists(), "refused before a run folder is written"


def test_on_a_full_disk_a_killed_run_reads_interrupted_and_listing_runs_or_starting_the_app_writes_nothing(
        tiny_model, small_disk):
    workspace, started = small_disk
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_steps=100000, save_steps=10))
    started.append(runs.launch(run_dir))
    wait_for(lambda: checkpoint_steps(run_dir), timeout=120, what="a first checkpoint")
    os.kill(read_status(run_dir)["pid"], signal.SIGKILL)
    wait_for(lambda: not runs.process_alive(started[0]), timeout=10, what="the trainer to die")
    _fill(workspace)
    on_disk = (run_dir / "status.json").read_bytes()
    assert json.loads(on_disk)["status"] == "running", "killed: it could not say so"

    listed = subprocess.run([sys.executable, "-m", "pipelines", "runs", "--workspace", str(workspace)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["status"] == "interrupted" and row["checkpoints"] == checkpoint_steps(run_dir)
    assert row["error"].startswith(str(runs.INTERRUPTED)) and "The disk is full (0.0 MB free)" in row["error"]
    assert api.run_status(workspace, run_dir.name)["status"] == "interrupted"

    from studio.app import build_app
    from studio.choices import refresh_checkpoint_choices, refresh_dataset_choices
    from studio.tabs import road, train
    build_app(workspace)   # what the app does as it starts and as a visitor's page loads
    assert train.refresh_runs(workspace, None)[0]["value"] == run_dir.name
    refresh_checkpoint_choices(workspace, None)
    refresh_dataset_choices(workspace, None)
    road.refresh_roads(workspace, None)
    assert (run_dir / "status.json").read_bytes() == on_disk and not _temp_files(workspace)


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        run_files.write_json_atomic(tmp_path / "status.json", {"status": "failed"})
    assert list(tmp_path.iterdir()) == []


# 9. Every record of metrics.jsonl reaches the chart.

PAIRS = [{"prompt": q, "chosen": f"{a} Hope this helps!", "rejected": f"{a.split('.')[0]}, whatever."}
         for q, a in [("Say hi", "Hi there."), ("Add 2 and 3", "It is 5."), ("Capital of France?", "Paris."),
                      ("Name a color", "Blue.")]]


def test_every_line_of_a_reward_runs_metrics_reaches_run_metrics_and_the_chart(tiny_model, workspace):
    from studio.charts import training_curves

    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    config = tiny_config(tiny_model, max_steps=6, save_steps=3).replace("stage: sft", "stage: reward")
    run_dir = api.prepare_run(workspace, config.replace("tiny.jsonl", "pairs.jsonl"))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    metrics = api.run_metrics(workspace, run_dir.name)
    assert metrics == read_jsonl(run_dir / "metrics.jsonl"), "every line, in the order it was logged"
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6], "the training loss of the save steps too"
    assert [m["step"] for m in metrics if "length_correlation" in m] == [3, 6]
    figure = training_curves(metrics)
    assert [len(t.x) for t in figure.data if t.name == "length_correlation"] == [2]
    assert max(max(t.x) for t in figure.data if t.name == "loss") == 6


def test_a_resume_drops_the_abandoned_branch_and_keeps_every_record_of_a_step(workspace):
    run_dir = workspace / "r"
    run_dir.mkdir()
    for record in ({"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0}, {"step": 2, "length_correlation": 0.1},
                   {"step": 3, "loss": 1.0}, {"resumed_from": 2}, {"step": 3, "loss": 0.5}):
        run_files.append_jsonl(run_dir / "metrics.jsonl", record)
    assert read_metrics(run_dir) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0},
                                     {"step": 2, "length_correlation": 0.1}, {"step": 3, "loss": 0.5}]


# 10. A completed run is not trained again; train.log has a ceiling.

def test_the_cli_refuses_to_train_a_completed_run_again_as_the_api_does(tiny_model, workspace, capsys):
    from pipelines.cli import main

    run_dir = api.prepare_run(workspace, "name: done\n" + tiny_config(tiny_model, max_steps=2, save_steps=1))
    assert train_run(run_dir, echo=False) == "completed"
    final = run_dir / "final" / "adapter_model.safetensors"
    before = (final.stat().st_mtime_ns, final.read_bytes(), len(read_jsonl(run_dir / "metrics.jsonl")))
    with pytest.raises(StudioError, match="already completed") as refused:
        api.resume_run(workspace, "done")
    for argv in (["resume", "done"], ["train", str(run_dir)], ["train", str(run_dir), "--resume"]):
        capsys.readouterr()
        assert main([*argv, "--workspace", str(workspace)]) == 2, argv
        assert capsys.readouterr().err.strip() == f"error: {refused.value}", argv
    assert (final.stat().st_mtime_ns, final.read_bytes(), len(read_jsonl(run_dir / "metrics.jsonl"))) == before
    assert read_status(run_dir)["status"] == "completed"


def test_cutting_a_log_keeps_its_head_and_tail_and_counts_what_went(tmp_path):
    log = tmp_path / "train.log"
    lines = [f"line {i:07d} " + "x" * 80 + "\n" for i in range(200_000)]   # 18 MB
    log.write_text("".join(lines[:120_000]))
    cut = run_files.cap_log(log)
    text = log.read_text()
    assert run_files.LOG_HEAD_BYTES + run_files.LOG_TAIL_BYTES < len(text) < run_files.LOG_CAP_BYTES
    assert text.startswith(lines[0]) and text.endswith(lines[119_999])
    assert f"[… {cut} bytes of this log were cut here" in text
    with open(log, "a") as more:
        more.write("".join(lines[120_000:]))
    again = run_files.cap_log(log)
    text = log.read_text()
    assert text.count("bytes of this log were cut here") == 1 and f"[… {cut + again} bytes" in text
    assert text.startswith(lines[0]) and text.endswith(lines[-1]) and len(text) < run_files.LOG_CAP_BYTES
    kept = text.splitlines(keepends=True)
    assert all(line in lines for line in kept if "cut here" not in line), "whole lines only"


def test_a_line_printed_while_the_log_is_cut_is_not_lost(tmp_path, monkeypatch):
    # CI once lost a run's last line, "run … completed": printed between the cut's read of the tail and its write.
    log = tmp_path / "train.log"
    cutting, cut_done = threading.Event(), threading.Event()

    def slow_cut(path):   # a cut as cap_log makes one, its window held open
        text = path.read_bytes()
        cutting.set()
        time.sleep(0.3)
        path.write_bytes(text)
        cut_done.set()

    monkeypatch.setattr(run_files, "cap_log", slow_cut)
    monkeypatch.setattr(run_files, "LOG_CHECK_SECONDS", 0.01)
    with open(log, "a", encoding="utf-8") as stream:
        monkeypatch.setattr(sys, "stdout", stream)
        with run_files.capped_log(log):
            print("first line", flush=True)
            assert cutting.wait(5)
            print("the last line", flush=True)   # waits for the cut, then goes in after it
            assert cut_done.is_set()
        assert sys.stdout is stream, "the stream is given back"
    assert log.read_text().splitlines()[-1] == "the last line"


CHATTY_RULE = ("def reward(prompts, completions):\n"
               "    for i in range(25000):\n"
               "        print(f'scoring, line {i}: ' + 'x' * 80)\n"
               "    return [float(len(c)) for c in completions]\n")


def test_a_reward_file_that_prints_without_end_leaves_a_train_log_under_its_cap(tiny_model, workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(8)])
    (workspace / "rules.py").write_text(CHATTY_RULE, encoding="utf-8")
    run_dir = api.prepare_run(workspace, (
        f"stage: ppo\nmodel: {tiny_model}\ndataset: prompts.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\n"
        "train: {max_steps: 6, batch_size: 4, learning_rate: 1.0e-3, save_steps: 3}\n"
        "ppo: {reward: rules.py, response_length: 8, ppo_epochs: 1, minibatches: 1}\n"))
    pid = runs.launch(run_dir)   # 6 rewards of 2.4 MB each: 14 MB printed
    try:
        status = wait_for(lambda: (s := runs.refresh_status(run_dir))["status"] not in run_files.ACTIVE_STATES and s,
                          timeout=240, what="the run to end")
        # The status is written before the last log line and the last cut: the log is whole once the process is gone.
        wait_for(lambda: not runs.process_alive(pid), timeout=60, what="the training process to exit")
    finally:
        if runs.process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert status["status"] == "completed", status
    log = (run_dir / "train.log").read_text()
    assert len(log.encode()) <= run_files.LOG_CAP_BYTES
    cut = int(re.search(r"\[… (\d+) bytes of this log were cut here", log).group(1))
    assert cut > 4 * run_files.MB
    head = log[:log.index("[… ")]
    assert len(head.encode()) <= run_files.LOG_HEAD_BYTES and "scoring, line 0: " in head, "the head: how it began"
    assert log.rstrip().endswith(f"run {run_dir.name} completed"), "the tail: how it ended"
