"""Model tab: choose the bundled model, a Hub id, a local folder or a checkpoint, and see what it is.

What is picked here stays here until "Use in Train" hands it to the training form (a model tried out is not
thereby the one a run trains)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.messages import has_message, text
from studio.choices import checkpoint_choices
from studio.form import on
from studio.i18n import hosted_key, t
from studio.identity import for_visitor, in_workspace


@dataclass
class ModelTab:
    model: gr.Dropdown
    use_in_train: gr.Button


def build(workspace: Path) -> ModelTab:
    with gr.Tab(t("tab.model"), id="model") as tab:
        with gr.Row(equal_height=True):
            model = gr.Dropdown(choices=api.list_checkpoints(workspace), value=BUNDLED_MODEL_ID, allow_custom_value=True,
                                label=t("model.pick"), info=t(hosted_key("model.pick_info")), scale=4)
            inspect = gr.Button(t("model.inspect"), variant="primary", scale=1)
            use_in_train = gr.Button(t("use_in_train"), scale=1)
        card = gr.Markdown(label=t("model.card"))
    tab.select(in_workspace(checkpoint_choices), None, [model], api_visibility="private",
               show_progress="hidden")
    on(inspect.click, for_visitor(model_card), [card], model=model)
    return ModelTab(model=model, use_in_train=use_in_train)


def model_card(workspace: Path, model: str) -> str:
    """The model's facts as a two-column table, labels in the visitor's language."""
    info = api.describe_model(workspace, model)
    memory = info["memory_gb"]
    kind = text(f"model.kind.{info['kind']}") if has_message(f"model.kind.{info['kind']}") else info["kind"]
    shape = {"batch": memory["batch_size"], "tokens": memory["seq_len"]}
    head = (text("model.row.model"), f"`{info['model']}` ({kind})")   # a Markdown table's first row is its header
    rows = [
        (text("model.row.architecture"), info["architecture"]),
        (text("model.row.parameters"), f"{info['parameters'] / 1e6:,.1f} M"),
        (text("model.row.dtype"), info["dtype"]),
        (text("model.row.device"), info["device"]),
        (text("model.row.context"), f"{info['context_length']:,}" if info["context_length"] else text("model.unknown")),
        (text("model.row.chat_template"), text("model.yes") if info["chat_template"] else text("model.no_template")),
        (text("model.row.adapters"), ", ".join(Path(a).name for a in info["adapters"]) or text("model.no_adapters")),
        (text("model.row.memory_full", **shape), f"≈ {memory['full']} GB"),
        (text("model.row.memory_lora", **shape), f"≈ {memory['lora']} GB"),
    ]
    return "\n".join([f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {label} | {value} |" for label, value in rows)])
