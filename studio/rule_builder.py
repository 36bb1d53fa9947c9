"""A small rule builder under a stage's `rules` box (declarative rule rewards, pipelines/rl/rule_spec.py).

The box itself holds the rules as YAML, one rule a line, and is what the config takes; the builder only writes lines
into it: a kind, its value, per line, ignore case and a weight, then Add. Each added rule is checked as the config
will check it, so a mistake is one sentence at once, naming the rule's position.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import yaml

from pipelines.config import list_from_text
from pipelines.messages import text
from pipelines.rl.rule_spec import COUNT_KINDS, KINDS, LIST_KINDS, TRUE_KINDS, parse_rules
from studio.form import on
from studio.i18n import t

HINTS = {"regex": "rules.hint.regex", "language": "rules.hint.language",
         **{kind: "rules.hint.texts" for kind in LIST_KINDS}, **{kind: "rules.hint.count" for kind in COUNT_KINDS},
         **{kind: "rules.hint.flag" for kind in TRUE_KINDS}}


def rule_builder(section: str, rules_box: gr.Textbox) -> None:
    """The builder's row under `rules_box` (the rules field of stage `section`), wired to append to it."""
    gr.Markdown(t("rules.builder.title"))
    with gr.Row(equal_height=True):
        kind = gr.Dropdown(choices=list(KINDS), value="ends_with", label=t("rules.builder.kind"), scale=2, min_width=120)
        value = gr.Textbox(label=t("rules.builder.value"), placeholder=t("rules.hint.text"), scale=3, min_width=140)
    with gr.Row(equal_height=True):
        per_line = gr.Checkbox(label=t("rules.builder.per_line"), value=False, scale=1, min_width=80)
        ignore_case = gr.Checkbox(label=t("rules.builder.ignore_case"), value=False, scale=1, min_width=80)
        weight = gr.Number(value=1.0, minimum=-10, maximum=10, step=0.5, label=t("rules.builder.weight"), scale=1,
                           min_width=80)
        add = gr.Button(t("rules.builder.add"), size="sm", scale=1, min_width=80)
    on(kind.change, kind_hint, [value], show_progress="hidden", kind=kind)
    on(add.click, partial(added_rule, section), [rules_box], rules=rules_box, kind=kind, value=value, per_line=per_line,
       ignore_case=ignore_case, weight=weight)


def kind_hint(kind: str):
    """What the value box asks for, for this kind (a count kind wants a number, json_valid nothing)."""
    return gr.update(placeholder=text(HINTS.get(kind, "rules.hint.text")))


def rule_from_fields(kind: str, value: str | None, per_line: bool = False, ignore_case: bool = False,
                     weight: float | None = 1.0) -> dict:
    """One rule as the config writes it, from the builder's fields (the value as text)."""
    value = value or ""
    if kind in LIST_KINDS:
        items = [item.strip() for item in value.split("|") if item.strip()]
        parsed = items[0] if len(items) == 1 else items
    elif kind in COUNT_KINDS:
        try:
            parsed = int(value.strip()) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            parsed = value   # refused by the check, with the rule's position
    elif kind in TRUE_KINDS:
        parsed = True
    elif kind == "language":
        parsed = value.strip().lower()
    else:
        parsed = value if kind == "regex" else value.strip()
    rule = {kind: parsed}
    if per_line:
        rule["per_line"] = True
    if ignore_case:
        rule["ignore_case"] = True
    if weight is not None and weight != 1:
        rule["weight"] = weight
    return rule


def added_rule(section: str, rules: str | None, kind: str, value: str | None, per_line: bool, ignore_case: bool,
               weight: float | None) -> str:
    """The rules box with one more line, the rule checked first (the ones already there too)."""
    path = f"{section}.rules"
    rule = rule_from_fields(kind, value, per_line, ignore_case, weight)
    existing = list_from_text(rules, path)
    parse_rules([*existing, rule] if isinstance(existing, list) else existing, path)
    line = "- " + yaml.safe_dump(rule, allow_unicode=True, sort_keys=False, default_flow_style=True, width=10_000)
    gr.Info(text("rules.builder.added", n=len(existing) + 1))
    return ((rules or "").rstrip() + "\n" if (rules or "").strip() else "") + line
