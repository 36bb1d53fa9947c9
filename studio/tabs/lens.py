"""Lens tab: what a model expected at every token of a text (one checkpoint, or two side by side), what DPO trains on
(per-token log-ratios of a preference pair), and generation one token at a time with temperature, top-k and top-p
applied visibly.

The numbers come from pipelines/lens.py (through pipelines/api.py); this module only draws them. The drawing is pure
functions from the API's dicts to HTML, so tests check it without a browser. Every token is text a user typed or a
model produced: it is HTML-escaped before it is placed in a page.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import MAX_SEED, MAX_TEMPERATURE
from pipelines.errors import StudioError, quote
from pipelines.lens import MAX_GENERATED_IDS, MAX_SAMPLE_TOP_K, MAX_TOP_K
from pipelines.messages import text
from studio.choices import dataset_names
from studio.errors import shows_errors
from studio.form import on
from studio.i18n import t
from studio.identity import for_visitor, in_workspace

MAX_BITS = 12.0          # surprisal colours saturate here: p below 1/4096 is "very surprising" whatever the exact value
MAX_DELTA_BITS = 4.0     # a 16× change of probability between two checkpoints is the strongest green or red
MAX_LOGRATIO = 2.0       # nats: a DPO log-ratio of ±2 (e² ≈ 7× the reference's probability) is the strongest colour
SHOWN_CANDIDATES = 12    # candidates listed for a sampling step
PAGE_STEPS = 10          # tokens the "10 tokens" button generates
# Light background → dark → light: pale green (expected) through yellow and orange to red (surprising).
SURPRISAL_STOPS = ((0.0, (232, 245, 224)), (3.0, (254, 240, 160)), (6.0, (253, 184, 99)), (9.0, (244, 128, 72)),
                   (12.0, (226, 74, 51)))
NEUTRAL = (243, 244, 246)        # no number to colour by (the first token) / a difference of zero
GREEN, RED = (74, 208, 120), (244, 112, 112)
LETTERS = "ABCD"

# Scoped to each gr.HTML (css_template). Tokens keep a dark text colour on their light backgrounds in either theme.
CSS = """
position: relative; z-index: 5;   /* the root: hover boxes stay above the components that follow it */
.lens-text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 2.2; font-family: ui-monospace, monospace;
  font-size: 14px; padding: 6px 0 4px; }
.lens-tok { position: relative; color: #111827; border-radius: 3px; padding: 2px 1px;
  box-shadow: inset -1px 0 0 rgba(0, 0, 0, .15); cursor: default; }
.lens-tok:hover { outline: 2px solid #4f46e5; z-index: 2; }
.lens-piece { display: inline-block; width: 5px; padding: 2px 0; }   /* part of a character: its bytes are in the tip */
.lens-ws { opacity: .45; }
.lens-tip { display: none; position: absolute; left: 0; top: 100%; margin-top: 4px; z-index: 60; min-width: 190px;
  max-width: 320px; width: max-content; padding: 6px 8px; border-radius: 6px; background: #1f2937; color: #f9fafb;
  font-size: 12px; line-height: 1.45; white-space: normal; box-shadow: 0 4px 14px rgba(0, 0, 0, .25); }
.lens-tok .lens-tip, .lens-tok .lens-tip span { color: #f9fafb; }   /* not the token's dark text colour */
.lens-tip .lens-ws { opacity: .6; }
.lens-tok:hover > .lens-tip { display: block; }
.lens-tip-head { display: block; font-weight: 600; margin-bottom: 2px; }
.lens-tip-row { display: block; white-space: nowrap; }
.lens-tip-facts { display: block; margin-bottom: 4px; }
.lens-tok .lens-tip .lens-tip-row.lens-actual, .lens-tok .lens-tip .lens-actual span { color: #a5f3fc; font-weight: 600; }
.lens-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 4px; font-size: 12px; margin: 4px 0; }
.lens-swatch { display: inline-block; min-width: 34px; text-align: center; color: #111827; border-radius: 3px;
  padding: 1px 4px; }
.lens-line-label { font-size: 13px; font-weight: 600; margin-top: 10px; }
.lens-summary { font-size: 13px; opacity: .85; margin: 2px 0; }
.lens-table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
.lens-table th, .lens-table td { padding: 3px 8px; border: none; border-bottom: 1px solid rgba(128, 128, 128, .25); text-align: left;
  white-space: nowrap; }
.lens-table td.lens-num, .lens-table th.lens-num { text-align: right; font-variant-numeric: tabular-nums; }
.lens-table code { font-family: ui-monospace, monospace; }
.lens-table tr.lens-actual td { font-weight: 600; background: rgba(79, 70, 229, .10); }
.lens-table tr.lens-cut td { opacity: .45; }
.lens-table tr.lens-cut td.lens-status { text-decoration: line-through; }
.lens-table tr.lens-picked td { font-weight: 600; background: rgba(5, 150, 105, .14); }
.lens-bar { display: inline-block; height: 9px; background: #6366f1; border-radius: 2px; vertical-align: middle;
  margin-right: 6px; }
.lens-so-far { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, monospace; font-size: 14px;
  padding: 8px; border: 1px solid rgba(128, 128, 128, .3); border-radius: 6px; min-height: 2.4em; }
.lens-so-far .lens-last { background: rgba(5, 150, 105, .22); border-radius: 3px; }
.lens-note { font-size: 13px; margin: 6px 0; }
"""


# --- numbers and colours --------------------------------------------------------------------------------------------

def percent(prob: float | None) -> str:
    """A probability as people read it: 12.3%; below 0.1% in scientific notation, since "0.0%" would read as never."""
    if prob is None:
        return "—"
    return f"{prob:.1%}" if prob >= 0.001 else f"{prob:.1e}"


def number(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _rgb(color: tuple) -> str:
    return "rgb({}, {}, {})".format(*(round(c) for c in color))


def _mix(low: tuple, high: tuple, fraction: float) -> tuple:
    return tuple(a + (b - a) * fraction for a, b in zip(low, high))


def surprisal_color(bits: float | None) -> str:
    """The background of a token of `bits` surprisal, along SURPRISAL_STOPS; grey where there is none."""
    if bits is None:
        return _rgb(NEUTRAL)
    bits = min(max(bits, 0.0), MAX_BITS)
    for (low_bits, low), (high_bits, high) in zip(SURPRISAL_STOPS, SURPRISAL_STOPS[1:]):
        if bits <= high_bits:
            return _rgb(_mix(low, high, (bits - low_bits) / (high_bits - low_bits)))
    return _rgb(SURPRISAL_STOPS[-1][1])


def signed_color(value: float | None, scale: float) -> str:
    """Green for a positive value (a checkpoint, or the policy, expects the token more), red for a negative one,
    stronger up to ±scale."""
    if value is None or value == 0:
        return _rgb(NEUTRAL)
    fraction = min(abs(value) / scale, 1.0)
    return _rgb(_mix(NEUTRAL, GREEN if value > 0 else RED, fraction))


# --- tokens as HTML -------------------------------------------------------------------------------------------------

WHITESPACE_MARKS = {" ": "·", "\t": "→", "\x7f": "␡"}
WHITESPACE_MARKS.update({chr(code): chr(0x2400 + code) for code in range(32) if chr(code) not in "\t\n"})   # ␍ ␋ …


def visible(token: str, breaks: bool = True) -> str:
    """A token as escaped HTML with its whitespace made visible: · for a space, → for a tab, ↵ for a newline (and,
    with `breaks`, a real line break after it, so the text keeps its lines), other control characters as their
    Unicode pictures (␍, ␋). An empty token shows as ∅."""
    parts = []
    for char in token:
        if char in WHITESPACE_MARKS:
            parts.append(f'<span class="lens-ws">{WHITESPACE_MARKS[char]}</span>')
        elif char == "\n":
            parts.append('<span class="lens-ws">↵</span>' + ("\n" if breaks else ""))
        else:
            parts.append(html.escape(char))
    return "".join(parts) or '<span class="lens-ws">∅</span>'


def _span(token: dict, color: str, tip: str) -> str:
    """A token in a line of text: the characters it completes (so Korean reads as Korean although SmolLM2 spends
    about three byte pieces on a syllable); a piece that only begins a character is a thin block of its colour,
    its bytes in the tip."""
    shown = token.get("text", token["token"])
    if not shown:
        return f'<span class="lens-tok lens-piece" style="background:{color}">\u200b<span class="lens-tip">{tip}</span></span>'
    return f'<span class="lens-tok" style="background:{color}">{visible(shown)}<span class="lens-tip">{tip}</span></span>'


def _line(tokens: list[dict], colors: list[str], tips: list[str]) -> str:
    return '<div class="lens-text">' + "".join(_span(tok, c, tip) for tok, c, tip in zip(tokens, colors, tips)) + "</div>"


def _tip_rows(top: list[dict], actual_id: int | None = None) -> str:
    return "".join(f'<span class="lens-tip-row{" lens-actual" if c["id"] == actual_id else ""}">'
                   f'{token_label(c)}  {percent(c["prob"])}</span>' for c in top)


def token_label(token: dict) -> str:
    """A token as a person reads it: beside a piece of a character, the characters it completes (된 ⟨9C⟩)."""
    completes = token.get("text", "")
    shown = visible(token["token"], breaks=False)
    if completes and completes != token["token"]:
        shown = f'{visible(completes, breaks=False)} <span class="lens-ws">{shown}</span>'
    return shown


def tip_head(token: dict) -> str:
    return f'<span class="lens-tip-head">{token_label(token)}</span>'


def token_tip(token: dict) -> str:
    """The hover box of one token: its probability, surprisal and rank, and the top-k the model expected there."""
    head = tip_head(token)
    if token.get("prob") is None:
        return head + html.escape(text("lens.ui.first_token"))
    facts = text("lens.ui.token_facts", prob=percent(token["prob"]), bits=number(token["surprisal"]),
                 rank=token["rank"])
    return (head + f'<span class="lens-tip-facts">{html.escape(facts)}</span>'
            + f'<span class="lens-tip-head">{html.escape(text("lens.ui.expected_here"))}</span>'
            + _tip_rows(token["top"], token["id"]))


def surprisal_legend() -> str:
    stops = "".join(f'<span class="lens-swatch" style="background:{surprisal_color(bits)}">{bits:g}</span>'
                    for bits in (0, 2, 4, 6, 8, 10, 12))
    return (f'<div class="lens-legend"><span>{html.escape(text("lens.ui.legend_surprisal"))}</span>{stops}'
            f'<span>{html.escape(text("lens.ui.legend_more", bits=int(MAX_BITS)))}</span></div>')


def signed_legend(message: str, scale: float, unit: str) -> str:
    stops = "".join(f'<span class="lens-swatch" style="background:{signed_color(v, scale)}">{v:+g}</span>'
                    for v in (-scale, -scale / 2, 0, scale / 2, scale))
    return (f'<div class="lens-legend"><span>{html.escape(message)}</span>{stops}'
            f'<span>{html.escape(unit)}</span></div>')


def _next_line(top: list[dict]) -> str:
    shown = " · ".join(f"<code>{token_label(c)}</code> {percent(c['prob'])}" for c in top)
    return f'<div class="lens-summary">{html.escape(text("lens.ui.next"))} {shown}</div>'


def _summary(n_tokens: int, mean: float | None, perplexity: float | None) -> str:
    return html.escape(text("lens.ui.summary", tokens=n_tokens, mean=number(mean), perplexity=number(perplexity)))


def lens_html(result: dict) -> str:
    """next_tokens' result: the text, each token coloured by its surprisal with its hover box, the legend, the
    perplexity and what the model expects after the last token."""
    tokens = result["tokens"]
    return (surprisal_legend()
            + f'<div class="lens-line-label">{html.escape(result["checkpoint"])}</div>'
            + f'<div class="lens-summary">{_summary(result["n_tokens"], result.get("mean_surprisal"), result.get("perplexity"))}</div>'
            + _line(tokens, [surprisal_color(tok["surprisal"]) for tok in tokens], [token_tip(tok) for tok in tokens])
            + _next_line(result["next"]))


def _as_single(token: dict, index: int) -> dict:
    """One checkpoint's view of a compared token, in next_tokens' shape."""
    return {"id": token["id"], "token": token["token"], "text": token.get("text", token["token"]),
            "prob": token["probs"][index], "surprisal": token["surprisals"][index], "rank": token["ranks"][index],
            "top": token["tops"][index]}


def delta_tip(token: dict, checkpoints: list[str]) -> str:
    head = tip_head(token)
    if token.get("delta") is None:
        return head + html.escape(text("lens.ui.first_token"))
    rows = "".join(f'<span class="lens-tip-row">{LETTERS[i]} · {html.escape(name)}: {percent(token["probs"][i])}</span>'
                   for i, name in enumerate(checkpoints))
    return head + rows + (f'<span class="lens-tip-row">'
                          f'{html.escape(text("lens.ui.delta_bits", delta=number(token["delta"], signed=True)))}</span>')


def compare_html(result: dict) -> str:
    """compare_next_tokens' result: one line per checkpoint coloured by its surprisal (with its perplexity), then a
    line coloured by the difference: green where the last checkpoint expects the token more than the first."""
    tokens, checkpoints = result["tokens"], result["checkpoints"]
    parts = [surprisal_legend()]
    for index, name in enumerate(checkpoints):
        singles = [_as_single(tok, index) for tok in tokens]
        parts.append(f'<div class="lens-line-label">{LETTERS[index]} · {html.escape(name)}</div>'
                     f'<div class="lens-summary">{_summary(len(tokens), result["mean_surprisals"][index], result["perplexities"][index])}</div>'
                     + _line(singles, [surprisal_color(s["surprisal"]) for s in singles], [token_tip(s) for s in singles]))
    last = len(checkpoints) - 1
    parts.append(f'<div class="lens-line-label">{html.escape(text("lens.ui.delta_line", first=LETTERS[0], last=LETTERS[last]))}</div>'
                 + signed_legend(text("lens.ui.legend_delta", first=LETTERS[0], last=LETTERS[last]), MAX_DELTA_BITS,
                                 text("lens.ui.bits"))
                 + _line(tokens, [signed_color(tok["delta"], MAX_DELTA_BITS) for tok in tokens],
                         [delta_tip(tok, checkpoints) for tok in tokens]))
    return "".join(parts)


def shown_result(result: dict) -> str:
    return compare_html(result) if "checkpoints" in result else lens_html(result)


# --- one position: its top-k as a table -----------------------------------------------------------------------------

def _bar(prob: float, width: int = 80) -> str:
    return f'<span class="lens-bar" style="width:{max(1, round(prob * width))}px"></span>'


def _table(headers: list[str], rows: list[str], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="lens-num">{html.escape(h)}</th>' if i in numeric else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(headers))
    return f'<table class="lens-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cells(cells: list[str], numeric: set[int] = frozenset(), css: str = "", classes: dict[int, str] | None = None) -> str:
    """A table row of HTML cells; `numeric` columns align right, `classes` gives a cell a class of its own."""
    def cell(index: int, content: str) -> str:
        names = " ".join(name for name in ("lens-num" if index in numeric else "", (classes or {}).get(index, "")) if name)
        return f'<td class="{names}">{content}</td>' if names else f"<td>{content}</td>"
    body = "".join(cell(i, c) for i, c in enumerate(cells))
    return f'<tr class="{css}">{body}</tr>' if css else f"<tr>{body}</tr>"


def most_telling_position(result: dict) -> int:
    """Where to open the picker (1-based): the most surprising token, or with two checkpoints the one whose
    probability changed the most; after the text when no token has a number."""
    tokens = result["tokens"]
    if "checkpoints" in result:
        scores = [abs(tok["delta"]) if tok.get("delta") is not None else -1 for tok in tokens]
    else:
        scores = [tok["surprisal"] if tok.get("surprisal") is not None else -1 for tok in tokens]
    best = max(range(len(tokens)), key=lambda i: scores[i], default=None)
    return len(tokens) + 1 if best is None or scores[best] < 0 else best + 1


def position_html(result: dict | None, position) -> str:
    """The top-k at one position (1-based; one past the last token: what comes after the text): for one checkpoint
    a table of rank, token and probability with the actual token marked; for several, their lists side by side and
    the actual token's probability under each, with the difference."""
    if not result:
        return f'<div class="lens-note">{html.escape(text("lens.ui.run_first"))}</div>'
    tokens = result["tokens"]
    index = min(max(int(position or 1), 1), len(tokens) + 1) - 1
    token = tokens[index] if index < len(tokens) else None
    if token is None:
        title = html.escape(text("lens.ui.after_text"))
    else:
        title = (html.escape(text("lens.ui.at_position", position=index + 1, count=len(tokens)))
                 + f' <code>{token_label(token)}</code>')
    rank, tok_col, prob_col = text("lens.ui.col.rank"), text("lens.ui.col.token"), text("lens.ui.col.prob")
    if "checkpoints" not in result:
        top = token["top"] if token else result["next"]
        rows = [_cells([str(place), f"<code>{token_label(c)}</code>", _bar(c["prob"]) + percent(c["prob"])],
                       {0}, "lens-actual" if token and c["id"] == token["id"] else "")
                for place, c in enumerate(top, start=1)]
        facts = ""
        if token and token.get("prob") is not None:
            facts = html.escape(text("lens.ui.token_facts", prob=percent(token["prob"]), bits=number(token["surprisal"]),
                                     rank=token["rank"]))
        elif token:
            facts = html.escape(text("lens.ui.first_token"))
        return (f'<div class="lens-note"><b>{title}</b> {facts}</div>'
                + (_table([rank, tok_col, prob_col], rows, {0}) if top else ""))
    checkpoints = result["checkpoints"]
    tops = token["tops"] if token else result["next"]
    facts = ""
    if token and token.get("delta") is not None:
        facts = " · ".join(f"{LETTERS[i]}: {percent(token['probs'][i])}" for i in range(len(checkpoints)))
        facts = html.escape(facts + " · " + text("lens.ui.delta_bits", delta=number(token["delta"], signed=True)))
    elif token:
        facts = html.escape(text("lens.ui.first_token"))
    headers = [rank] + [h for i, name in enumerate(checkpoints) for h in (f"{LETTERS[i]} · {name}", prob_col)]
    numeric = {0} | {2 + 2 * i for i in range(len(checkpoints))}
    rows = []
    for place in range(max((len(top) for top in tops), default=0)):
        cells = [str(place + 1)]
        for top in tops:
            if place < len(top):
                c = top[place]
                mark = ' style="font-weight:600"' if token and c["id"] == token["id"] else ""
                cells += [f"<code{mark}>{token_label(c)}</code>", percent(c["prob"])]
            else:
                cells += ["", ""]
        rows.append(_cells(cells, numeric))
    return f'<div class="lens-note"><b>{title}</b> {facts}</div>' + (_table(headers, rows, numeric) if rows else "")


# --- what DPO trains on ---------------------------------------------------------------------------------------------

def logratio_tip(token: dict) -> str:
    return (tip_head(token)
            + "".join(f'<span class="lens-tip-row">{html.escape(text(code, value=number(token[key], 3, signed)))}</span>'
                      for code, key, signed in (("lens.ui.tip_policy", "policy_logp", False),
                                                ("lens.ui.tip_reference", "reference_logp", False),
                                                ("lens.ui.tip_logratio", "logratio", True))))


def pair_html(result: dict) -> str:
    """pair_logratios' result: each answer's tokens coloured by log π/π_ref (green: the policy made the token more
    likely than the reference did), the sums per answer, the margin and the loss, and what they mean."""
    parts = [signed_legend(text("lens.ui.legend_logratio"), MAX_LOGRATIO, text("lens.ui.nats"))]
    rows = []
    for answer in ("chosen", "rejected"):
        side = result[answer]
        parts.append(f'<div class="lens-line-label">{html.escape(text(f"lens.ui.{answer}"))} · '
                     f'{html.escape(text("lens.ui.sum_logratio", value=number(side["logratio"], 3, True)))}</div>'
                     + _line(side["tokens"], [signed_color(tok["logratio"], MAX_LOGRATIO) for tok in side["tokens"]],
                             [logratio_tip(tok) for tok in side["tokens"]]))
        rows.append(_cells([html.escape(text(f"lens.ui.{answer}")), number(side["policy_logp"], 3),
                            number(side["reference_logp"], 3), number(side["logratio"], 3, True)], {1, 2, 3}))
    headers = [text("lens.ui.col.answer"), text("lens.ui.col.policy_logp"), text("lens.ui.col.reference_logp"),
               text("lens.ui.col.logratio")]
    verdict = "lens.ui.prefers_chosen" if result["prefers_chosen"] else "lens.ui.prefers_rejected"
    parts.append(_table(headers, rows, {1, 2, 3})
                 + f'<div class="lens-note"><b>{html.escape(text("lens.ui.margin_loss", beta=number(result["beta"], 3), margin=number(result["margin"], 4, True), loss=number(result["loss"], 4)))}</b> '
                 + f'{html.escape(text(verdict))}</div>'
                 + f'<div class="lens-note">{html.escape(text("lens.ui.explain_pair"))}</div>')
    if result["policy"] == result["reference"]:
        parts.append(f'<div class="lens-note">{html.escape(text("lens.ui.same_model"))}</div>')
    return "".join(parts)


# --- one token at a time --------------------------------------------------------------------------------------------

def _status(candidate: dict) -> str:
    return text({"top_k": "lens.ui.cut_top_k", "top_p": "lens.ui.cut_top_p"}.get(candidate["cut_by"], "lens.ui.kept"))


def step_html(result: dict, temperature: float) -> str:
    """A sampling step's candidates: raw probability, after temperature, kept or cut (greyed, with what cut it),
    renormalised; the picked one marked."""
    picked = result["picked"]
    headers = [text("lens.ui.col.candidate"), text("lens.ui.col.raw"), text("lens.ui.col.tempered"),
               text("lens.ui.col.status"), text("lens.ui.col.final")]
    rows = []
    for c in result["candidates"]:
        css = "lens-picked" if c["id"] == picked["id"] else ("" if c["kept"] else "lens-cut")
        mark = " ✓" if c["id"] == picked["id"] else ""
        rows.append(_cells([f"<code>{token_label(c)}</code>{mark}", _bar(c["prob"]) + percent(c["prob"]),
                            _bar(c["tempered"]) + percent(c["tempered"]), html.escape(_status(c)),
                            _bar(c["final"]) + percent(c["final"]) if c["kept"] else "0%"],
                           {1, 2, 4}, css, {3: "lens-status"}))
    notes = [text("lens.ui.picked", prob=percent(picked["final"])), text("lens.ui.kept_count", kept=result["kept_count"])]
    if float(temperature) == 0:
        notes.append(text("lens.ui.greedy"))
    if result["done"]:
        notes.append(text("lens.ui.done"))
    head = (f'<div class="lens-note">{html.escape(notes[0])} <code>{token_label(picked)}</code> · '
            + " · ".join(html.escape(n) for n in notes[1:]) + "</div>")
    return head + _table(headers, rows, {1, 2, 4})


def so_far_html(generated: str, last_token: str | None = None) -> str:
    """The text generated so far, its last token highlighted (when it is where the text ends)."""
    if not generated:
        return f'<div class="lens-so-far lens-ws">{html.escape(text("lens.ui.nothing_yet"))}</div>'
    if last_token and generated.endswith(last_token):
        body = html.escape(generated[:-len(last_token)]) + f'<span class="lens-last">{html.escape(last_token)}</span>'
    else:
        body = html.escape(generated)
    return f'<div class="lens-so-far">{body}</div>'


# --- the tab --------------------------------------------------------------------------------------------------------

def build(workspace: Path) -> None:
    checkpoints = api.list_checkpoints(workspace, "chat")
    datasets = [""] + dataset_names(workspace)
    trained = next((c for c in checkpoints if "/" in c and c.endswith("/final")), api.BUNDLED_MODEL_ID)
    html_box = {"css_template": CSS, "padding": False, "apply_default_css": False}   # our tables, not prose's
    with gr.Tab(t("tab.lens"), id="lens") as tab:
        gr.Markdown(t("lens.ui.intro"))
        with gr.Accordion(t("lens.ui.expected"), open=True):
            with gr.Row():
                checkpoint = gr.Dropdown(choices=checkpoints, value=api.BUNDLED_MODEL_ID, allow_custom_value=True,
                                         label=t("lens.ui.checkpoint"), scale=2)
                second = gr.Dropdown(choices=[""] + checkpoints, value="", allow_custom_value=True,
                                     label=t("lens.ui.second"), scale=2)
                top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label=t("lens.ui.top_k"), scale=1)
            text_box = gr.Textbox(label=t("lens.ui.text"), placeholder=t("lens.ui.text_placeholder"), lines=4,
                                  max_lines=12)
            with gr.Row():
                look = gr.Button(t("lens.ui.run"), variant="primary", scale=1)
                example = gr.Button(t("lens.ui.example"), scale=1)
                text_dataset = gr.Dropdown(choices=datasets, value="", allow_custom_value=True,
                                           label=t("lens.ui.dataset"), scale=2)
                text_row = gr.Number(value=1, precision=0, minimum=1, label=t("lens.ui.row"), scale=1)
                use_text_row = gr.Button(t("lens.ui.use_row"), scale=1)
            shown = gr.HTML(**html_box)
            position = gr.Slider(1, 2, value=1, step=1, label=t("lens.ui.position"), visible=False)
            at_position = gr.HTML(**html_box)
            looked = gr.State(None)      # the last result, for the position picker (server-side only)
        with gr.Accordion(t("lens.ui.dpo"), open=False):
            gr.Markdown(t("lens.ui.dpo_intro"))
            with gr.Row():
                policy = gr.Dropdown(choices=checkpoints, value=trained, allow_custom_value=True,
                                     label=t("lens.ui.policy"), scale=2)
                reference = gr.Dropdown(choices=checkpoints, value=api.BUNDLED_MODEL_ID, allow_custom_value=True,
                                        label=t("lens.ui.reference"), scale=2)
                beta = gr.Number(value=0.1, minimum=0, step=0.05, label=t("lens.ui.beta"), scale=1)
            with gr.Row():
                pair_dataset = gr.Dropdown(choices=datasets, value="", allow_custom_value=True,
                                           label=t("lens.ui.pair_dataset"), scale=2)
                pair_row = gr.Number(value=1, precision=0, minimum=1, label=t("lens.ui.row"), scale=1)
                use_pair_row = gr.Button(t("lens.ui.use_row"), scale=1)
            prompt = gr.Textbox(label=t("lens.ui.prompt"), lines=2)
            with gr.Row():
                chosen = gr.Textbox(label=t("lens.ui.chosen"), lines=4)
                rejected = gr.Textbox(label=t("lens.ui.rejected"), lines=4)
            compute = gr.Button(t("lens.ui.compute"), variant="primary")
            pair_shown = gr.HTML(**html_box)
        with gr.Accordion(t("lens.ui.steps"), open=False):
            gr.Markdown(t("lens.ui.steps_intro"))
            with gr.Row(equal_height=True):
                step_checkpoint = gr.Dropdown(choices=checkpoints, value=api.BUNDLED_MODEL_ID, allow_custom_value=True,
                                              label=t("lens.ui.checkpoint"), scale=3)
                chat = gr.Checkbox(value=True, label=t("lens.ui.chat_template"), scale=1)
            step_prompt = gr.Textbox(label=t("lens.ui.prompt"), lines=2, value="")
            with gr.Row():
                # Chat's defaults, so the first step already shows what a usual setting cuts.
                temperature = gr.Slider(0, MAX_TEMPERATURE, value=0.7, step=0.05, label=t("lens.ui.temperature"))
                sample_top_k = gr.Slider(0, min(100, MAX_SAMPLE_TOP_K), value=0, step=1, label=t("lens.ui.sample_top_k"))
                top_p = gr.Slider(0.01, 1.0, value=0.9, step=0.01, label=t("lens.ui.top_p"))
                seed = gr.Number(value=0, precision=0, minimum=0, label=t("lens.ui.seed"))
            with gr.Row():
                next_token = gr.Button(t("lens.ui.next_token"), variant="primary")
                ten_tokens = gr.Button(t("lens.ui.ten_tokens"))
                reset = gr.Button(t("lens.ui.reset"))
            so_far = gr.HTML(value=None, **html_box)
            candidates = gr.HTML(**html_box)
            generation = gr.State(None)  # {"context": [checkpoint, prompt, chat], "ids": [...], "done": bool}

    private = {"api_visibility": "private"}
    on(look.click, for_visitor(look_at), [shown, looked, position, at_position], checkpoint=checkpoint, second=second,
       text=text_box, top_k=top_k)
    on(position.change, pick_position, [at_position], show_progress="hidden", result=looked, position=position)
    example.click(shows_errors(example_text), None, [text_box], **private)
    on(use_text_row.click, for_visitor(text_of_row), [text_box], dataset=text_dataset, row=text_row)
    on(use_pair_row.click, for_visitor(pair_of_row), [prompt, chosen, rejected], dataset=pair_dataset, row=pair_row)
    on(compute.click, for_visitor(score_pair), [pair_shown], policy=policy, reference=reference, prompt=prompt,
       chosen=chosen, rejected=rejected, beta=beta)
    sampling = dict(checkpoint=step_checkpoint, prompt=step_prompt, chat=chat, temperature=temperature,
                    top_k=sample_top_k, top_p=top_p, seed=seed, state=generation)
    on(next_token.click, for_visitor(generate_steps, count=1), [so_far, candidates, generation], **sampling)
    on(ten_tokens.click, for_visitor(generate_steps, count=PAGE_STEPS), [so_far, candidates, generation], **sampling)
    reset.click(shows_errors(reset_generation), None, [so_far, candidates, generation], **private)
    # New checkpoints and datasets appear as runs and uploads make them: offer them whenever the tab is opened.
    pickers = [checkpoint, second, policy, reference, step_checkpoint, text_dataset, pair_dataset]
    tab.select(in_workspace(refresh_choices), None, pickers, **private)


def refresh_choices(workspace: Path):
    """Only the choices change (a pick being typed meanwhile stays), see studio/choices.py."""
    checkpoints = api.list_checkpoints(workspace, "chat")
    datasets = [""] + dataset_names(workspace)
    return (gr.update(choices=checkpoints), gr.update(choices=[""] + checkpoints), gr.update(choices=checkpoints),
            gr.update(choices=checkpoints), gr.update(choices=checkpoints), gr.update(choices=datasets),
            gr.update(choices=datasets))


def _whole(value):
    """A slider's or number box's 5.0 as 5; anything else as it came, for the lens's own checks to name."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def look_at(workspace: Path, checkpoint: str, second: str, text: str, top_k):
    """Run the lens on one checkpoint, or on two side by side when a different second one is picked; the picker
    opens at the most telling position."""
    first, other = (checkpoint or "").strip(), (second or "").strip()
    if other and other != first:
        result = api.compare_next_tokens(workspace, [first, other], text, _whole(top_k))
    else:
        result = api.next_tokens(workspace, first, text, _whole(top_k))
    picked = most_telling_position(result)
    return (shown_result(result), result,
            gr.update(minimum=1, maximum=len(result["tokens"]) + 1, value=picked, visible=True),
            position_html(result, picked))


def pick_position(result: dict | None, position) -> str:
    return position_html(result, position)


def example_text() -> str:
    return text("lens.ui.example_text")


def dataset_row(workspace: Path, dataset: str, row) -> tuple[str, list[str], list]:
    """A dataset's kind, columns and its `row`-th row (1-based)."""
    if not (dataset or "").strip():
        raise StudioError("lens.ui.pick_dataset")
    table = api.dataset_table(workspace, dataset.strip())
    rows = table["rows"]
    row = _whole(row)
    if not (isinstance(row, int) and 1 <= row <= len(rows)):
        raise StudioError("lens.ui.no_row", row=quote(row), name=quote(dataset), rows=len(rows))
    return table["kind"], table["columns"], rows[row - 1]


TEXT_COLUMNS = ("output", "chosen", "completion", "text", "prompt")   # the text a row holds, best first


def text_of_row(workspace: Path, dataset: str, row) -> str:
    """The answer of an instruction row, the chosen answer of a pair, or a prompt: the text the lens reads."""
    _, columns, cells = dataset_row(workspace, dataset, row)
    column = next((c for c in TEXT_COLUMNS if c in columns), columns[0])
    return cells[columns.index(column)]


def pair_of_row(workspace: Path, dataset: str, row) -> tuple[str, str, str]:
    kind, columns, cells = dataset_row(workspace, dataset, row)
    if not {"prompt", "chosen", "rejected"} <= set(columns):
        raise StudioError("lens.ui.not_pairs", name=quote(dataset), kind=kind)
    return tuple(cells[columns.index(c)] for c in ("prompt", "chosen", "rejected"))


def score_pair(workspace: Path, policy: str, reference: str, prompt: str, chosen: str, rejected: str, beta) -> str:
    return pair_html(api.pair_logratios(workspace, (policy or "").strip(), (reference or "").strip(), prompt, chosen,
                                        rejected, beta))


def generate_steps(workspace: Path, checkpoint: str, prompt: str, chat: bool, temperature, top_k, top_p, seed,
                   state: dict | None, count: int = 1):
    """`count` sampling steps, each shown as it comes. A generation goes on from the state while the checkpoint,
    prompt and chat setting are those it began with; any change starts a new one. Step n is seeded with seed + n, so
    the same seed gives the same text again after a Reset."""
    context = [(checkpoint or "").strip(), prompt, bool(chat)]
    seed = _whole(seed)
    state = state if state and state.get("context") == context else {"context": context, "ids": [], "done": False}
    if state["done"]:
        raise StudioError("lens.ui.finished")
    for _ in range(count):
        if len(state["ids"]) >= MAX_GENERATED_IDS:
            raise StudioError("lens.ui.long_generation", limit=MAX_GENERATED_IDS)
        step_seed = (seed + len(state["ids"])) % (MAX_SEED + 1) if isinstance(seed, int) else seed
        result = api.sample_step(workspace, context[0], prompt, state["ids"], temperature, _whole(top_k), top_p,
                                 step_seed, bool(chat), SHOWN_CANDIDATES)
        state = {"context": context, "ids": result["generated_ids"], "done": result["done"]}
        yield so_far_html(result["generated"], result["picked"]["token"]), step_html(result, temperature), state
        if result["done"]:
            return


def reset_generation():
    return so_far_html(""), "", None
