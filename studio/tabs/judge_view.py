"""The AI judge inside the Compare tab (pipelines/judge.py): judge the round just asked (A against B, in both orders),
label a prompt set with the judge into a preference dataset (a job, followed as studio/job_view.py follows any), and
measure how often the judge agrees with the visitor's own votes (Cohen's kappa beside it), before training on it.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.errors import StudioError
from pipelines.judge import MODES, default_template
from pipelines.messages import LANGUAGES, text
from studio import job_view
from studio.choices import dataset_names
from studio.i18n import t
from studio.identity import in_workspace

LABEL_KINDS = ("label_with_judge",)
AGREEMENT_KINDS = ("judge_agreement",)
DEFAULT_PROMPTS = "prompts-en-sample"


def build(workspace: Path, asked: gr.State) -> None:
    """The accordion, placed inside the Compare tab; `asked` is that tab's last round (its prompt and answers)."""
    chat = api.list_checkpoints(workspace, "chat")
    judges = api.list_checkpoints(workspace, "any")
    datasets = dataset_names(workspace)
    with gr.Accordion(t("judge.accordion"), open=False) as accordion:
        gr.Markdown(t("judge.intro"))
        with gr.Row():
            judge = gr.Dropdown(choices=judges, value=api.BUNDLED_MODEL_ID, allow_custom_value=True,
                                label=t("judge.pick"), scale=2)
            criteria = gr.Textbox(label=t("judge.criteria"), placeholder=t("judge.criteria_placeholder"), lines=1,
                                  scale=3)
        mode = gr.Radio(choices=[(t(f"judge.mode.{m}"), m) for m in MODES], value=MODES[0], label=t("judge.mode"))
        template = gr.Textbox(label=t("judge.template_label"), lines=6, max_lines=14)
        judge_last = gr.Button(t("judge.judge_last"), variant="primary")
        verdict = gr.Markdown()
        gr.Markdown(t("judge.label_heading"))
        with gr.Row():
            sampler = gr.Dropdown(choices=chat, value=api.BUNDLED_MODEL_ID, allow_custom_value=True,
                                  label=t("judge.sampler"), scale=2)
            prompts = gr.Dropdown(choices=datasets, value=DEFAULT_PROMPTS if DEFAULT_PROMPTS in datasets else None,
                                  allow_custom_value=True, label=t("judge.prompts_dataset"), scale=2)
            n = gr.Slider(2, 4, value=2, step=1, label=t("judge.n"), scale=2)
            name = gr.Textbox(label=t("judge.new_name"), placeholder="judged-pairs", max_lines=1, scale=2)
        start_label = gr.Button(t("judge.start_label"))
        label_panel = job_view.build_panel()
        label_summary = gr.Markdown()
        label_files = gr.File(label=t("judge.download"), file_count="multiple", interactive=False, visible=False)
        gr.Markdown(t("judge.agreement_heading"))
        with gr.Row():
            votes = gr.Dropdown(choices=datasets, value="my-votes" if "my-votes" in datasets else None,
                                allow_custom_value=True, label=t("judge.votes_dataset"), scale=3)
            start_agreement = gr.Button(t("judge.start_agreement"), scale=1)
        agreement_panel = job_view.build_panel()
        agreement_summary = gr.Markdown()

    private = {"api_visibility": "private"}
    accordion.expand(in_workspace(opened), [judge, sampler, prompts, votes, template, mode],
                     [judge, sampler, prompts, votes, template], **private)
    mode.change(mode_changed, [mode, template], [template], **private)
    accordion.expand(in_workspace(job_view.refresh_jobs, LABEL_KINDS), [label_panel.job], [label_panel.job], **private)
    accordion.expand(in_workspace(job_view.refresh_jobs, AGREEMENT_KINDS), [agreement_panel.job],
                     [agreement_panel.job], **private)
    judge_last.click(in_workspace(judge_last_round), [judge, criteria, template, asked, mode], [verdict], **private)
    start_label.click(in_workspace(start_labelling), [sampler, prompts, n, name, judge, criteria, template, mode],
                      [label_panel.job, label_panel.timer], **private)
    label_shown = [label_panel.job, label_panel.cancel, label_panel.timer, label_panel.progress, label_summary,
                   label_files]
    for event in (label_panel.job.change, label_panel.timer.tick):
        event(in_workspace(show_labelling), [label_panel.job], label_shown, **private)
    label_panel.cancel.click(in_workspace(job_view.cancel), [label_panel.job], [label_panel.progress], **private)
    start_agreement.click(in_workspace(start_agreement_job), [votes, judge, criteria, template, mode],
                          [agreement_panel.job, agreement_panel.timer], **private)
    agreement_shown = [agreement_panel.job, agreement_panel.cancel, agreement_panel.timer, agreement_panel.progress,
                       agreement_summary]
    for event in (agreement_panel.job.change, agreement_panel.timer.tick):
        event(in_workspace(show_agreement), [agreement_panel.job], agreement_shown, **private)
    agreement_panel.cancel.click(in_workspace(job_view.cancel), [agreement_panel.job], [agreement_panel.progress],
                                 **private)


def opened(workspace: Path, judge: str, sampler: str, prompts: str, votes: str, template: str, mode: str):
    """On opening: the pickers re-listed (new runs, new vote datasets), and the mode's default judging prompt in the
    visitor's language when the box is still empty (what they typed is kept)."""
    datasets = dataset_names(workspace)
    return (gr.update(choices=api.list_checkpoints(workspace, "any")),
            gr.update(choices=api.list_checkpoints(workspace, "chat")),
            gr.update(choices=datasets), gr.update(choices=datasets),
            gr.update() if (template or "").strip() else default_template(mode=mode))


def mode_changed(mode: str, template: str):
    """The other mode's default prompt, unless the visitor wrote their own (a default of either mode, in either
    language, is replaced)."""
    defaults = {default_template(language, m) for language in LANGUAGES for m in MODES}
    return default_template(mode=mode) if not (template or "").strip() or template in defaults else gr.update()


def judge_last_round(workspace: Path, judge: str, criteria: str, template: str, asked: dict, mode: str = MODES[0]) -> str:
    """The judge's verdict on the last round's A and B, both orders shown."""
    answers = (asked or {}).get("answers") or []
    if len(answers) < 2 or not all(a.strip() for a in answers[:2]):
        raise StudioError("judge.ask_first")
    result = api.judge(workspace, judge, asked["prompt"], list(answers[:2]), criteria or "", template or "", mode)
    return verdict_text(result)


def verdict_text(result: dict) -> str:
    letters = {"a": "A", "b": "B"}
    lines = [text("judge.order_line", first=letters[order["first"]], p=order["p_first"]) for order in result["orders"]]
    if result["winner"]:
        lines.append(text("judge.winner", winner=letters[result["winner"]], judge=result["judge"]))
    else:
        lines.append(text("judge.no_winner", judge=result["judge"]))
    return "\n\n".join(lines)


def start_labelling(workspace: Path, sampler: str, prompts: str, n, name: str, judge: str, criteria: str,
                    template: str, mode: str = MODES[0]):
    job_id = api.label_with_judge(workspace, sampler, prompts or "", judge, criteria or "", int(n), (name or "").strip(),
                                  template or "", mode)
    return job_view.started(workspace, LABEL_KINDS, job_id)


def show_labelling(workspace: Path, job_id: str | None):
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, LABEL_KINDS, job)
    if job is None:
        return *controls, "", "", gr.update(visible=False)
    files = job_view.downloads(job)
    return (*controls, job_view.progress_line(job["status_of"], "judge.pairs_done"), label_report(job["summary"]),
            gr.update(value=files, visible=bool(files)))


def label_report(summary: dict) -> str:
    if not summary:
        return ""
    if not summary.get("dataset"):
        return ""   # the job's warning (judge.none_kept) says why no dataset was saved, and what to try
    return text("judge.label_done", dataset=summary["dataset"], kept=summary["verdicts_kept"],
                judged=summary["pairs_judged"], rate=summary["agreement_rate"] or 0,
                skipped=summary["skipped_identical"], seconds=summary["seconds"])


def start_agreement_job(workspace: Path, votes: str, judge: str, criteria: str, template: str, mode: str = MODES[0]):
    job_id = api.start_job(workspace, "judge_agreement", {"dataset": votes or "", "judge": judge,
                                                          "criteria": criteria or "", "template": template or "",
                                                          "mode": mode})
    return job_view.started(workspace, AGREEMENT_KINDS, job_id)


def show_agreement(workspace: Path, job_id: str | None):
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, AGREEMENT_KINDS, job)
    if job is None:
        return *controls, "", ""
    return (*controls, job_view.progress_line(job["status_of"], "judge.pairs_done"), agreement_report(job["summary"]))


def agreement_report(summary: dict) -> str:
    if not summary:
        return ""
    agreed = round((summary["agreement"] or 0) * summary["verdicts"])
    kappa = text("judge.not_measured") if summary["kappa"] is None else f"{summary['kappa']:.2f}"
    return text("judge.agreement_done", verdicts=summary["verdicts"], pairs=summary["pairs"],
                coverage=summary["coverage"] or 0, agreement=agreed, kappa=kappa, meaning=text("judge.kappa_meaning"))
