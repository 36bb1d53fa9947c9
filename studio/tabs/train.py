"""Train tab: a form derived from the run config, Start / Stop / Resume, and a live view of any run.

The live view is a `gr.Timer` that re-reads the selected run's directory; the page holds nothing the
disk does not, so a refresh or an app restart shows every run as it is.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import gradio as gr
import yaml

from pipelines import api
from pipelines.config import (RunConfig, TrainSettings, stage_defaults, stage_names, stage_sections,
                              stage_train_settings, top_fields)
from pipelines.errors import StudioError
from studio.charts import training_curves
from studio.choices import dataset_names
from studio.errors import shows_errors
from studio.form import field_component, section_fields, values_to_config
from studio.i18n import t

REFRESH_S = 1.5          # the selected run's status, chart and log
RUNS_REFRESH_S = 4.0     # the runs list and picker
LOG_LINES = 12           # as many as the log box shows, so its end is in view
MAIN_TRAIN_FIELDS = ("max_steps", "epochs", "learning_rate", "batch_size", "max_length", "save_steps")
SAMPLE_COLUMNS = ["step", "score", "prompt", "response"]
SAMPLES_SHOWN = 24       # the newest generations, newest first
RUN_COLUMNS = ["run_id", "status", "stage", "parent", "model", "dataset", "step", "max_steps", "checkpoints"]


def build(workspace: Path):
    defaults = RunConfig()
    keys: list[tuple[str, str]] = []
    inputs: list[gr.components.Component] = []

    def add(section: str, spec, component):
        keys.append((section, spec.name))
        inputs.append(component)
        return component

    top = {spec.name: spec for spec in section_fields_top()}
    with gr.Tab(t("tab.train"), id="train"):
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown(f"### {t('train.setup')}")
                add("", top["stage"], gr.Dropdown(choices=list(stage_names()), value=defaults.stage, label=t("stage"),
                                                  info=t("help.stage")))
                model = add("", top["model"], gr.Dropdown(choices=api.list_checkpoints(workspace), value=defaults.model,
                                                          allow_custom_value=True, label=t("model"), info=t("help.model")))
                dataset = add("", top["dataset"], gr.Dropdown(choices=dataset_names(workspace), value=defaults.dataset,
                                                              allow_custom_value=True, label=t("dataset"), info=t("help.dataset")))
                add("", top["eval_dataset"], gr.Dropdown(choices=[""] + dataset_names(workspace), value="",
                                                         allow_custom_value=True, label=t("eval_dataset"),
                                                         info=t("help.eval_dataset")))
                add("", top["name"], field_component("", top["name"]))
                with gr.Accordion(t("train.stage_settings"), open=True, visible=False) as stage_box:
                    stage_groups = {}
                    for section in stage_sections():
                        with gr.Group(visible=False) as stage_groups[section]:
                            for spec in section_fields(section):
                                add(section, spec, field_component(section, spec))
                with gr.Accordion(t("train.lora"), open=False):
                    for spec in section_fields("peft"):
                        add("peft", spec, field_component("peft", spec))
                main_fields = [s for s in section_fields("train") if s.name in MAIN_TRAIN_FIELDS]
                other_fields = [s for s in section_fields("train") if s.name not in MAIN_TRAIN_FIELDS]
                with gr.Accordion(t("train.hyper"), open=True):
                    for pair in (main_fields[i:i + 2] for i in range(0, len(main_fields), 2)):
                        with gr.Row():
                            for spec in pair:
                                add("train", spec, field_component("train", spec))
                with gr.Accordion(t("train.advanced"), open=False):
                    for pair in (other_fields[i:i + 2] for i in range(0, len(other_fields), 2)):
                        with gr.Row():
                            for spec in pair:
                                add("train", spec, field_component("train", spec))
                with gr.Accordion(t("train.config_preview"), open=False):
                    config_yaml = gr.Code(language="yaml", value=defaults.to_yaml(), interactive=False)
                start = gr.Button(t("train.start"), variant="primary", size="lg")
            with gr.Column(scale=3):
                with gr.Row():
                    ids = run_ids(workspace)
                    run = gr.Dropdown(choices=ids, value=ids[0] if ids else None, label=t("train.run"), scale=4)
                    stop = gr.Button(t("train.stop"), variant="stop", scale=1)
                    resume = gr.Button(t("train.resume"), scale=1)
                status = gr.Markdown(label=t("train.status"))
                with gr.Row(visible=False) as use_row:   # a rejection-sampling run's datasets, one click from training
                    sft_on_it = gr.Button(t("train.sft_on_it"), size="sm")
                    dpo_on_it = gr.Button(t("train.dpo_on_it"), size="sm")
                with gr.Row():
                    smooth = gr.Checkbox(value=True, label=t("train.smooth"), scale=1)
                    log_scale = gr.Checkbox(value=False, label=t("train.log_scale"), scale=1)
                chart = gr.Plot(label=t("train.chart"))
                samples = gr.Dataframe(headers=SAMPLE_COLUMNS, label=t("train.samples"), interactive=False, wrap=True,
                                       max_height=320, visible=False)
                probes = gr.Dataframe(label=t("train.probes"), interactive=False, wrap=True, max_height=360, visible=False)
                log = gr.Textbox(label=t("train.log"), lines=12, max_lines=12, autoscroll=True, interactive=False,
                                 elem_classes="run-log")
        gr.Markdown(f"### {t('train.runs')}")
        runs_table = gr.Dataframe(headers=RUN_COLUMNS, value=runs_rows(api.list_runs(workspace)), interactive=False, wrap=True)
        timer = gr.Timer(REFRESH_S)
        list_timer = gr.Timer(RUNS_REFRESH_S)

    private = {"api_visibility": "private"}
    by_key = dict(zip(keys, inputs))
    stage_outputs = [dataset, stage_box, *stage_groups.values(), *(by_key[("train", n)] for n in stage_train_settings())]
    by_key[("", "stage")].input(stage_changed, [by_key[("", "stage")]], stage_outputs, **private)
    for button, stage in ((sft_on_it, "sft"), (dpo_on_it, "dpo")):
        button.click(shows_errors(partial(train_on_output, workspace, stage)), [run],
                     [by_key[("", "stage")], *stage_outputs], **private)
    for component in inputs:
        component.change(partial(config_text, keys), inputs, [config_yaml], **private, show_progress="hidden")
    start.click(shows_errors(partial(start_clicked, workspace, keys)), inputs, [run], **private)
    stop.click(shows_errors(partial(stop_clicked, workspace)), [run], [status], **private)
    resume.click(shows_errors(partial(resume_clicked, workspace)), [run], [status], **private)
    view = partial(run_view, workspace)
    for trigger in (run.change, smooth.change, log_scale.change):
        trigger(view, [run, smooth, log_scale], [status, chart, log, samples, use_row, probes], **private)
    timer.tick(view, [run, smooth, log_scale], [status, chart, log, samples, use_row, probes], **private,
               show_progress="hidden")
    list_timer.tick(partial(refresh_runs, workspace), [run], [run, runs_table], **private, show_progress="hidden")
    return model, dataset, run, runs_table


def section_fields_top():
    return top_fields()


def stage_changed(stage: str):
    """A new stage brings its own dataset and defaults (a DPO learning rate is not an SFT one) and its settings."""
    defaults = stage_defaults(stage)
    return (gr.update(value=defaults["dataset"]), gr.update(visible=stage in stage_sections()),
            *(gr.update(visible=section == stage) for section in stage_sections()),
            *(gr.update(value=defaults["train"].get(name, getattr(TrainSettings, name)))
              for name in stage_train_settings()))


def config_text(keys, *values) -> str:
    """The YAML the form sends: every setting, with only the chosen stage's own section."""
    config = values_to_config(keys, list(values))
    config = {k: v for k, v in config.items() if k not in stage_sections() or k == config.get("stage")}
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def start_clicked(workspace: Path, keys, *values):
    run_id = api.start_run(workspace, config_text(keys, *values))
    gr.Info(f"Run {run_id} started.")
    return gr.update(choices=run_ids(workspace), value=run_id)


def stop_clicked(workspace: Path, run_id: str | None) -> str:
    if not run_id:
        return ""
    gr.Info(api.stop_run(workspace, run_id)["message"])
    return status_markdown(api.run_status(workspace, run_id))


def resume_clicked(workspace: Path, run_id: str | None) -> str:
    if not run_id:
        return ""
    gr.Info(api.resume_run(workspace, run_id)["message"])
    return status_markdown(api.run_status(workspace, run_id))


def run_ids(workspace: Path) -> list[str]:
    return [row["run_id"] for row in api.list_runs(workspace)]


def runs_rows(runs: list[dict]) -> list[list]:
    return [[row[c] if c != "checkpoints" else ", ".join(map(str, row[c])) for c in RUN_COLUMNS] for row in runs]


def refresh_runs(workspace: Path, selected: str | None):
    runs = api.list_runs(workspace)
    ids = [row["run_id"] for row in runs]
    value = selected if selected in ids else (ids[0] if ids else None)
    return gr.update(choices=ids, value=value), runs_rows(runs)


def run_view(workspace: Path, run_id: str | None, smooth: bool = True, log_scale: bool = False):
    hidden = gr.update(visible=False)
    if not run_id:
        return "", None, "", hidden, hidden, hidden
    try:
        status = api.run_status(workspace, run_id)
    except StudioError as exc:  # e.g. the run folder was deleted by hand
        return str(exc), None, "", hidden, hidden, hidden
    no_samples = hidden
    metrics = api.run_metrics(workspace, run_id)
    samples = api.run_samples(workspace, run_id)[-SAMPLES_SHOWN:]
    table = (gr.update(visible=True, value=[[round(s["score"], 3) if c == "score" else s.get(c, "") for c in SAMPLE_COLUMNS]
                                            for s in reversed(samples)])
             if samples else no_samples)
    return (status_markdown(status), training_curves(metrics, run_id, smooth=smooth, log_scale=log_scale),
            api.run_log(workspace, run_id, LOG_LINES), table, gr.update(visible=bool(status.get("datasets"))),
            probe_table(api.run_probes(workspace, run_id)))


def probe_table(grid: dict):
    """Probe prompts down, checkpoint steps across: how one answer changes as training goes on."""
    if not grid["rows"]:
        return gr.update(visible=False)
    headers = ["prompt", *(f"step {step}" for step in grid["steps"])]
    rows = [[row["prompt"], *(row["answers"].get(step, "") for step in grid["steps"])] for row in grid["rows"]]
    return gr.update(visible=True, value={"headers": headers, "data": rows})


def train_on_output(workspace: Path, stage: str, run_id: str | None):
    """Fill the form to train on what a rejection-sampling run kept: SFT on the best answers, DPO on the pairs."""
    datasets = api.run_status(workspace, run_id)["datasets"] if run_id else {}
    name = datasets.get("best" if stage == "sft" else "pairs")
    if not name:
        raise StudioError(f"Run {run_id!r} saved no {'best answers' if stage == 'sft' else 'preference pairs'} to train on.")
    dataset, *rest = stage_changed(stage)
    return (gr.update(value=stage), gr.update(value=name, choices=dataset_names(workspace)), *rest)


STATUS_ICONS = {"queued": "⏳", "running": "🟢", "stopping": "🟡", "completed": "✅", "failed": "❌", "stopped": "⏹️", "interrupted": "⚠️"}


def status_markdown(status: dict) -> str:
    """One line a person reads at a glance; words are kept to the translated state (a Markdown value
    can carry one i18n marker), the rest is numbers and symbols that read the same in both languages."""
    state = status.get("status") or "unknown"
    step, total = status.get("step") or 0, status.get("max_steps") or 0
    parts = [f"**{STATUS_ICONS.get(state, '')} {t('status.' + state) if state in STATUS_ICONS else state}**"]
    if status.get("queue_position"):   # the place in the run queue: 1 starts next
        parts[0] += f" #{status['queue_position']}"
    parts.append(f"{step} / {total or '?'}")
    if total:
        parts.append(f"{100 * step / total:.0f}%")
    if state == "running" and status.get("eta_s") is not None:
        eta = status["eta_s"]
        parts.append(f"⏱ {time.strftime('%M:%S', time.gmtime(eta))}" if eta < 3600 else f"⏱ {eta / 3600:.1f} h")
    last = status.get("last_metrics") or {}
    if isinstance(last.get("loss"), (int, float)):
        parts.append(f"loss {last['loss']:.4f}")
    if status.get("checkpoints"):
        parts.append(f"💾 {', '.join(map(str, status['checkpoints']))}")
    if status.get("datasets"):
        parts.append(f"🗂 {', '.join(status['datasets'].values())}")
    text = " · ".join(parts)
    if status.get("error"):
        text += f"\n\n> {status['error']}"
    text += "".join(f"\n\n⚠️ {warning}" for warning in status.get("warnings") or [])
    return text
