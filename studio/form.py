"""The training form, built from the run-config dataclasses so each setting is declared once.

Each field's type, default, choices, bounds and help come from `pipelines.config`; its label is the
i18n key `<section>.<field>`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import gradio as gr
import yaml

from pipelines.config import list_from_text, sections
from pipelines.errors import StudioError
from studio.errors import shows_errors
from studio.i18n import hosted_key, t


def field_component(section: str, spec: dataclasses.Field, default=None):
    """A Gradio input for one config field."""
    key = f"{section}.{spec.name}" if section else spec.name
    meta = spec.metadata
    declared = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default   # a list: a factory
    value = declared if default is None else default
    common = {"label": t(hosted_key(key)), "info": t(hosted_key(f"help.{key}")), "value": value}
    if meta.get("choices"):
        return gr.Dropdown(choices=list(meta["choices"]), **common)
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    if kind == "int":
        return gr.Number(precision=0, minimum=meta.get("minimum"), maximum=meta.get("maximum"), **common)
    if kind == "float":
        return gr.Number(minimum=meta.get("minimum"), maximum=meta.get("maximum"), step=_step(value), **common)
    if kind == "list":   # a stage's rules: YAML text, one rule a line (studio/rule_builder.py adds lines)
        common["value"] = yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=None) if value else ""
        return gr.Textbox(lines=3, max_lines=16, placeholder=t("form.rules_placeholder"), **common)
    return gr.Textbox(lines=3 if spec.name.endswith("prompts") else 1, **common)   # one prompt per line


def _step(value: float) -> float:
    """Arrow-key step of one unit in the value's leading digit (2e-4 steps by 1e-4)."""
    return 10 ** math.floor(math.log10(abs(value))) if value else 0.01


def section_fields(section: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(sections()[section]))


def _kind(section: str, name: str) -> str:
    spec = next((f for f in dataclasses.fields(sections()[section]) if f.name == name), None) if section in sections() else None
    return "" if spec is None else spec.type if isinstance(spec.type, str) else spec.type.__name__


def values_to_config(settings: dict[tuple[str, str], object]) -> dict:
    """Form values by (section, field) → the nested dict a RunConfig is made from."""
    config: dict = {}
    for (section, name), value in settings.items():
        if section and isinstance(value, str) and _kind(section, name) == "list":
            try:   # the config shows the list itself; text that is no list is left for Start to name
                value = list_from_text(value, f"{section}.{name}")
            except StudioError:
                pass
        if section:
            config.setdefault(section, {})[name] = value
        else:
            config[name] = value
    return config


def named(fn, **components):
    """A handler for Gradio's dict inputs (`inputs=set(components.values())`) that calls `fn` with one keyword
    argument per component: the handler's parameters and its inputs meet by name, never by position."""
    def handler(values: dict):
        return fn(**{name: values[component] for name, component in components.items()})

    if inspect.isgeneratorfunction(fn):   # a streaming handler stays one, for Gradio and for shows_errors
        def streaming(values: dict):
            yield from fn(**{name: values[component] for name, component in components.items()})
        handler = streaming
    handler.__name__ = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "handler")
    return handler


def on(event, fn, outputs, show_progress: str = "full", **components):
    """Wire `fn(**named values)` to `event` with dict inputs, as a private (UI-only) endpoint whose mistakes
    reach the visitor as one sentence in their language (shows_errors)."""
    return event(shows_errors(named(fn, **components)), inputs=set(components.values()), outputs=outputs,
                 api_visibility="private", show_progress=show_progress)


def form_settings(form: dict, values: dict) -> dict[tuple[str, str], object]:
    """The training form's dict inputs ({component: value}) by (section, field), the keys `form` gives its components."""
    return {form[component]: value for component, value in values.items() if component in form}
