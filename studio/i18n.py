"""The UI's text for Gradio, from the message catalog (pipelines/messages): English and Korean.

Labels built with the page are gr.I18n keys, resolved in the browser. Gradio picks the page's locale once, from
`navigator.language`; its own runtime switch (the footer's Settings) relabels only what is on screen, so a tab
not yet opened keeps its first label. The studio's own picker in the header therefore remembers the choice
(localStorage), tells the server (a cookie, read by studio/errors.py) and reloads the page, where HEAD, first in
<head>, makes the stored choice the navigator's language before Gradio looks: every label at once, and every
sentence the server writes. Field labels of the
training form are keyed `<section>.<field>` after the config dataclasses (see studio/form.py).
"""

import gradio as gr

from pipelines.messages import LANGUAGES, catalog, text
from studio.errors import LANGUAGE_COOKIE

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


def hosted_key(key: str) -> str:
    """`hosted.<key>` where the server is hosted and the catalog words `key` for it (a model field that offers no
    Hub download, a reward that takes no Python file), else `key`: a label or help built once, with the page."""
    from pipelines import hosting

    limits = hosting.current()
    variant = f"hosted.{key}"
    if limits is None or variant not in EN or (limits.allow_user_code and key.endswith(".reward")):
        return key
    return variant


def time_left(seconds: float) -> str:
    """An ETA as a duration in the visitor's language, never a clock time: "40 s left", "9 min left", "1.5 h left"
    (runs, roads and jobs alike)."""
    if seconds < 60:
        return text("eta.seconds", seconds=max(int(round(seconds)), 1))
    if seconds < 3600:
        return text("eta.minutes", minutes=int(round(seconds / 60)))
    return text("eta.hours", hours=seconds / 3600)


LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}   # each in its own language: anyone finds theirs
assert set(LANGUAGE_NAMES) == set(LANGUAGES)
STORAGE_KEY = "alignment-studio.language"       # localStorage, per origin like the page itself
_LANGUAGES_JS = "[" + ", ".join(f'"{code}"' for code in LANGUAGES) + "]"

# First in the page's <head> (ChosenLanguageFirst), so it runs before Gradio reads navigator.language to pick its
# locale; Blocks.launch(head=...) would come too late, added by Gradio's script once it has picked. The cookie follows
# the stored choice on every load (cookies ignore the port, so another studio on this host may have left one).
HEAD = f"""<script>
(() => {{
  let chosen = null;
  try {{ chosen = window.localStorage.getItem("{STORAGE_KEY}"); }} catch (error) {{}}
  if (!{_LANGUAGES_JS}.includes(chosen)) {{
    document.cookie = "{LANGUAGE_COOKIE}=; path=/; max-age=0; SameSite=Lax";
    return;
  }}
  document.cookie = "{LANGUAGE_COOKIE}=" + chosen + "; path=/; max-age=31536000; SameSite=Lax";
  Object.defineProperty(navigator, "language", {{ get: () => chosen }});
  Object.defineProperty(navigator, "languages", {{ get: () => [chosen] }});
}})();
</script>"""

# The language the page speaks: the stored choice, else the browser's when the studio has it, else English.
_SHOWN_JS = f"""() => {{
  const spoken = (navigator.language || "en").toLowerCase().split("-")[0];
  return {_LANGUAGES_JS}.includes(spoken) ? spoken : "en";
}}"""
_CHOOSE_JS = f"""(language) => {{
  try {{ window.localStorage.setItem("{STORAGE_KEY}", language); }} catch (error) {{}}
  document.cookie = "{LANGUAGE_COOKIE}=" + language + "; path=/; max-age=31536000; SameSite=Lax";
  window.location.reload();
  return language;
}}"""


def language_picker(app: gr.Blocks) -> gr.Radio:
    """English / 한국어 in the header: shows the page's language and, when changed, switches to the other one."""
    picker = gr.Radio([(name, code) for code, name in LANGUAGE_NAMES.items()], value=None, label=t("language.picker"),
                      show_label=False, container=False, elem_id="studio-language", scale=0, min_width=240)
    app.load(None, None, [picker], js=_SHOWN_JS, api_visibility="private")
    picker.input(None, [picker], None, js=_CHOOSE_JS, api_visibility="private")
    return picker


class ChosenLanguageFirst:
    """ASGI middleware: the app's page (under any root path) gets HEAD as the first thing in its <head>; files and
    API routes pass untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not _is_page(scope["path"]):
            return await self.app(scope, receive, send)
        start, body = None, []

        async def send_with_head(message):
            nonlocal start
            if message["type"] == "http.response.start":
                if dict(message["headers"]).get(b"content-type", b"").startswith(b"text/html"):
                    start = message   # held until the whole page is read: its length changes
                    return
                start = False
            if start is False or message["type"] != "http.response.body":
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = b"".join(body).replace(b"<head>", b"<head>" + HEAD.encode(), 1)
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, send_with_head)


def _is_page(path: str) -> bool:
    return "/gradio_api" not in path and "." not in path.rsplit("/", 1)[-1]   # not an endpoint, a file or an asset
