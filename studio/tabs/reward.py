"""Reward tab: what a trained reward model thinks. Score answers to a prompt, measure it on held-out pairs
(accuracy, a histogram of margins, whether it just rewards length), and rank every answer of a dataset."""

from __future__ import annotations

import html
import re
from functools import partial
from pathlib import Path

import gradio as gr

from pipelines import api
from studio.charts import margin_histogram
from studio.choices import dataset_names
from studio.errors import shows_errors
from studio.i18n import t

ANSWER_SEPARATOR = re.compile(r"(?m)^\s*---\s*$")   # a line of three dashes, alone


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
                answers = gr.Textbox(label=t("reward.answers"), lines=6, placeholder="First answer\n---\nSecond answer")
                score = gr.Button(t("reward.score"), variant="primary")
                scores = gr.Markdown()
            with gr.Column():
                evaluate = gr.Button(t("reward.evaluate"))
                summary = gr.Markdown()
                histogram = gr.Plot(show_label=False)
        rank = gr.Button(t("reward.rank"))
        ranked = gr.Dataframe(headers=["reward", "side", "prompt", "answer"], interactive=False, wrap=True, max_height=420)
    private = {"api_visibility": "private"}
    tab.select(partial(refresh_reward_choices, workspace), [checkpoint], [checkpoint], **private)
    score.click(shows_errors(partial(score_answers, workspace)), [checkpoint, prompt, answers], [scores], **private)
    evaluate.click(shows_errors(partial(evaluate_on_pairs, workspace)), [checkpoint, dataset], [summary, histogram], **private)
    rank.click(shows_errors(partial(rank_dataset, workspace)), [checkpoint, dataset], [ranked], **private)


def refresh_reward_choices(workspace: Path, current: str | None):
    choices = reward_checkpoints(workspace)
    return gr.update(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def score_answers(workspace: Path, checkpoint: str, prompt: str, answers: str) -> str:
    responses = [a.strip() for a in ANSWER_SEPARATOR.split(answers or "") if a.strip()]
    rewards = api.score(workspace, checkpoint, prompt, responses)
    best = max(range(len(rewards)), key=rewards.__getitem__)
    rows = [f"| {'🏆' if i == best else ''} {r:+.3f} | {html.escape(a[:200]).replace('|', '&#124;').replace(chr(10), ' ')} |"
            for i, (r, a) in enumerate(zip(rewards, responses))]
    return "| reward | answer |\n|---:|---|\n" + "\n".join(rows)


def evaluate_on_pairs(workspace: Path, checkpoint: str, dataset: str):
    report = api.evaluate_reward(workspace, checkpoint, dataset)
    text = (f"**{report['accuracy']:.0%}** of {report['pairs']} pairs scored chosen above rejected · mean margin "
            f"{report['mean_margin']:+.3f} · reward–length correlation {report['length_correlation']:+.2f}")
    text += "".join(f"\n\n⚠️ {warning}" for warning in report["warnings"])
    return text, margin_histogram(report["margins"], f"{checkpoint} on {dataset}")


def rank_dataset(workspace: Path, checkpoint: str, dataset: str) -> list[list]:
    return [[round(r["reward"], 3), r["side"], r["prompt"], r["answer"]] for r in api.score_dataset(workspace, checkpoint, dataset)]
