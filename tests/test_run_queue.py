"""The run queue: at most max_parallel_runs() train at once, the rest wait in order, can be cancelled, and the queue
survives a restart because it is the runs' own state on disk."""

import os
import time

import pytest

from pipelines import api, run_queue, runs
from pipelines.run_files import read_jsonl, read_status, update_status
from tests.conftest import tiny_config, wait_for


@pytest.fixture
def fake_launch(monkeypatch):
    """runs.launch that starts nothing: the run reads as running in this (live) process, as a trainer reports."""
    launched = []

    def launch(run_dir, resume=False):
        launched.append((run_dir.name, resume))
        update_status(run_dir, status="running", pid=os.getpid(), pid_started=runs.process_start_time(os.getpid()))
        return os.getpid()

    monkeypatch.setattr(runs, "launch", launch)
    return launched


def _start(workspace, tiny_model, name):
    return api.start_run(workspace, tiny_config(tiny_model, max_steps=2) + f"name: {name}\n")


def test_three_runs_started_at_once_train_one_at_a_time_in_order(tiny_model, workspace, fake_launch, monkeypatch):
    monkeypatch.delenv(run_queue.MAX_PARALLEL_ENV, raising=False)   # the default: one at a time
    first, second, third = (_start(workspace, tiny_model, n) for n in ("first", "second", "third"))
    assert fake_launch == [("first", False)]
    statuses = {r: api.run_status(workspace, r) for r in (first, second, third)}
    assert [statuses[r]["status"] for r in (first, second, third)] == ["running", "queued", "queued"]
    assert [statuses[r]["queue_position"] for r in (first, second, third)] == [None, 1, 2]

    update_status(workspace / "runs" / first, status="completed", pid=None)
    api.list_runs(workspace)   # anyone looking frees the place
    assert fake_launch == [("first", False), ("second", False)]
    assert api.run_status(workspace, third)["queue_position"] == 1


def test_a_queued_run_can_be_cancelled_and_never_starts(tiny_model, workspace, fake_launch):
    _start(workspace, tiny_model, "busy")
    waiting = _start(workspace, tiny_model, "waiting")
    reply = api.stop_run(workspace, waiting)
    assert reply == {"run_id": waiting, "status": "stopped", "message": f"Run {waiting} was cancelled before it started."}
    update_status(workspace / "runs" / "busy", status="completed", pid=None)
    api.list_runs(workspace)
    assert fake_launch == [("busy", False)], "a cancelled run keeps its place nowhere"
    assert api.stop_run(workspace, "busy")["message"] == "Run busy is completed, not training: there is nothing to stop."


def test_the_queue_survives_a_restart_and_a_dead_trainer_frees_its_place(tiny_model, workspace, fake_launch):
    _start(workspace, tiny_model, "dies")
    _start(workspace, tiny_model, "next")
    # The app stops; the trainer of "dies" is killed meanwhile (a pid that no longer runs).
    update_status(workspace / "runs" / "dies", pid=2 ** 22 + 12345, pid_started=1.0)
    assert run_queue.dispatch(workspace) == ["next"], "what the app does as it starts"
    assert read_status(workspace / "runs" / "dies")["status"] == "interrupted"


def test_max_parallel_runs_lets_that_many_train_side_by_side(tiny_model, workspace, fake_launch, monkeypatch):
    monkeypatch.setenv(run_queue.MAX_PARALLEL_ENV, "2")
    for name in ("a", "b", "c"):
        _start(workspace, tiny_model, name)
    assert [name for name, _ in fake_launch] == ["a", "b"]
    monkeypatch.setenv(run_queue.MAX_PARALLEL_ENV, "zero")
    assert run_queue.max_parallel_runs() == run_queue.DEFAULT_MAX_PARALLEL


def test_a_resume_waits_in_the_queue_too(tiny_model, workspace, fake_launch):
    stopped = _start(workspace, tiny_model, "stopped")
    run_dir = workspace / "runs" / stopped
    (run_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    update_status(run_dir, status="stopped", pid=None)
    _start(workspace, tiny_model, "busy")
    assert api.resume_run(workspace, stopped) == {"run_id": stopped, "status": "queued", "message":
                                                  f"Run {stopped} resumes from checkpoint-1 when its turn in the queue comes."}
    update_status(workspace / "runs" / "busy", status="completed", pid=None)
    api.list_runs(workspace)
    assert fake_launch[-1] == ("stopped", True), "launched with --resume when its turn came"


def test_resume_is_refused_in_one_wording_wherever_it_is_asked(tiny_model, workspace, fake_launch):
    from pipelines.errors import StudioError
    from pipelines.messages import speaking

    run_id = _start(workspace, tiny_model, "r")
    run_dir = workspace / "runs" / run_id
    with pytest.raises(StudioError, match="is still running; stop it before resuming") as active:
        api.resume_run(workspace, run_id)
    assert active.value.code == "runs.still_active"
    with speaking("ko"):
        assert "학습 중 상태입니다" in active.value.text()
    update_status(run_dir, status="failed", pid=None)
    with pytest.raises(StudioError, match="no complete checkpoint to resume from") as nothing:
        api.resume_run(workspace, run_id)
    assert runs.why_not_resumable(run_dir, read_status(run_dir)) == nothing.value.catalog_message
    update_status(run_dir, status="completed", pid=None)
    with pytest.raises(StudioError, match="already completed"):
        run_queue.resume(run_dir)


def test_real_runs_started_together_never_train_at_the_same_time(tiny_model, workspace, monkeypatch):
    monkeypatch.delenv(run_queue.MAX_PARALLEL_ENV, raising=False)
    ids = [_start(workspace, tiny_model, n) for n in ("one", "two", "three")]
    dirs = [workspace / "runs" / r for r in ids]
    seen_together = 0
    while True:
        statuses = [api.run_status(workspace, r)["status"] for r in ids]
        seen_together = max(seen_together, sum(s in ("running", "stopping") for s in statuses))
        if all(s in ("completed", "failed", "interrupted") for s in statuses):
            break
        time.sleep(0.2)
    assert statuses == ["completed"] * 3, [read_status(d).get("error") for d in dirs]
    assert seen_together == 1
    started = [read_status(d)["started_at"] for d in dirs]
    finished = [max(r["time"] for r in read_jsonl(d / "metrics.jsonl") if "time" in r) for d in dirs]
    assert started == sorted(started) and started[1] >= finished[0] and started[2] >= finished[1]


def test_the_run_page_says_where_a_queued_run_stands():
    from studio.tabs.train import status_markdown

    assert "#2" in status_markdown({"status": "queued", "queue_position": 2, "step": 0, "max_steps": 12})


def _start_on(workspace, tiny_model, name, gpus):
    import yaml

    config = yaml.safe_load(tiny_config(tiny_model, max_steps=2))
    config.update(name=name, train={**config["train"], "gpus": gpus})
    return api.start_run(workspace, yaml.safe_dump(config))


def test_runs_given_different_gpus_train_side_by_side(tiny_model, workspace, fake_launch, monkeypatch):
    monkeypatch.delenv(run_queue.MAX_PARALLEL_ENV, raising=False)   # one at a time, unless on GPUs of their own
    _start_on(workspace, tiny_model, "on-0", "0")
    _start_on(workspace, tiny_model, "also-on-0", "0")
    _start_on(workspace, tiny_model, "on-1-and-2", "1,2")
    _start_on(workspace, tiny_model, "anywhere", "")
    assert [name for name, _ in fake_launch] == ["on-0", "on-1-and-2"], "GPU 0 is taken; an unpinned run waits"


def test_a_run_on_several_gpus_is_one_process_per_gpu_through_accelerate(monkeypatch, tmp_path):
    seen = {}

    class FakePopen:
        pid = 123456

        def __init__(self, command, env=None, **kwargs):
            seen["command"], seen["gpus"] = command, env.get("CUDA_VISIBLE_DEVICES")

        def wait(self):
            return 0

    monkeypatch.setattr(runs.subprocess, "Popen", FakePopen)
    runs.spawn(["train", "runs/x"], tmp_path / "train.log", ["1", "3"])
    assert seen["command"][1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert seen["command"][-4:] == ["-m", "pipelines", "train", "runs/x"] and seen["gpus"] == "1,3"


@pytest.mark.parametrize("gpus", ["0,0", "a", "0;rm -rf", "1,", "123"])
def test_bad_gpu_lists_are_refused_before_a_run_exists(tiny_model, workspace, gpus):
    from pipelines.errors import StudioError

    with pytest.raises(StudioError, match="is not a list of GPU numbers"):
        _start_on(workspace, tiny_model, "bad", gpus)
    assert not any((workspace / "runs").glob("bad*"))



def test_a_run_created_but_never_queued_holds_no_place_and_one_that_cannot_start_does_not_stop_the_queue(
        tiny_model, workspace, fake_launch, monkeypatch):
    api.prepare_run(workspace, tiny_config(tiny_model) + "name: created-only\n")   # as `python -m pipelines create`
    broken = _start(workspace, tiny_model, "broken")
    assert fake_launch == [("broken", False)], "the created-only run did not count as active"
    update_status(workspace / "runs" / broken, status="completed", pid=None)

    def refuses(run_dir, resume=False):
        raise OSError("no more processes")

    monkeypatch.setattr(runs, "launch", refuses)
    refused = _start(workspace, tiny_model, "refused")
    assert read_status(workspace / "runs" / refused)["status"] == "failed"
    assert api.list_runs(workspace), "listing still works"
