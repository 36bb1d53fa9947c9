"""Chat tab: talk to the base model or any checkpoint of any run, streaming through its chat template."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.messages import LANGUAGES, render, text
from studio.choices import refresh_checkpoint_choices
from studio.form import on
from studio.i18n import t
from studio.identity import for_visitor, in_workspace


def build(workspace: Path) -> gr.Dropdown:
    with gr.Tab(t("tab.chat"), id="chat") as tab:
        with gr.Row():
            checkpoint = gr.Dropdown(choices=api.list_checkpoints(workspace, "chat"), value=api.BUNDLED_MODEL_ID,
                                     allow_custom_value=True, label=t("chat.checkpoint"), scale=4)
            refresh = gr.Button(t("chat.refresh"), scale=1)
        with gr.Row():
            with gr.Column(scale=4):
                chatbot = gr.Chatbot(label=t("chat.conversation"), height=440, placeholder=t("chat.placeholder"))
                with gr.Row():
                    message = gr.Textbox(show_label=False, placeholder=t("chat.message"), scale=5, autofocus=True)
                    send = gr.Button(t("chat.send"), variant="primary", scale=1)
                    clear = gr.Button(t("chat.clear"), scale=1)
            with gr.Column(scale=1):
                gr.Markdown(f"**{t('chat.settings')}**")
                max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label=t("chat.max_new_tokens"))
                temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label=t("chat.temperature"))
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label=t("chat.top_p"))
                system_prompt = gr.Textbox(label=t("chat.system_prompt"), lines=3)
    private = {"api_visibility": "private"}
    for trigger in (send.click, message.submit):
        on(trigger, for_visitor(respond_stream), [chatbot, message], checkpoint=checkpoint, message=message, history=chatbot, max_new_tokens=max_new_tokens,
           temperature=temperature, top_p=top_p, system_prompt=system_prompt)
    clear.click(lambda: ([], ""), None, [chatbot, message], **private)
    # New checkpoints appear as runs save them: offer them whenever the tab is opened, or on demand.
    for trigger in (refresh.click, tab.select):
        trigger(in_workspace(refresh_checkpoint_choices, kind="chat"), [checkpoint], [checkpoint], **private)
    return checkpoint


def respond_stream(workspace: Path, checkpoint: str, message: str, history: list, max_new_tokens: float,
                   temperature: float, top_p: float, system_prompt: str):
    """Stream the reply into the chat history; the textbox clears once the message is taken, and a reply cut at
    max_new_tokens says so."""
    settings = {"max_new_tokens": int(max_new_tokens), "temperature": temperature, "top_p": top_p,
                "system_prompt": system_prompt or ""}
    history = list(history or [])
    shown = history + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    for reply in api.chat_stream(workspace, checkpoint, message, without_cut_marks(history), settings):
        shown[-1] = {"role": "assistant", "content": shown_reply(reply, settings["max_new_tokens"])}
        yield shown, ""


def shown_reply(reply, max_new_tokens: int) -> str:
    """A reply's text, marked when generation stopped at max_new_tokens before the answer ended."""
    return f"{reply.text} {text('chat.cut', tokens=max_new_tokens)}" if reply.cut else reply.text


# The mark in every language, so a conversation goes on without it whichever language it was shown in.
_CUT_MARKS = re.compile("|".join(" " + re.escape(render("chat.cut", language, tokens=0)).replace("0", r"\d+")
                                 for language in LANGUAGES) + "$")


def without_cut_marks(history: list) -> list:
    """The conversation as the model gave it: the cut marks shown_reply added are not the model's words."""
    return [{**turn, "content": _CUT_MARKS.sub("", turn["content"])} if turn["role"] == "assistant" else turn
            for turn in api.plain_turns(history)]
