"""Following a job (pipelines/jobs.py) in a tab: a picker of the tab's jobs, so that one started earlier, or before a
reload, can be reopened; a progress line (state, rows done / total, "N min left"); Cancel; and a gr.Timer that reads
the job's folder through the API while the job is active, and stops itself when it ends.

The job runs in its own process: nothing here blocks a worker for longer than one read of its files.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.jobs import ACTIVE, STATES
from pipelines.messages import text
from studio.i18n import t, time_left

POLL_SECONDS = 1.0
SHOWN_ROWS = 200   # a table of 20 000 scored answers would freeze the page; the download holds them all


@dataclass
class JobPanel:
    job: gr.Dropdown      # the job followed, by id: per visitor, and a finished one is picked again after a reload
    cancel: gr.Button
    progress: gr.Markdown
    timer: gr.Timer


def build_panel() -> JobPanel:
    with gr.Row(equal_height=True):
        job = gr.Dropdown(choices=[], value=None, label=t("jobs.pick"), scale=4)
        cancel = gr.Button(t("jobs.cancel"), variant="stop", size="sm", scale=1, interactive=False)
    progress = gr.Markdown()
    return JobPanel(job=job, cancel=cancel, progress=progress, timer=gr.Timer(POLL_SECONDS, active=False))


def job_choices(workspace: Path, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, job id) of the jobs of these kinds, newest first; an ended one's label says how it ended (an active
    one's says nothing that would go stale: its progress line says how it goes)."""
    listed = sorted((s for kind in kinds for s in api.list_jobs(workspace, kind)),
                    key=lambda s: s.get("created_at") or 0, reverse=True)
    return [(s["job_id"] if s["status"] in ACTIVE else text("jobs.choice", job_id=s["job_id"], state=state_word(s["status"])),
             s["job_id"]) for s in listed]


def refresh_jobs(workspace: Path, kinds: tuple[str, ...], current: str | None):
    """Re-list the jobs (another visitor's, or one from before a reload) and keep the current pick, or the newest."""
    choices = job_choices(workspace, kinds)
    ids = [job_id for _, job_id in choices]
    return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def started(workspace: Path, kinds: tuple[str, ...], job_id: str):
    """The picker on a job just started, and the timer on."""
    return gr.update(choices=job_choices(workspace, kinds), value=job_id), gr.Timer(active=True)


def state_word(status: str | None) -> str:
    return text(f"jobs.state.{status}") if status in STATES else text("status.unknown")


def progress_line(status: dict, done_code: str = "jobs.rows_done") -> str:
    """**running** · 40 / 200 rows · 3 min left, then its error and warnings (`done_code`: what is counted)."""
    parts = [f"**{state_word(status['status'])}**"]
    if status["status"] in ACTIVE and not status.get("total"):
        parts.append(text("jobs.loading"))
    elif status.get("total"):
        parts.append(text(done_code, done=status["done"], total=status["total"]))
    if status["status"] == "running" and status.get("eta_s") is not None:
        parts.append(time_left(status["eta_s"]))
    line = " · ".join(parts)
    if status.get("error"):
        line += f"\n\n❌ {status['error']}"
    return line + "".join(f"\n\n⚠️ {warning}" for warning in status.get("warnings") or [])


def read(workspace: Path, job_id: str | None) -> dict | None:
    """What a tab draws of a job: its results (status included), or None when no job is picked."""
    if not job_id:
        return None
    status = api.job_status(workspace, job_id)   # read first: results read after an ended status are final
    results = api.job_results(workspace, job_id)
    return {**results, "status_of": {**status, "warnings": results["warnings"]}, "active": status["status"] in ACTIVE}


def controls(workspace: Path, kinds: tuple[str, ...], job: dict | None):
    """The picker, the Cancel button and the timer for a job as it now is; once it ended the picker's labels are
    read again, so that they say how it ended."""
    active = bool(job and job["active"])
    picker = gr.update() if active or job is None else gr.update(choices=job_choices(workspace, kinds))
    return picker, gr.update(interactive=active), gr.Timer(active=active)


def downloads(job: dict) -> list[str] | None:
    """The job's result files, copied where Gradio serves downloads from, once it completed."""
    if job["status"] != "completed" or not job["files"]:
        return None
    folder = Path(tempfile.mkdtemp(prefix=f"studio-{job['job_id']}-"))
    copies = []
    for path in map(Path, job["files"]):
        copies.append(str(shutil.copy(path, folder / f"{job['job_id']}{path.suffix}")))
    return copies


def table(headers: list[str], rows: list[list]) -> dict:
    """A Dataframe value with headers in the visitor's language."""
    return {"headers": headers, "data": rows}


def shown_note(job: dict) -> str:
    rows = len(job["rows"])
    return f"\n\n{text('jobs.rows_shown', shown=SHOWN_ROWS, rows=rows)}" if rows > SHOWN_ROWS else ""


def cancel(workspace: Path, job_id: str | None) -> str:
    if not job_id:
        return text("jobs.none")
    status = api.cancel_job(workspace, job_id)
    return progress_line(status)
