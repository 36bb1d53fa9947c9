"""The UI's text for Gradio, from the message catalog (pipelines/messages): English and Korean.

The browser's language picks the table; the footer's Settings → Language switches it. Field labels of
the training form are keyed `<section>.<field>` after the config dataclasses (see studio/form.py).
"""

import gradio as gr

from pipelines.messages import catalog

EN = dict(catalog("en"))
KO = dict(catalog("ko"))


def _english_help() -> dict[str, str]:
    import dataclasses

    from pipelines.config import sections, top_fields

    texts = {f"help.{f.name}": f.metadata["help"] for f in top_fields()}
    for section, cls in sections().items():
        texts.update({f"help.{section}.{f.name}": f.metadata["help"] for f in dataclasses.fields(cls)})
    return texts


EN.update(_english_help())
I18N = gr.I18n(en=EN, ko=KO)


def t(key: str):
    """The translatable text for `key` (resolved in the browser)."""
    return I18N(key)
