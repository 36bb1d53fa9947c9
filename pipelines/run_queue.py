"""The run queue: at most max_parallel_runs() runs train at a time; the others wait, first started first.

The queue is nothing but the run directories' own state on disk. A run waits while its status is `queued` with no
process (`pid` null) and a `queued_at` time, which gives its place. Whoever may free or take a place calls
`dispatch`: a start, a resume, a training process as it ends, the app as it starts and whenever it reads runs.
Under one lock per workspace, dispatch launches the oldest waiting runs while fewer than max_parallel_runs() are
active, and besides those, a run given GPUs (train.gpus) that no active run uses. So the queue survives an app
restart, and a run killed at any instant frees its place the next time anyone looks. A run started in a terminal (`python -m pipelines train config.yaml`) trains in the foreground
without waiting, and counts as active while it does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines import run_files, runs
from pipelines.errors import StudioError
from pipelines.paths import file_lock

MAX_PARALLEL_ENV = "ALIGNMENT_STUDIO_MAX_PARALLEL_RUNS"   # set by launch.py --max-parallel-runs; children inherit it
# One: a GPU shared by two trainings runs out of memory or runs both slower, and on a 2-core CPU two runs take
# longer together than one after the other.
DEFAULT_MAX_PARALLEL = 1


def max_parallel_runs() -> int:
    value = os.environ.get(MAX_PARALLEL_ENV, "")
    return int(value) if value.isdigit() and int(value) >= 1 else DEFAULT_MAX_PARALLEL


def is_waiting(status: dict) -> bool:
    """Asked to start, and not yet handed a process."""
    return status.get("status") == "queued" and not status.get("pid") and bool(status.get("queued_at"))


def start(run_dir: Path, resume: bool = False) -> dict:
    """Put a prepared run in the queue (resume: from its last checkpoint) and start what may start now."""
    # eta_s: a resumed run's old ETA is not its new one; it comes back with the first step logged.
    run_files.update_status(run_dir, status="queued", pid=None, error=None, error_message=None, eta_s=None,
                            queued_at=time.time(), resume=resume)
    dispatch(run_dir.parent.parent)
    return runs.refresh_status(run_dir)


def resume(run_dir: Path) -> dict:
    # Under the lock two Resume clicks cannot both pass the check: the first leaves the run `queued`.
    with file_lock(run_dir / ".launch.lock"):
        runs.check_resumable(run_dir)
        return start(run_dir, resume=True)


def stop(run_dir: Path) -> dict:
    """Cancel a waiting run (it never started: `stopped`, nothing trained), or ask an active one to save and stop."""
    with _queue_lock(run_dir.parent.parent):
        status = runs.refresh_status(run_dir)
        if is_waiting(status):
            return run_files.update_status(run_dir, status="stopped", queued_at=None, finished_at=time.time())
    return runs.request_stop(run_dir)


def dispatch(workspace: Path) -> list[str]:
    """Launch the oldest waiting runs while there is room; return the ids launched."""
    launched = []
    with _queue_lock(workspace):
        statuses = [(run_dir, runs.refresh_status(run_dir)) for run_dir in runs.list_run_dirs(workspace)]
        # Active: handed a process. A run created but never queued (`create` for accelerate) holds no place.
        active = [_gpus(d) for d, s in statuses if s.get("status") in run_files.ACTIVE_STATES and s.get("pid")]
        for run_dir, status in sorted(((d, s) for d, s in statuses if is_waiting(s)), key=lambda item: item[1]["queued_at"]):
            if not _fits(_gpus(run_dir), active):
                continue   # a later run on other GPUs may still fit
            try:
                pid = runs.launch(run_dir, resume=bool(status.get("resume")))
            except (StudioError, OSError) as exc:   # one run that cannot start must not stop the queue
                run_files.update_status(run_dir, status="failed", pid=None, **run_files.error_fields(exc))
                continue
            if pid is None:
                continue   # refused (no room on the disk): it failed, saying why, and frees its place
            launched.append(run_dir.name)
            active.append(_gpus(run_dir))
    return launched


def _fits(gpus: set[str], active: list[set[str]]) -> bool:
    """Room under max_parallel_runs(), or GPUs of its own: it names GPUs, and so does every active run, none of
    them the same (a run that names none may use every GPU)."""
    if len(active) < max_parallel_runs():
        return True
    return bool(gpus) and all(active) and not any(gpus & other for other in active)


def _gpus(run_dir: Path) -> set[str]:
    try:
        return {g for g in runs.load_config(run_dir).train.gpus.split(",") if g}
    except StudioError:   # a config that no longer parses: it will fail on its own, and claims every GPU meanwhile
        return set()


def queue_position(run_dir: Path, status: dict) -> int | None:
    """1 for the next run to start; None for a run that is not waiting."""
    if not is_waiting(status):
        return None
    ahead = [s for d in runs.list_run_dirs(run_dir.parent.parent) if d != run_dir
             and is_waiting(s := run_files.read_status(d)) and s["queued_at"] < status["queued_at"]]
    return len(ahead) + 1


def _queue_lock(workspace: Path):
    return file_lock(runs.runs_root(workspace) / ".queue.lock")
