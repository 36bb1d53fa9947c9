"""Reward tab: what a trained reward model thinks. Score answers to a prompt, measure it on held-out pairs
(accuracy, a histogram of margins, whether it just rewards length), and rank every answer of a dataset.

Measuring and ranking read a whole dataset: each is a job in its own process (pipelines/jobs.py), followed here
with a timer (rows done / total, minutes left, Cancel), its results table and download shown as it ends.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.messages import text
from studio import job_view
from studio.charts import margin_histogram
from studio.choices import dataset_names
from studio.i18n import t
from studio.identity import in_workspace

ANSWER_SEPARATOR = re.compile(r"(?m)^\s*---\s*$")   # a line of three dashes, alone
KINDS = ("evaluate_reward", "score_dataset")
RANK_COLUMNS = ("reward", "side", "prompt", "answer")
RANK_WIDTHS = ["9%", "11%", "30%", "50%"]   # the answer gets the room; long text wraps inside its column


def reward_checkpoints(workspace: Path) -> list[str]:
    """Checkpoints of reward runs only: the others cannot score."""
    return api.list_checkpoints(workspace, "reward")


def build(workspace: Path) -> None:
    with gr.Tab(t("tab.reward"), id="reward") as tab:
        checkpoints = reward_checkpoints(workspace)
        with gr.Row():
            checkpoint = gr.Dropdown(choices=checkpoints, value=checkpoints[0] if checkpoints else None,
                                     allow_custom_value=True, label=t("reward.checkpoint"), info=t("reward.checkpoint_help"), scale=3)
            dataset = gr.Dropdown(choices=dataset_names(workspace), value="preference-en-sample", allow_custom_value=True,
                                  label=t("dataset"), scale=3)
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label=t("reward.prompt"), lines=2)
                answers = gr.Textbox(label=t("reward.answers"), lines=6, placeholder=t("reward.answers_placeholder"))
                score = gr.Button(t("reward.score"), variant="primary")
                scores = gr.Markdown()
            with gr.Column():
                evaluate = gr.Button(t("reward.evaluate"))
                rank = gr.Button(t("reward.rank"))
                panel = job_view.build_panel()
                summary = gr.Markdown()
                histogram = gr.Plot(show_label=False, visible=False)
        ranked = gr.Dataframe(headers=_rank_headers(), interactive=False, wrap=True, column_widths=RANK_WIDTHS,
                              max_height=420, visible=False)
        files = gr.File(label=t("reward.export"), file_count="multiple", interactive=False, visible=False)
    private = {"api_visibility": "private"}
    shown = [panel.job, panel.cancel, panel.timer, panel.progress, summary, histogram, ranked, files]
    tab.select(in_workspace(refresh_reward_choices), [checkpoint], [checkpoint], **private)
    relist = in_workspace(job_view.refresh_jobs, KINDS)   # its labels say how each job ended
    tab.select(relist, [panel.job], [panel.job], **private).then(
        in_workspace(show_job), [panel.job], shown, **private)
    score.click(in_workspace(score_answers), [checkpoint, prompt, answers], [scores], **private)
    for button, kind in ((evaluate, "evaluate_reward"), (rank, "score_dataset")):
        button.click(in_workspace(start_reward_job, kind), [checkpoint, dataset], [panel.job, panel.timer],
                     **private)
    panel.job.change(in_workspace(show_job), [panel.job], shown, **private)
    panel.timer.tick(in_workspace(show_job), [panel.job], shown, **private)
    panel.cancel.click(in_workspace(job_view.cancel), [panel.job], [panel.progress], **private)


def refresh_reward_choices(workspace: Path, current: str | None):
    choices = reward_checkpoints(workspace)
    return gr.update(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def score_answers(workspace: Path, checkpoint: str, prompt: str, answers: str) -> str:
    responses = [a.strip() for a in ANSWER_SEPARATOR.split(answers or "") if a.strip()]
    rewards = api.score(workspace, checkpoint, prompt, responses)
    best = max(range(len(rewards)), key=rewards.__getitem__)
    rows = [f"| {'🏆' if i == best else ''} {r:+.3f} | {html.escape(a[:200]).replace('|', '&#124;').replace(chr(10), ' ')} |"
            for i, (r, a) in enumerate(zip(rewards, responses))]
    return f"| {text('reward.col.reward')} | {text('reward.col.answer')} |\n|---:|---|\n" + "\n".join(rows)


def start_reward_job(workspace: Path, kind: str, checkpoint: str, dataset: str):
    """Measure the checkpoint on the dataset's pairs (evaluate_reward) or rank its answers (score_dataset), as a job."""
    job_id = api.start_job(workspace, kind, {"checkpoint": checkpoint, "dataset": dataset})
    return job_view.started(workspace, KINDS, job_id)


def show_job(workspace: Path, job_id: str | None):
    """Picker, Cancel, timer, progress, summary, histogram (a measurement's), ranked table (a ranking's) and download
    for the picked job, as it now is."""
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, KINDS, job)
    if job is None:
        return (*controls, "", "", gr.update(visible=False), gr.update(visible=False), gr.update(visible=False))
    files = job_view.downloads(job)
    download = gr.update(value=files, visible=bool(files))
    progress = job_view.progress_line(job["status_of"])
    if job["kind"] == "evaluate_reward":
        figure = pairs_histogram(job)
        return (*controls, progress, pairs_summary(job), gr.update(value=figure, visible=figure is not None),
                gr.update(visible=False), download)
    table = job_view.table(_rank_headers(), rank_rows(job["rows"]))
    return (*controls, progress, job_view.shown_note(job).strip(), gr.update(visible=False),
            gr.update(value=table, visible=True), download)


def _rank_headers() -> list[str]:
    return [text(f"reward.col.{c}") for c in RANK_COLUMNS]


def rank_rows(rows: list[dict]) -> list[list]:
    return [[round(r["reward"], 3), text(f"reward.side.{r['side']}"), r["prompt"], r["answer"]]
            for r in rows[:job_view.SHOWN_ROWS]]


def pairs_summary(job: dict) -> str:
    """Accuracy, mean margin and length correlation once the job completed (its warnings are on the progress line)."""
    report = job["summary"]
    if not report:
        return ""
    return text("reward.summary", accuracy=report["accuracy"], pairs=report["pairs"], margin=report["mean_margin"],
                correlation=report["length_correlation"])


def pairs_histogram(job: dict):
    """The margins scored so far, drawn as they come."""
    margins = [r["margin"] for r in job["rows"]]
    if not margins:
        return None
    spec = job["status_of"]["spec"]
    return margin_histogram(margins, text("reward.histogram_title", checkpoint=spec.get("checkpoint", ""),
                                          dataset=spec.get("dataset", "")))
