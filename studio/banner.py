"""The line at the top of every page that says a Space will forget what visitors make (pipelines/space.py)."""

from pathlib import Path

import gradio as gr

from pipelines.space import on_space, storage_volume
from studio.i18n import t


def storage_banner(workspace: Path) -> gr.Markdown | None:
    """On a Space whose workspace is not on a mounted volume, a banner (in the visitor's language) saying that runs
    and datasets are lost on restart; nothing elsewhere. Built inside the page's Blocks, above the tabs, so every
    tab shows it; the volume is looked up once, as the app starts."""
    if not on_space() or storage_volume(workspace) is not None:
        return None
    # The key may sit inside a longer string: the browser translates it where it stands.
    return gr.Markdown("⚠️ " + t("space.no_volume"), elem_id="storage-banner", container=True)
