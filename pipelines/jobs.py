"""Long jobs as processes and files: checkpoints evaluated on a prompt set, a dataset scored by a reward model, a
reward model measured on preference pairs, a model exported (pipelines/export.py), an export pushed to the Hub
(pipelines/hub_push.py, whose token reaches its process through the environment alone: JobKind.secrets).

    workspace/jobs/<job_id>/
      job.json        what was asked: {"kind": ..., "spec": {...}, "workspace": ...}
      status.json     queued | running | completed | failed | cancelled | interrupted, pid, done, total, eta_s, error
      results.jsonl   one JSON object per result row, appended and flushed as rows come
      results.csv     the same rows as CSV, appended alike
      summary.json    what the whole job found (means, accuracy, warnings), written once at the end
      job.log         the process's stdout and stderr

A job keeps a run's guarantees (pipelines/runs.py, run_files.py). It is a process of its own,
`python -m pipelines job <job_dir>`, started by runs.spawn: an argument list, never a shell string, in its own
session and so its own process group, which Cancel stops whole. Everything the UI knows of a job it reads from the
folder: status.json is replaced atomically, result lines are appended whole, and a job whose process died reads
`interrupted` on the next look. The server only checks what was asked (a sentence if it is wrong) and starts it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from pipelines import run_files, runs
from pipelines.errors import StudioError, quote
from pipelines.messages import Message
from pipelines.paths import check_name

ACTIVE = ("queued", "running")
STATES = (*ACTIVE, "completed", "failed", "cancelled", "interrupted")
JOB_FILE, RESULTS, RESULTS_CSV, SUMMARY, LOG = "job.json", "results.jsonl", "results.csv", "summary.json", "job.log"
KEPT_JOBS = 100              # ended jobs kept (the newest); every blocking evaluate or score_dataset call makes one
CANCEL_GRACE_SECONDS = 5.0   # a job stopped by SIGTERM finishes its batch's write; then its group is killed
LAUNCH_SECONDS = 60.0        # a job queued this long without a process was never launched (the server died first)


@dataclass(frozen=True)
class JobKind:
    """What a kind of job does. `prepare` runs in the server before anything starts: it checks the spec (one
    sentence if it is wrong) and returns it normalised, with the warnings worth showing from the start. `run` runs
    in the job's process: it reports rows through its Progress and returns the job's summary."""
    prepare: Callable[[Path, dict], tuple[dict, list[Message]]]
    run: Callable[[Path, dict, "Progress"], dict]
    columns: tuple[str, ...]   # the CSV's columns, in order
    # For a job that needs secrets (a Hub token): given the normalised spec and the secrets the caller offered, the
    # environment variables its process gets (checked: one sentence if one is missing or refused). Secrets live in
    # that environment alone, never in job.json, status.json, results or the log.
    secrets: Callable[[Path, dict, dict], dict[str, str]] | None = None


def kinds() -> dict[str, JobKind]:
    from pipelines import judge_label   # the AI judge's jobs (pipelines/judge.py)
    from pipelines import eval_loss, export, hub_push, scoring

    return {
        "evaluate": JobKind(prepare_evaluation, run_evaluation, ("prompt", "checkpoint", "score", "answer")),
        "score_dataset": JobKind(scoring.prepare_score_dataset, scoring.run_score_dataset,
                                 ("reward", "side", "prompt", "answer")),
        "evaluate_reward": JobKind(scoring.prepare_evaluate_pairs, scoring.run_evaluate_pairs,
                                   ("margin", "chosen_reward", "rejected_reward", "prompt", "chosen", "rejected")),
        "evaluate_loss": JobKind(eval_loss.prepare_evaluate_loss, eval_loss.run_evaluate_loss, eval_loss.COLUMNS),
        "export": JobKind(export.prepare_export, export.run_export, export.COLUMNS),
        "push_to_hub": JobKind(hub_push.prepare_push, hub_push.run_push, hub_push.COLUMNS, hub_push.job_secrets),
        "label_with_judge": JobKind(judge_label.prepare_label, judge_label.run_label, judge_label.LABEL_COLUMNS),
        "judge_agreement": JobKind(judge_label.prepare_agreement, judge_label.run_agreement,
                                   judge_label.AGREEMENT_COLUMNS),
    }


# ---- the server's side: start, look, cancel

def jobs_root(workspace: Path) -> Path:
    root = Path(workspace) / "jobs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def job_dir_of(workspace: Path, job_id: str) -> Path:
    check_name(job_id, "job id")
    job_dir = jobs_root(workspace) / job_id
    if not (job_dir / JOB_FILE).is_file():
        raise StudioError("jobs.not_found", job_id=quote(job_id))
    return job_dir


def start(workspace: Path, kind: str, spec: dict, secrets: dict[str, str] | None = None) -> Path:
    """Check `spec` for a job of `kind`, write its folder and start its process; return the folder. `secrets` (a
    token) reach the process through its environment only, for a kind that takes them."""
    workspace = Path(workspace).resolve()
    known = kinds()
    if not isinstance(kind, str) or kind not in known:
        raise StudioError("jobs.unknown_kind", kind=quote(kind), kinds=", ".join(known))
    if not isinstance(spec, dict):
        raise StudioError("jobs.spec_not_mapping", kind=kind)
    spec, warnings = known[kind].prepare(workspace, spec)
    if secrets and not known[kind].secrets:
        raise ValueError(f"a {kind} job takes no secrets")   # a caller's bug: never let them near a folder
    from pipelines.hosting import check_job
    check_job(workspace)   # hosted mode: one job of a user's at a time, within their quota
    env = known[kind].secrets(workspace, spec, dict(secrets or {})) if known[kind].secrets else {}
    free = run_files.free_bytes(jobs_root(workspace))
    if free < run_files.SPARE_BYTES:   # not even its status would fit: refuse before writing a folder
        raise StudioError("jobs.disk_full", free=run_files.megabytes(free))
    prune(workspace)
    job_dir = runs.new_folder(jobs_root(workspace), f"{kind.replace('_', '-')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    run_files.write_json_atomic(job_dir / JOB_FILE, {"kind": kind, "spec": spec, "workspace": str(workspace)})
    run_files.write_json_atomic(job_dir / "status.json", {
        "job_id": job_dir.name, "kind": kind, "status": "queued", "pid": None, "done": 0, "total": None, "eta_s": None,
        "error": None, "error_message": None, "warnings": [w.to_dict() for w in warnings],
        "created_at": time.time(), "updated_at": time.time()})
    launch(job_dir, env)
    return job_dir


def prune(workspace: Path, keep: int = KEPT_JOBS) -> list[str]:
    """Delete the oldest ended jobs beyond the newest `keep`; return their ids. Active jobs are never touched."""
    ended = [d for d in list_job_dirs(workspace) if run_files.read_status(d).get("status") not in ACTIVE]
    deleted = []
    for job_dir in ended[keep:]:
        doomed = job_dir.with_name(f".deleting-{job_dir.name}")   # out of the listing first, as checkpoints are
        os.replace(job_dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        deleted.append(job_dir.name)
    return deleted


def launch(job_dir: Path, env: dict[str, str] | None = None) -> int:
    try:
        process = runs.spawn(["job", str(job_dir)], job_dir / LOG, env=env)
    except OSError as exc:   # no python, no room for the log: the job fails saying so, and nothing runs
        error = StudioError("jobs.not_started", problem=exc.strerror or type(exc).__name__)   # the OS's words
        _finish(job_dir, "failed", error, only_if_status="queued")
        raise error from None
    # Unless the job already reported itself running (it writes its own pid), it is queued with this one.
    run_files.update_status(job_dir, only_if=lambda now: now.get("status") == "queued", pid=process.pid,
                            pid_started=runs.process_start_time(process.pid))
    return process.pid


def refresh_status(job_dir: Path) -> dict:
    """The job's status as it truly is: one whose process died (killed, crashed, out of memory) is `interrupted`."""
    status = runs.refresh_status(job_dir, interrupted=Message("jobs.interrupted"))
    if status.get("status") == "queued" and not status.get("pid") and \
            time.time() - (status.get("created_at") or 0) > LAUNCH_SECONDS:
        with contextlib.suppress(OSError):
            status = run_files.update_status(job_dir, only_if=lambda now: now.get("status") == "queued" and not now.get("pid"),
                                             status="interrupted", **run_files.error_fields(Message("jobs.interrupted")))
    return status


def cancel(job_dir: Path) -> dict:
    """Stop the job's process group and mark it `cancelled`; a job that already ended keeps its state."""
    status = refresh_status(job_dir)
    if status.get("status") not in ACTIVE:
        return status
    status = run_files.update_status(job_dir, only_if=lambda now: now.get("status") in ACTIVE,
                                     status="cancelled", eta_s=None, finished_at=time.time())
    if status.get("status") != "cancelled":
        return status   # it finished in the meantime
    pid, started = status.get("pid"), status.get("pid_started")
    if pid and runs.process_alive(pid, started):
        _signal_group(pid, signal.SIGTERM)   # it stops between two batches, its files whole
        deadline = time.time() + CANCEL_GRACE_SECONDS
        while runs.process_alive(pid, started) and time.time() < deadline:
            time.sleep(0.1)
        if runs.process_alive(pid, started):
            _signal_group(pid, signal.SIGKILL)
    return status


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)   # runs.spawn started it in its own session: its group id is its pid
    except ProcessLookupError:
        pass   # ended between the check and the signal


def wait(job_dir: Path, poll: float = 0.25) -> dict:
    """Block until the job ends; return its final status."""
    while (status := refresh_status(job_dir)).get("status") in ACTIVE:
        time.sleep(poll)
    return status


def raise_unless_completed(job_dir: Path, status: dict) -> None:
    """A job that did not complete, as the sentence it ended with."""
    if status.get("status") == "completed":
        return
    if status.get("status") == "cancelled":
        raise StudioError("jobs.was_cancelled", job_id=job_dir.name)
    raise StudioError(runs.error_of(status) or Message("jobs.interrupted"))


def list_job_dirs(workspace: Path) -> list[Path]:
    dirs = [p for p in jobs_root(workspace).iterdir() if (p / JOB_FILE).is_file()]
    return sorted(dirs, key=lambda p: run_files.read_status(p).get("created_at", 0), reverse=True)


def read_job(job_dir: Path) -> dict:
    return json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))


def read_summary(job_dir: Path) -> dict:
    try:
        return json.loads((job_dir / SUMMARY).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def rendered(value):
    """`value` with every stored message ({"code", "params"}) turned into its text in the visitor's language."""
    if isinstance(value, dict):
        if set(value) == {"code", "params"}:
            with contextlib.suppress(KeyError, TypeError):
                return Message.from_dict(value).text()
        return {k: rendered(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rendered(v) for v in value]
    return value


def error_text(status: dict) -> str | None:
    """Why the job ended without completing, in the visitor's language."""
    if status.get("error_message"):
        return rendered(status["error_message"])
    if status.get("status") == "interrupted":
        return Message("jobs.interrupted").text()
    return status.get("error")


def status_of(job_dir: Path) -> dict:
    """A job's status as the API gives it: plain data, its sentences in the visitor's language."""
    status = refresh_status(job_dir)
    return {"job_id": job_dir.name, "kind": status.get("kind"), "status": status.get("status"),
            "done": status.get("done", 0), "total": status.get("total"), "eta_s": status.get("eta_s"),
            "error": error_text(status), "warnings": rendered(status.get("warnings") or []),
            "created_at": status.get("created_at"), "started_at": status.get("started_at"),
            "finished_at": status.get("finished_at"), "spec": read_job(job_dir).get("spec", {})}


def results_of(job_dir: Path) -> dict:
    """The rows so far (all of them once it completed), the summary once it completed, every warning, the files."""
    status = status_of(job_dir)
    summary = rendered(read_summary(job_dir)) if status["status"] == "completed" else {}
    warnings = status["warnings"] + summary.pop("warnings", [])
    files = [str(job_dir / name) for name in (RESULTS_CSV, RESULTS) if (job_dir / name).is_file()]
    return {"job_id": job_dir.name, "kind": status["kind"], "status": status["status"],
            "rows": run_files.read_jsonl(job_dir / RESULTS), "summary": summary, "warnings": warnings, "files": files}


def run_to_end(workspace: Path, kind: str, spec: dict, secrets: dict[str, str] | None = None) -> dict:
    """Start a job and wait for it: its results, or the sentence it failed with (what the blocking endpoints do)."""
    job_dir = start(workspace, kind, spec, secrets)
    raise_unless_completed(job_dir, wait(job_dir))
    return results_of(job_dir)


# ---- the job's side: the process that does the work

class JobCancelled(BaseException):
    """SIGTERM from cancel(): a BaseException, so no `except Exception` on the way swallows it."""


def _cancelled(signum, frame):
    raise JobCancelled()


class Progress:
    """What a job reports as it goes: how many rows there will be, then the rows as they come, each batch
    appended to results.jsonl and results.csv and counted in status.json with an ETA."""

    def __init__(self, job_dir: Path, columns: tuple[str, ...]):
        self.job_dir, self.columns = job_dir, columns
        self.done, self.count, self.began = 0, None, time.time()

    def total(self, count: int) -> None:
        self.count, self.began = count, time.time()   # the ETA counts from here: loading the model is behind us
        run_files.update_status(self.job_dir, only_if=_running, total=count, done=0)

    def rows(self, rows: list[dict]) -> None:
        _append_lines(self.job_dir / RESULTS, rows)
        _append_csv(self.job_dir / RESULTS_CSV, self.columns, rows)
        self.done += len(rows)
        elapsed = time.time() - self.began
        eta = elapsed / self.done * (self.count - self.done) if self.count and self.done else None
        run_files.update_status(self.job_dir, only_if=_running, done=self.done, eta_s=eta)

    def replace(self, rows: list[dict]) -> None:
        """Rewrite every result at once (a ranking, best first, once all are scored): each file is replaced whole."""
        for name, body in ((RESULTS, _jsonl_text(rows)), (RESULTS_CSV, _csv_text(self.columns, rows, header=True))):
            staged = self.job_dir / f".{name}.tmp"
            staged.write_text(body, encoding="utf-8")
            os.replace(staged, self.job_dir / name)


def _running(status: dict) -> bool:
    return status.get("status") == "running"


def _jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _append_lines(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as handle:   # one write of whole lines, flushed: a kill tears at most the last
        handle.write(_jsonl_text(rows))
        handle.flush()


def _csv_text(columns: tuple[str, ...], rows: list[dict], header: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _append_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(_csv_text(columns, rows, header=handle.tell() == 0))
        handle.flush()


def work(job_dir: Path) -> int:
    """Do the job in `job_dir` (this process is its own): 0 if it completed."""
    job_dir = Path(job_dir).resolve()
    job = read_job(job_dir)
    kind = kinds()[job["kind"]]
    status = run_files.update_status(job_dir, only_if=lambda now: now.get("status") == "queued", status="running",
                                     pid=os.getpid(), pid_started=runs.process_start_time(os.getpid()),
                                     started_at=time.time())
    if status.get("status") != "running":
        return 1   # cancelled before it began
    signal.signal(signal.SIGTERM, _cancelled)
    try:
        summary = kind.run(Path(job["workspace"]), job["spec"], Progress(job_dir, kind.columns))
        run_files.write_json_atomic(job_dir / SUMMARY, json.loads(json.dumps(summary, default=_stored)))
    except JobCancelled:
        return 1   # cancel() has written the status
    except StudioError as exc:
        _finish(job_dir, "failed", exc)
        return 1
    except Exception:   # a fault of the studio: the traceback to job.log, one sentence (no Python text) to the visitor
        traceback.print_exc()
        _finish(job_dir, "failed", StudioError("jobs.crashed", log=str(job_dir / LOG)))
        return 1
    _finish(job_dir, "completed", None)
    return 0


def _stored(value):
    if isinstance(value, Message):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not plain data")


def _finish(job_dir: Path, state: str, error: StudioError | None, only_if_status: str = "running") -> None:
    with contextlib.suppress(OSError):   # a full disk: the next look reads it interrupted
        run_files.update_status(job_dir, only_if=lambda now: now.get("status") == only_if_status, status=state,
                                **run_files.error_fields(error), eta_s=None, finished_at=time.time())


# ---- Evaluate: every prompt through every checkpoint, scored

def prepare_evaluation(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoints (list of model ids), prompts (a list, or a dataset name), scorer (a reward checkpoint
    and/or a rules .py, joined by +, or ""), rules (declarative rules, pipelines/rl/rule_spec.py: a list, or its
    YAML text), settings (generation settings, as chat's). The scorer, the rules or both score the answers.
    Optionally judge (pipelines/judge.py) and reference (one of the checkpoints), criteria: a win rate against it."""
    from pipelines.compare import check_judging, evaluation_prompts
    from pipelines.inference import check_settings
    from pipelines.models import check_generative, resolve_model
    from pipelines.rl.rewards import check_reward

    checkpoints = spec.get("checkpoints")
    if not isinstance(checkpoints, list) or not checkpoints or not all(isinstance(c, str) and c.strip() for c in checkpoints):
        raise StudioError("jobs.no_checkpoints")
    for checkpoint in checkpoints:
        check_generative(resolve_model(checkpoint, workspace))
    settings = spec.get("settings") or {}
    check_settings(settings)
    prompts = spec.get("prompts")
    if not isinstance(prompts, (str, list)):
        raise StudioError("jobs.no_prompts")
    scorer = spec.get("scorer") or ""
    if not isinstance(scorer, str):
        raise StudioError("jobs.no_scorer")
    rules = spec.get("rules") or []
    if isinstance(rules, str):
        from pipelines.config import list_from_text
        rules = list_from_text(rules, "rules")
    check_reward(scorer, workspace, rules=rules)
    return {"checkpoints": checkpoints, "prompts": evaluation_prompts(workspace, prompts), "scorer": scorer,
            "rules": rules, "settings": settings, **check_judging(workspace, spec, checkpoints)}, []


def run_evaluation(workspace: Path, spec: dict, progress: Progress) -> dict:
    from pipelines.compare import evaluate

    progress.total(len(spec["prompts"]) * len(spec["checkpoints"]))
    report = evaluate(workspace, spec["checkpoints"], spec["prompts"], spec["scorer"], spec["settings"],
                      on_rows=progress.rows, rules=spec.get("rules"), judging=spec.get("judging"))
    return {key: value for key, value in report.items() if key != "rows"}   # the rows are in results.jsonl
