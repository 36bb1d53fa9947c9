"""Data tab: pick a sample or saved dataset, upload one, and preview rows through the chat template."""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID
from studio.choices import dataset_names, refresh_checkpoint_choices, refresh_dataset_choices
from studio.errors import shows_errors
from studio.i18n import t


def build(workspace: Path) -> gr.Dropdown:
    with gr.Tab(t("tab.data"), id="data") as tab:
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    dataset = gr.Dropdown(choices=dataset_names(workspace), value="alpaca-en-sample", label=t("data.pick"), scale=3)
                    model = gr.Dropdown(choices=api.list_checkpoints(workspace), value=BUNDLED_MODEL_ID, allow_custom_value=True,
                                        label=t("data.preview_model"), scale=3)
                    rows = gr.Slider(1, 20, value=3, step=1, label=t("data.preview_rows"), scale=2)
                show = gr.Button(t("data.preview"), variant="primary")
                preview = gr.HTML()
            with gr.Column(scale=2):
                upload = gr.File(label=t("data.upload"), file_types=[".json", ".jsonl", ".csv", ".tsv", ".parquet"], type="filepath")
                name = gr.Textbox(label=t("data.name"), placeholder="my-dataset")
                drop_bad = gr.Checkbox(label=t("data.drop_bad"), value=False)
                save = gr.Button(t("data.save"))
                report = gr.JSON(label=t("data.report"))
    tab.select(partial(refresh_dataset_choices, workspace), [dataset], [dataset], api_visibility="private")
    tab.select(partial(refresh_checkpoint_choices, workspace), [model], [model], api_visibility="private")
    show.click(shows_errors(partial(preview_html, workspace)), [dataset, model, rows], [preview], api_visibility="private")
    save.click(shows_errors(partial(save_dataset, workspace)), [upload, name, drop_bad], [report, dataset], api_visibility="private")
    return dataset


LOSS_STYLE = "background:#c7d2fe;border-radius:3px"   # tokens the model is trained to produce


def preview_html(workspace: Path, dataset: str, model: str, n: int) -> str:
    """Each row as the model sees it; highlighted text carries the loss, the rest is context."""
    blocks = []
    for index, row in enumerate(api.preview_dataset(workspace, dataset, model, int(n)), start=1):
        body = "".join(f"<span style='{LOSS_STYLE}'>{html.escape(s['text'])}</span>" if s["loss"] else html.escape(s["text"])
                       for s in row["segments"])
        blocks.append(f"<details open><summary><b>#{index}</b> · {row['tokens']} tokens · "
                      f"{row['loss_tokens']} with loss</summary><pre style='white-space:pre-wrap'>{body}</pre></details>")
    return "\n".join(blocks)


def save_dataset(workspace: Path, file: str | None, name: str, drop_bad_rows: bool):
    report = api.upload_dataset(workspace, file, (name or "").strip(), drop_bad_rows)
    names = dataset_names(workspace)
    if report.get("saved"):
        return report, gr.update(choices=names, value=report["name"])
    return report, gr.update(choices=names)
