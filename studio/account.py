"""The header's account line on a shared server: who the visitor is here (a login, a Hugging Face login, or an
anonymous sandbox and when it expires), a Hugging Face login button on a Space with OAuth, and for an admin a
picker of the workspace to act in (studio/identity.py reads its cookie)."""

from __future__ import annotations

import os

import gradio as gr

from pipelines import users
from pipelines.messages import text
from studio.errors import shows_errors
from studio.i18n import t
from studio.identity import ACTING_AS_COOKIE, visitor

MINE = ""   # the admin's own workspace, in the picker

_CHOOSE_JS = f"""(user) => {{
  document.cookie = "{ACTING_AS_COOKIE}=" + (user || "") + "; path=/; max-age=" + (user ? 86400 : 0) + "; SameSite=Lax";
  window.location.reload();
  return user;
}}"""


def oauth_available() -> bool:
    """A Space created with `hf_oauth: true` gets these variables; Gradio's login button needs them."""
    return bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))


def build(app: gr.Blocks) -> None:
    with gr.Column(scale=0, min_width=260):
        who = gr.Markdown(elem_id="studio-account")
        if oauth_available():
            gr.LoginButton(size="sm")
        acting_as = gr.Dropdown(label=t("account.acting_as"), visible=False, allow_custom_value=False)
    app.load(shows_errors(account_line), None, [who, acting_as], api_visibility="private")
    acting_as.input(None, [acting_as], None, js=_CHOOSE_JS, api_visibility="private")


def account_line():
    """The visitor's line, and the admin's picker (shown to admins only, listing every user)."""
    me = visitor()
    if me.name:
        line = text("account.signed_in", name=me.name)
        if me.workspace != me.home:
            line += " " + text("account.acting_as_user", user=users.display_name(me.user))
    else:
        line = text("account.sandbox", hours=users.SANDBOX_LIFETIME_S // 3600)
        if oauth_available():   # the login button is beside it
            line += " " + text("account.log_in_to_keep")
    if not me.admin:
        return line, gr.update(visible=False)
    root = users.server_root(me.workspace)
    own = users.user_of(me.home)
    choices = [(text("account.mine"), MINE)] + [(users.display_name(user), user) for user in users.users(root)
                                                 if user != own]
    return line, gr.update(visible=True, choices=choices, value=MINE if me.workspace == me.home else me.user)
