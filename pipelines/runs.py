"""Runs as processes and files: create a run directory, launch its training process, watch, stop, resume.

The UI process never trains. It starts `python -m pipelines train <run_dir>` with an argument list
(never a shell string), in its own session, with stdout/stderr going to train.log, and learns
everything else by reading the run directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from pipelines import run_files
from pipelines.config import RunConfig, parse_config_text
from pipelines.errors import StudioError, quote
from pipelines.messages import Message, has_message
from pipelines.paths import check_name

REPO_ROOT = Path(__file__).resolve().parent.parent


def runs_root(workspace: Path) -> Path:
    root = Path(workspace) / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_dir_of(workspace: Path, run_id: str) -> Path:
    check_name(run_id, "run id")
    run_dir = runs_root(workspace) / run_id
    if not (run_dir / "config.yaml").is_file():
        raise StudioError("runs.not_found", run_id=quote(run_id))
    return run_dir


def create_run(workspace: Path, config: RunConfig, extra_status: dict | None = None) -> Path:
    """Make the run directory with config.yaml and a `queued` status; return it. Warnings in `extra_status` (Messages,
    their dicts, or sentences) are kept as English sentences, with their codes and parameters beside them."""
    run_dir = new_folder(runs_root(workspace), config.name or f"{config.stage}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    run_id = run_dir.name
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    extra = dict(extra_status or {})
    if "warnings" in extra:
        extra.update(warning_fields(extra["warnings"]))
    run_files.write_json_atomic(run_dir / "status.json", {
        "run_id": run_id, "status": "queued", "pid": None, "error": None, "error_message": None, "step": 0,
        "max_steps": config.train.max_steps, "created_at": time.time(), "updated_at": time.time(), **extra,
    })
    return run_dir


def warning_fields(warnings: list) -> dict:
    """status.json's `warnings` (English sentences) and `warning_messages` (code and parameters, or None for a
    sentence that is not from the catalog), from Messages, their dicts ({"code", "params"}) or plain sentences."""
    messages = [Message.from_dict(w) if isinstance(w, dict) else w for w in warnings or []]
    return {"warnings": [str(m) for m in messages],
            "warning_messages": [m.to_dict() if isinstance(m, Message) else None for m in messages]}


def _stored_message(stored, text: str | None):
    """A Message kept in status.json, or the sentence beside it when there is none (or it no longer reads)."""
    if isinstance(stored, dict) and has_message(stored.get("code")):
        try:
            return Message.from_dict(stored)
        except (KeyError, TypeError):
            pass
    return text


def error_of(status: dict) -> Message | str | None:
    """A status's error as a Message when status.json kept its code (raise StudioError(error_of(status))), else
    its sentence."""
    return _stored_message(status.get("error_message"), status.get("error"))


def status_texts(status: dict) -> dict:
    """A run's error and warnings in the visitor's language: {"error": ..., "warnings": [...]} (the one function
    pipelines/api.py's run_status and list_runs read them through)."""
    error = error_of(status)
    warnings = status.get("warnings") or []
    stored = status.get("warning_messages") or []
    stored = stored + [None] * (len(warnings) - len(stored))
    return {"error": error.text() if isinstance(error, Message) else error,
            "warnings": [m.text() if isinstance(m := _stored_message(kept, sentence), Message) else m
                         for sentence, kept in zip(warnings, stored)]}


def new_folder(root: Path, base: str) -> Path:
    """root/base, or root/base-2, -3, … if taken: mkdir is atomic, so two starts at once get two folders."""
    name, n = base, 1
    while True:
        try:
            (root / name).mkdir()
            return root / name
        except FileExistsError:
            n += 1
            name = f"{base}-{n}"


def load_config(run_dir: Path) -> RunConfig:
    return parse_config_text((run_dir / "config.yaml").read_text(encoding="utf-8"))


def launch(run_dir: Path, resume: bool = False) -> int | None:
    """Start the training process for `run_dir`; return its pid. On a disk without room for the run nothing starts:
    the run is failed with the sentence that says so, and None is returned."""
    (run_dir / run_files.STOP_REQUEST_FILE).unlink(missing_ok=True)
    if no_room := no_room_to_train(run_dir):
        with contextlib.suppress(OSError):   # if even that cannot be written, the run waits and is refused again
            run_files.update_status(run_dir, status="failed", pid=None, **run_files.error_fields(no_room))
        return None
    launched_at = time.time()
    gpus = [g for g in load_config(run_dir).train.gpus.split(",") if g]
    process = spawn(["train", str(run_dir)] + (["--resume"] if resume else []), run_dir / "train.log", gpus)
    # Unless the child already reported itself running (it writes started_at), it is queued.
    run_files.update_status(run_dir, only_if=lambda now: (now.get("started_at") or 0) < launched_at,
                            status="queued", pid=process.pid, pid_started=process_start_time(process.pid),
                            error=None, error_message=None, launched_at=launched_at)
    return process.pid


def no_room_to_train(run_dir: Path) -> Message | None:
    """Why the disk cannot take this run, or None: a run needs room for at least one checkpoint the size of its last
    one (its first one's size is checked before it is saved, in pipelines/recorder.py) and the files around it."""
    last = run_files.last_checkpoint(run_dir)
    needed = (run_files.folder_bytes(last) if last else 0) + run_files.SPARE_BYTES
    free = run_files.free_bytes(run_dir)
    if free >= needed:
        return None
    return run_files.disk_full_sentence(run_dir, free, Message("runs.not_started"), needed)


def spawn(arguments: list[str], log_path: Path, gpus: list[str] | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m pipelines <arguments>` in its own session, output appended to log_path, reaped when it ends.
    An argument list, never a shell string. Given GPUs, it sees only those; given several, it runs as one process
    per GPU under `accelerate launch`, as `accelerate launch -m pipelines train <run_dir>` would by hand. `env`: more
    variables for the child alone (a job's secrets: its environment is the one place they are never written)."""
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "pipelines", *arguments]
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        if len(gpus) > 1:
            command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(len(gpus)),
                       "-m", "pipelines", *arguments]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env, start_new_session=True)
    # Reap the child when it ends so it never lingers as a zombie that looks alive.
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{process.pid}").start()
    return process


def process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_alive(pid: int | None, started: float | None = None) -> bool:
    """True if `pid` is live (not a zombie) and, when `started` is known, is the very process we launched:
    a pid reused by another process has another start time."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 0.5
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


INTERRUPTED = Message("runs.interrupted")


def refresh_status(run_dir: Path, interrupted: Message | str = INTERRUPTED) -> dict:
    """The status of a run (or of a road: any folder whose status.json names the process that works on it), with
    one whose process died marked `interrupted` (never 'running' forever)."""
    status = run_files.read_status(run_dir)
    if status.get("status") in run_files.ACTIVE_STATES and status.get("pid") and \
            not process_alive(status.get("pid"), status.get("pid_started")):
        pid = status.get("pid")
        try:
            # Only if nothing changed meanwhile: the trainer may have just written its final status.
            status = run_files.update_status(
                run_dir, only_if=lambda now: now.get("status") in run_files.ACTIVE_STATES and now.get("pid") == pid,
                status="interrupted", **_kept_or(status, interrupted))
        except OSError as exc:   # a full disk: the true state all the same, unwritten (a later look writes it)
            status = {**status, "status": "interrupted", **_kept_or(status, _unwritten(exc, run_dir, interrupted))}
    return status


def _kept_or(status: dict, error: Message | str) -> dict:
    """The error the process itself recorded, or else `error`: as status.json's error fields."""
    if status.get("error"):
        return {"error": status["error"], "error_message": status.get("error_message")}
    return run_files.error_fields(error)


def _unwritten(error: OSError, run_dir: Path, interrupted: Message | str) -> Message | str:
    """Why a process that ended may not have said how: its last words could not be written either."""
    if not run_files.is_disk_full(error, run_dir):
        return interrupted
    if not isinstance(interrupted, Message):   # a sentence from outside the catalog: told in English as it was
        interrupted = str(interrupted)
    with contextlib.suppress(OSError):
        free = run_files.megabytes(run_files.free_bytes(run_dir))
        return Message("runs.unrecorded_disk_full", interrupted=interrupted, free=free)
    return Message("runs.unrecorded_disk_full_unknown", interrupted=interrupted)


def request_stop(run_dir: Path) -> dict:
    """Ask the run to save a checkpoint and stop: a stop file every rank reads, plus SIGTERM to wake it."""
    status = refresh_status(run_dir)
    if status.get("status") not in run_files.ACTIVE_STATES:
        return status
    (run_dir / run_files.STOP_REQUEST_FILE).touch()
    was_running = status.get("status") == "running"
    status = run_files.update_status(run_dir, only_if=lambda now: now.get("status") in run_files.ACTIVE_STATES,
                                     status="stopping")
    pid = status.get("pid")
    # A process still starting up has no signal handler yet: SIGTERM would kill it before it can save.
    # It reads the stop file at its first step instead.
    if was_running and pid and process_alive(pid, status.get("pid_started")):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # ended between the check and the signal: refresh_status will say how
    return status


def check_not_completed(run_dir: Path, status: dict) -> None:
    """A completed run is never trained again, by a resume or a `train <run_dir>`: that would overwrite its final/."""
    if status.get("status") == "completed":
        raise StudioError("runs.already_completed", run_id=quote(run_dir.name))


def why_not_resumable(run_dir: Path, status: dict) -> Message | None:
    """Why a run in `status` may not be resumed now, or None: the one check (and wording) of the API, the CLI, the
    road and the queue; the training process asks its last part (`nothing_to_resume`) itself."""
    if status.get("status") in run_files.ACTIVE_STATES:
        state = f"status.{status['status']}"
        return Message("runs.still_active", run_id=quote(run_dir.name), status=Message(state))
    if status.get("status") == "completed":
        return Message("runs.already_completed", run_id=quote(run_dir.name))
    return nothing_to_resume(run_dir)


def nothing_to_resume(run_dir: Path) -> Message | None:
    """A run resumes from a complete checkpoint (or, best-of-N, from the answers it kept)."""
    return None if run_files.can_resume(run_dir) else Message("runs.nothing_to_resume", run_id=quote(run_dir.name))


def check_resumable(run_dir: Path) -> None:
    """Refuse, in one sentence, to resume a run that may not be resumed now (why_not_resumable)."""
    if why := why_not_resumable(run_dir, refresh_status(run_dir)):
        raise StudioError(why)


def list_run_dirs(workspace: Path) -> list[Path]:
    dirs = [p for p in runs_root(workspace).iterdir() if (p / "config.yaml").is_file()]
    return sorted(dirs, key=lambda p: run_files.read_status(p).get("created_at", 0), reverse=True)


def summary(run_dir: Path) -> dict:
    """One row of the runs list."""
    status = refresh_status(run_dir)
    try:
        config = load_config(run_dir)
        stage, model, dataset = config.stage, config.model, config.dataset
    except StudioError:
        stage = model = dataset = "?"
    parent = model.split("/")[0] if "/checkpoint-" in model or model.endswith("/final") else ""
    parent = parent if parent and (run_dir.parent / parent / "config.yaml").is_file() else ""   # not a Hub org
    return {
        "run_id": run_dir.name, "status": status.get("status"), "stage": stage, "model": model, "dataset": dataset,
        "parent": parent,   # the run whose checkpoint this one started from: the lineage SFT → DPO → …
        "step": status.get("step", 0), "max_steps": status.get("max_steps", 0), "created_at": status.get("created_at"),
        "checkpoints": run_files.checkpoint_steps(run_dir), "has_final": (run_dir / "final").is_dir(),
        "error": status_texts(status)["error"],
        # the run's mean useful tokens per second so far (pipelines/throughput.py keeps it in status.json)
        "tokens_per_second": (status.get("throughput") or {}).get("tokens_per_second"),
    }
