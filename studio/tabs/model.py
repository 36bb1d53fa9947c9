"""Model tab: choose the bundled model, a Hub id, a local folder or a checkpoint, and see what it is."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID
from studio.choices import refresh_checkpoint_choices
from studio.errors import shows_errors
from studio.i18n import t


def build(workspace: Path) -> gr.Dropdown:
    with gr.Tab(t("tab.model"), id="model") as tab:
        with gr.Row():
            model = gr.Dropdown(choices=api.list_checkpoints(workspace), value=BUNDLED_MODEL_ID, allow_custom_value=True,
                                label=t("model.pick"), info=t("model.pick_info"), scale=4)
            inspect = gr.Button(t("model.inspect"), variant="primary", scale=1)
        card = gr.Markdown(label=t("model.card"))
    tab.select(partial(refresh_checkpoint_choices, workspace), [model], [model], api_visibility="private")
    inspect.click(shows_errors(partial(model_card, workspace)), [model], [card], api_visibility="private")
    return model


def model_card(workspace: Path, model: str) -> str:
    info = api.describe_model(workspace, model)
    memory = info["memory_gb"]
    rows = [
        ("model", f"`{info['model']}` ({info['kind']})"),
        ("architecture", info["architecture"]),
        ("parameters", f"{info['parameters'] / 1e6:,.1f} M"),
        ("dtype (stored)", info["dtype"]),
        ("device", info["device"]),
        ("context length", f"{info['context_length']:,}" if info["context_length"] else "unknown"),
        ("chat template", "yes" if info["chat_template"] else "**no** — chat data cannot be rendered"),
        ("adapters on top", ", ".join(Path(a).name for a in info["adapters"]) or "none"),
        (f"memory to train, full (batch {memory['batch_size']} × {memory['seq_len']})", f"≈ {memory['full']} GB"),
        (f"memory to train, LoRA (batch {memory['batch_size']} × {memory['seq_len']})", f"≈ {memory['lora']} GB"),
    ]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)

