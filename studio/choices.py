"""Choices that several tabs offer: checkpoints (base models and every run's) and datasets."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from pipelines import api


def dataset_names(workspace: Path) -> list[str]:
    return [d["name"] for d in api.list_datasets(workspace)]


def refresh_checkpoint_choices(workspace: Path, current: str, kind: str = "any"):
    """Re-list checkpoints (runs save new ones) and keep the current pick."""
    return gr.update(choices=api.list_checkpoints(workspace, kind), value=current)


def refresh_dataset_choices(workspace: Path, current: str):
    return gr.update(choices=dataset_names(workspace), value=current)


# On a tab select or a list's focus only the choices change: the visitor may be typing into the list meanwhile, and
# a value sent back would overwrite what they typed with what the list held when the event left the browser.
def checkpoint_choices(workspace: Path, kind: str = "any"):
    return gr.update(choices=api.list_checkpoints(workspace, kind))


def dataset_choices(workspace: Path, optional: bool = False):
    """Every dataset as the disk has it now (optional: "" first, for none)."""
    return gr.update(choices=[""] * optional + dataset_names(workspace))
