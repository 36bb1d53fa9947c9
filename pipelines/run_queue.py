"""The run queue: at most max_parallel_runs() runs train at a time on the server; the others wait, taking turns
between users.

The queue is nothing but the run directories' own state on disk. A run waits while its status is `queued` with no
process (`pid` null) and a `queued_at` time. Whoever may free or take a place calls `dispatch`: a start, a resume,
a training process as it ends, the app as it starts and whenever it reads runs. The queue spans the whole server:
the root workspace and every user's (pipelines/users.py, all_workspaces), under one lock at the root. Dispatch
launches waiting runs in turn order while fewer than max_parallel_runs() are active on the server, and besides
those, a run given GPUs (train.gpus) that no active run uses. So the queue survives an app restart, and a run killed
at any instant frees its place the next time anyone looks. A run started in a terminal (`python -m pipelines train
config.yaml`) trains in the foreground without waiting, and counts as active while it does.

The turn order is round-robin between users (a workspace is a user): the next place goes to the waiting user served
least recently (whose latest run was launched longest ago, or never), to their run queued first; that user then goes
to the back of the round. So nobody's second waiting run goes before everyone else's first, however early it was
queued. With one workspace (the local default) this is simply first queued, first started. `queue_position` counts
in the same order: it is the place the user is shown.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from pipelines import hosting, run_files, runs
from pipelines.errors import StudioError
from pipelines.paths import file_lock
from pipelines.users import all_workspaces, server_root

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
        hosting.check_active_runs(run_dir.parent.parent)   # hosted mode: a resume takes a place as a start does
        return start(run_dir, resume=True)


def stop(run_dir: Path) -> dict:
    """Cancel a waiting run (it never started: `stopped`, nothing trained), or ask an active one to save and stop."""
    with _queue_lock(server_root(run_dir.parent.parent)):
        status = runs.refresh_status(run_dir)
        if is_waiting(status):
            return run_files.update_status(run_dir, status="stopped", queued_at=None, finished_at=time.time())
    return runs.request_stop(run_dir)


def dispatch(workspace: Path) -> list[str]:
    """Launch waiting runs of the whole server, in turn order, while there is room; return the ids launched."""
    launched = []
    root = server_root(Path(workspace))
    with _queue_lock(root):
        statuses = [(run_dir, runs.refresh_status(run_dir)) for run_dir in _server_run_dirs(root)]
        # Active: handed a process. A run created but never queued (`create` for accelerate) holds no place.
        active = [_gpus(d) for d, s in statuses if is_active(s)]
        for run_dir, status in turn_order(statuses):
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


def is_active(status: dict) -> bool:
    """Handed a process that has not ended."""
    return status.get("status") in run_files.ACTIVE_STATES and bool(status.get("pid"))


def holds_place(status: dict) -> bool:
    """Waiting or active: what a user's runs queued or training count (pipelines/hosting.py)."""
    return is_waiting(status) or is_active(status)


def turn_order(statuses: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """The waiting runs among (run_dir, status) pairs of the server, in the order they take places: each turn to the
    user served least recently (ties: whose next run was queued first), their run queued first."""
    waiting: dict[Path, collections.deque] = {}
    for run_dir, status in sorted(((d, s) for d, s in statuses if is_waiting(s)), key=lambda item: item[1]["queued_at"]):
        waiting.setdefault(_owner(run_dir), collections.deque()).append((run_dir, status))
    served: dict[Path, float] = {}   # when each user's latest run was handed a process
    for run_dir, status in statuses:
        launched = max(status.get("launched_at") or 0, status.get("started_at") or 0)
        served[_owner(run_dir)] = max(served.get(_owner(run_dir), 0), launched)
    now = max([time.time(), *served.values()])
    order = []
    while waiting:
        owner = min(waiting, key=lambda o: (served.get(o, 0), waiting[o][0][1]["queued_at"]))
        order.append(waiting[owner].popleft())
        if not waiting[owner]:
            del waiting[owner]
        now += 1
        served[owner] = now   # served this turn: to the back of the round
    return order


def _owner(run_dir: Path) -> Path:
    return run_dir.parent.parent   # the workspace the run lies in: one user's


def _server_run_dirs(root: Path) -> list[Path]:
    found = []
    for workspace in all_workspaces(root):
        if workspace != root and not (workspace / "runs").is_dir():
            continue   # a user with no runs: nothing to create there
        try:
            found += runs.list_run_dirs(workspace)
        except FileNotFoundError:   # a sandbox expiring meanwhile (pipelines/users.py)
            continue
    return found


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
    """1 for the next run of the server to start; None for a run that is not waiting."""
    if not is_waiting(status):
        return None
    root = server_root(run_dir.parent.parent)
    here = run_dir.resolve()
    statuses = [(d, status if d.resolve() == here else run_files.read_status(d)) for d in _server_run_dirs(root)]
    order = [d.resolve() for d, _ in turn_order(statuses)]
    return order.index(here) + 1 if here in order else len(order) + 1


def _queue_lock(root: Path):
    """One lock for the whole server's queue, at its root workspace."""
    return file_lock(runs.runs_root(root) / ".queue.lock")
