"""Push to the Hub, as the Data and Export tabs offer it: a repo id, Private (on), a token field, Push, and the push
followed as a job (files uploaded / total, Cancel), then where it went.

The token is a password field sent with the click; api.start_push hands it to the push's process alone
(pipelines/hub_push.py), so it is in no component's value afterwards and in no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.messages import text
from pipelines.run_files import megabytes
from studio import job_view
from studio.i18n import t

KINDS = ("push_to_hub",)


@dataclass
class HubForm:
    repo: gr.Textbox
    private: gr.Checkbox
    token: gr.Textbox
    push: gr.Button
    panel: job_view.JobPanel
    pushed: gr.Markdown

    @property
    def shown(self) -> list:
        """What show_push fills in."""
        return [self.panel.job, self.panel.cancel, self.panel.timer, self.panel.progress, self.pushed]


def build_form(placeholder: str) -> HubForm:
    """The form's fields, laid out where it is called (inside the caller's accordion); `placeholder`: a repo id."""
    with gr.Row():
        repo = gr.Textbox(label=t("hub.repo"), placeholder=placeholder, max_lines=1, scale=3)
        private = gr.Checkbox(value=True, label=t("hub.private"), scale=1)
    token = gr.Textbox(label=t("hub.token"), info=t("hub.token_help"), type="password", max_lines=1)
    push = gr.Button(t("hub.push"), variant="primary")
    return HubForm(repo, private, token, push, job_view.build_panel(), gr.Markdown())


def wire(form: HubForm, tab: gr.Tab) -> None:
    """The panel follows the picked push; every tab with a form lists every push (of models and of datasets)."""
    from studio.identity import in_workspace

    private = {"api_visibility": "private"}
    tab.select(in_workspace(job_view.refresh_jobs, KINDS), [form.panel.job], [form.panel.job], **private)
    form.panel.job.change(in_workspace(show_push), [form.panel.job], form.shown, **private)
    form.panel.timer.tick(in_workspace(show_push), [form.panel.job], form.shown, **private)
    form.panel.cancel.click(in_workspace(job_view.cancel), [form.panel.job], [form.panel.progress], **private)


def start(workspace: Path, path: str, repo_id: str, private: bool, token: str):
    """Push the export folder at `path` (relative to the workspace) as a job; the picker on it, the timer on."""
    job_id = api.start_push(workspace, path, (repo_id or "").strip(), bool(private), token or "")
    return job_view.started(workspace, KINDS, job_id)


def show_push(workspace: Path, job_id: str | None):
    """Picker, Cancel, timer, progress (files uploaded) and, once it completed, where it went."""
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, KINDS, job)
    if job is None:
        return (*controls, "", "")
    return (*controls, job_view.progress_line(job["status_of"], "hub_push.files_done"), pushed_text(job["summary"]))


def pushed_text(summary: dict | None) -> str:
    if not summary:
        return ""
    visibility = text("hub_push.visibility.private" if summary["private"] else "hub_push.visibility.public")
    return text("hub_push.pushed", files=len(summary["files"]), size=megabytes(summary["bytes"]), url=summary["url"],
                visibility=visibility)
