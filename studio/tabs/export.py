"""Export tab: take a checkpoint out of the studio — merged weights, the LoRA adapter alone, or a GGUF file with an
Ollama Modelfile — each checked by loading it back; the list of what was exported; and an export pushed to the Hub
(studio/hub_form.py).

An export is a job in its own process (pipelines/export.py), followed here with the job panel (steps done, minutes
left, Cancel); once it completes, the summary says where it is, how big, how it was verified and how to use it.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.errors import StudioError
from pipelines.export import DTYPES, EXPORTS_DIR, STEPS, formats, gguf_type
from pipelines.messages import text
from pipelines.run_files import megabytes
from studio import hub_form, job_view
from studio.i18n import t
from studio.identity import in_workspace

KINDS = ("export",)
LIST_COLUMNS = ("name", "size", "files")
STEP_CODES = {f"export.step.{step}" for steps in STEPS.values() for step in steps}


def format_choices() -> list[tuple]:
    """(label, format): the formats this machine can write; a GGUF type is its llama.cpp name in any language."""
    return [(f"GGUF {gguf_type(f)}" if gguf_type(f) else t(f"export.format.{f}"), f) for f in formats()]


def build(workspace: Path) -> None:
    checkpoints = api.list_checkpoints(workspace, "chat")
    with gr.Tab(t("tab.export"), id="export") as tab:
        gr.Markdown(t("export.intro"))
        with gr.Row():
            checkpoint = gr.Dropdown(choices=checkpoints, value=_default(checkpoints),
                                     allow_custom_value=True, label=t("export.checkpoint"),
                                     info=t("export.checkpoint_help"), scale=3)
            name = gr.Textbox(label=t("export.name"), info=t("export.name_help"), max_lines=1, scale=2)
        with gr.Row():
            format = gr.Radio(choices=format_choices(), value="merged", label=t("export.format"), scale=3)
            dtype = gr.Dropdown(choices=list(DTYPES), value="float32", label=t("export.dtype"),
                                info=t("export.dtype_help"), scale=1)
        start = gr.Button(t("export.start"), variant="primary")
        panel = job_view.build_panel()
        summary = gr.Markdown()
        gr.Markdown(t("export.list"))
        exports = gr.Dataframe(headers=_list_headers(), interactive=False, wrap=True, column_widths=["25%", "12%", "63%"],
                               max_height=300)
        with gr.Accordion(t("hub.title"), open=False):
            gr.Markdown(t("export.push_intro"))
            pushed_export = gr.Dropdown(choices=export_names(workspace), value=None, label=t("export.push_which"))
            hub = hub_form.build_form("your-name/my-model")
    private = {"api_visibility": "private"}
    shown = [panel.job, panel.cancel, panel.timer, panel.progress, summary, exports]
    tab.select(in_workspace(refresh_checkpoints), [checkpoint], [checkpoint], **private)
    tab.select(in_workspace(refresh_export_names), [pushed_export], [pushed_export], **private)
    hub_form.wire(hub, tab)
    hub.push.click(in_workspace(start_push), [pushed_export, hub.repo, hub.private, hub.token],
                   [hub.panel.job, hub.panel.timer], **private)
    tab.select(in_workspace(job_view.refresh_jobs, KINDS), [panel.job], [panel.job], **private).then(
        in_workspace(show_job), [panel.job], shown, **private)
    format.change(lambda chosen: gr.update(visible=chosen == "merged"), [format], [dtype], **private)
    start.click(in_workspace(start_export), [checkpoint, format, dtype, name], [panel.job, panel.timer], **private)
    panel.job.change(in_workspace(show_job), [panel.job], shown, **private)
    panel.timer.tick(in_workspace(show_job), [panel.job], shown, **private)
    panel.cancel.click(in_workspace(job_view.cancel), [panel.job], [panel.progress], **private)


def refresh_checkpoints(workspace: Path, current: str | None):
    choices = api.list_checkpoints(workspace, "chat")
    return gr.update(choices=choices, value=current if current in choices else _default(choices))


def export_names(workspace: Path) -> list[str]:
    return [e["name"] for e in api.list_exports(workspace)]


def refresh_export_names(workspace: Path, current: str | None):
    names = export_names(workspace)
    return gr.update(choices=names, value=current if current in names else (names[0] if names else None))


def start_push(workspace: Path, name: str | None, repo_id: str, private: bool, token: str):
    """Push the picked export (a folder under exports/) as a job, followed by the form's panel."""
    if not name:
        raise StudioError("export.pick_an_export")
    return hub_form.start(workspace, f"{EXPORTS_DIR}/{name}", repo_id, private, token)


def _default(checkpoints: list[str]) -> str | None:
    """A run's final model (what one exports), else the first checkpoint."""
    return next((c for c in checkpoints if c.endswith("/final")), checkpoints[0] if checkpoints else None)


def start_export(workspace: Path, checkpoint: str, format: str, dtype: str, name: str):
    options = {"dtype": dtype if format == "merged" else None, "name": (name or "").strip() or None}
    job_id = api.start_job(workspace, "export", {"checkpoint": checkpoint, "format": format, "options": options})
    return job_view.started(workspace, KINDS, job_id)


def show_job(workspace: Path, job_id: str | None):
    """Picker, Cancel, timer, progress, summary and the list of exports, for the picked job as it now is."""
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, KINDS, job)
    listed = job_view.table(_list_headers(), list_rows(workspace))
    if job is None:
        return (*controls, "", "", listed)
    return (*controls, job_view.progress_line(job["status_of"], "jobs.steps_done") + steps_line(job["rows"]),
            summary_text(job["summary"]), listed)


def steps_line(rows: list[dict]) -> str:
    """The steps done so far and the seconds each took: reference 6.1 s · merge 2.0 s · …"""
    # .get: a job written by an earlier version has rows without seconds, and a summary without commands
    done = [text("export.step." + row["step"]) + (f" {row['seconds']:.1f} s" if "seconds" in row else "")
            for row in rows if f"export.step.{row.get('step')}" in STEP_CODES]
    return "\n\n" + " · ".join(done) if done else ""


def summary_text(summary: dict | None) -> str:
    """Where the export is, its size, how loading it back went, and the commands that use it."""
    if not summary:
        return ""
    verified = summary["verified"]
    lines = [text("export.done", path=summary["path"], size=megabytes(summary["bytes"]), files=len(summary["files"])),
             text("export.verified", same=verified["same_replies"], prompts=verified["prompts"],
                  agreement=f"{verified['token_agreement']:.1%}", tolerance=f"{verified['tolerance']:.0%}")]
    if verified.get("llama_cpp"):
        lines.append(text("export.verified_llama_cpp", same=verified["llama_cpp"]["same_replies"],
                          prompts=verified["llama_cpp"]["prompts"]))
    if summary.get("commands"):
        lines.append(text("export.use_it") + f"\n```\n{summary['commands']}\n```")
    return "\n\n".join(lines)


def _list_headers() -> list[str]:
    return [text(f"export.col.{c}") for c in LIST_COLUMNS]


def list_rows(workspace: Path) -> list[list]:
    return [[e["name"], megabytes(e["bytes"]), ", ".join(e["files"])] for e in api.list_exports(workspace)]
