"""Train tab: a form derived from the run config, Start / Stop / Resume, and a live view of any run.

The live view is a `gr.Timer` that re-reads the selected run's directory; the page holds nothing the
disk does not, so a refresh or an app restart shows every run as it is.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr
import yaml

from pipelines import api
from pipelines.config import (RunConfig, TrainSettings, stage_defaults, stage_names, stage_sections,
                              stage_train_settings, top_fields)
from pipelines.errors import StudioError
from pipelines.messages import has_message, text
from studio.charts import training_curves
from studio.choices import checkpoint_choices, dataset_choices, dataset_names
from studio.form import field_component, form_settings, on, section_fields, values_to_config
from studio.i18n import t, time_left
from studio.rule_builder import rule_builder
from studio.tabs import runs_compare
from studio.identity import for_visitor, in_workspace

REFRESH_S = 1.5          # the selected run's status, chart and log
RUNS_REFRESH_S = 4.0     # the runs list and picker
LOG_LINES = 12           # as many as the log box shows, so its end is in view
MAIN_TRAIN_FIELDS = ("max_steps", "epochs", "learning_rate", "batch_size", "max_length", "save_steps")
SAMPLE_COLUMNS = ["step", "score", "prompt", "response"]
SAMPLE_WIDTHS = ["7%", "9%", "32%", "52%"]   # a step and a score are short; the answer is what one reads
SAMPLES_SHOWN = 24       # the newest generations, newest first
PROBE_STEPS_SHOWN = 4    # the first save and the newest ones: more columns would squeeze every answer unreadable
RUN_COLUMNS = ["run_id", "status", "stage", "parent", "model", "dataset", "step", "max_steps", "tokens_per_second",
               "checkpoints"]


def build(workspace: Path):
    defaults = RunConfig()
    form: dict[gr.components.Component, tuple[str, str]] = {}   # each input with its (section, field)

    def add(section: str, spec, component):
        form[component] = (section, spec.name)
        return component

    top = {spec.name: spec for spec in top_fields()}
    with gr.Tab(t("tab.train"), id="train") as tab:
        with gr.Row():
            with gr.Column(scale=2):
                gr.Markdown(f"### {t('train.setup')}")
                add("", top["stage"], gr.Dropdown(choices=list(stage_names()), value=defaults.stage, label=t("stage"),
                                                  info=t("help.stage")))
                model = add("", top["model"], gr.Dropdown(choices=api.list_checkpoints(workspace), value=defaults.model,
                                                          allow_custom_value=True, label=t("model"), info=t("help.model")))
                dataset = add("", top["dataset"], gr.Dropdown(choices=dataset_names(workspace), value=defaults.dataset,
                                                              allow_custom_value=True, label=t("dataset"), info=t("help.dataset")))
                eval_dataset = add("", top["eval_dataset"], gr.Dropdown(choices=[""] + dataset_names(workspace), value="",
                                                         allow_custom_value=True, label=t("eval_dataset"),
                                                         info=t("help.eval_dataset")))
                add("", top["name"], field_component("", top["name"]))
                with gr.Accordion(t("train.stage_settings"), open=True, visible=False) as stage_box:
                    stage_groups = {}
                    for section in stage_sections():
                        with gr.Group(visible=False) as stage_groups[section]:
                            for spec in section_fields(section):
                                component = add(section, spec, field_component(section, spec))
                                if spec.name == "rules":   # a stage that takes a reward: declarative rules
                                    rule_builder(section, component)
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
                                       max_height=420, visible=False, column_widths=SAMPLE_WIDTHS,
                                       elem_classes="reading-table")
                probes = gr.Dataframe(label=t("train.probes"), interactive=False, wrap=True, max_height=480, visible=False,
                                      elem_classes="reading-table")
                log = gr.Textbox(label=t("train.log"), lines=12, max_lines=12, autoscroll=True, interactive=False,
                                 elem_classes="run-log")
        gr.Markdown(f"### {t('train.runs')}")
        runs_table = gr.Dataframe(value=runs_table_value(api.list_runs(workspace)), interactive=False, wrap=True,
                                  elem_classes="reading-table")
        runs_compare.build(workspace)   # Runs side by side: curves, differing settings, final metrics
        timer = gr.Timer(REFRESH_S)
        list_timer = gr.Timer(RUNS_REFRESH_S)

    private = {"api_visibility": "private"}
    by_key = {key: component for component, key in form.items()}
    stage_outputs = [dataset, stage_box, *stage_groups.values(), *(by_key[("train", n)] for n in stage_train_settings())]
    by_key[("", "stage")].input(stage_changed, [by_key[("", "stage")]], stage_outputs, **private)
    for button, stage in ((sft_on_it, "sft"), (dpo_on_it, "dpo")):
        button.click(in_workspace(train_on_output, stage), [run],
                     [by_key[("", "stage")], *stage_outputs], **private)
    for component in form:
        component.change(partial(config_preview, form), set(form), [config_yaml], **private, show_progress="hidden")
    start.click(in_workspace(start_clicked, form), set(form), [run], **private)
    on(stop.click, for_visitor(stop_clicked), [status], run_id=run)
    on(resume.click, for_visitor(resume_clicked), [status], run_id=run)
    view = for_visitor(run_view)
    view_outputs = [status, chart, log, samples, use_row, probes]
    for trigger in (run.change, smooth.change, log_scale.change):
        on(trigger, view, view_outputs, run_id=run, smooth=smooth, log_scale=log_scale)
    on(timer.tick, view, view_outputs, show_progress="hidden", run_id=run, smooth=smooth, log_scale=log_scale)
    on(list_timer.tick, for_visitor(refresh_runs), [run, runs_table], show_progress="hidden", selected=run)
    # Datasets and checkpoints made since the page loaded (an upload, Compare's votes, a run that finished) are
    # offered as soon as one comes back to this tab or opens a list; only the choices change, never the pick.
    quiet = {**private, "show_progress": "hidden"}
    tab.select(in_workspace(refresh_pickers), None, [model, dataset, eval_dataset], **quiet)
    dataset.focus(in_workspace(dataset_choices), None, [dataset], **quiet)
    eval_dataset.focus(in_workspace(dataset_choices, optional=True), None, [eval_dataset], **quiet)
    model.focus(in_workspace(checkpoint_choices), None, [model], **quiet)
    return model, dataset, run, runs_table


def stage_changed(stage: str):
    """A new stage brings its own dataset and defaults (a DPO learning rate is not an SFT one) and its settings."""
    defaults = stage_defaults(stage)
    return (gr.update(value=defaults["dataset"]), gr.update(visible=stage in stage_sections()),
            *(gr.update(visible=section == stage) for section in stage_sections()),
            *(gr.update(value=defaults["train"].get(name, getattr(TrainSettings, name)))
              for name in stage_train_settings()))


def config_text(settings: dict[tuple[str, str], object]) -> str:
    """The YAML the form sends (settings by (section, field)): every setting, with only the chosen stage's own section."""
    config = values_to_config(settings)
    config = {k: v for k, v in config.items() if k not in stage_sections() or k == config.get("stage")}
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def config_preview(form: dict, values: dict) -> str:
    """The form's dict inputs ({component: value}) as the YAML Start sends."""
    return config_text(form_settings(form, values))


def start_clicked(workspace: Path, form: dict, values: dict):
    run_id = api.start_run(workspace, config_preview(form, values))
    gr.Info(text("train.started_run", run_id=run_id))
    return gr.update(choices=run_ids(workspace), value=run_id)


def use_model(model: str | None):
    """The Model tab's Use in Train: the training form takes the model, and says so."""
    model = (model or "").strip()
    if not model:
        raise StudioError("train.pick_model_first")
    gr.Info(text("train.uses_model", model=model))
    return gr.update(value=model)


def use_dataset(workspace: Path, dataset: str | None):
    """The Data tab's Use in Train: the training form takes the dataset (offered even if saved just now), and says so."""
    if not dataset:
        raise StudioError("train.pick_dataset_first")
    gr.Info(text("train.uses_dataset", dataset=dataset))
    return gr.update(choices=dataset_names(workspace), value=dataset)


def refresh_pickers(workspace: Path):
    """The model, dataset and eval dataset lists as the disk has them, for a visitor coming back to the tab."""
    return checkpoint_choices(workspace), dataset_choices(workspace), dataset_choices(workspace, optional=True)


def stop_clicked(workspace: Path, run_id: str | None) -> str:
    """Stop the picked run; the toast confirms what happened (cancelled while queued, or saving and stopping)."""
    if not run_id:
        return ""
    gr.Info(api.stop_run(workspace, run_id)["message"])
    return status_markdown(api.run_status(workspace, run_id))


def resume_clicked(workspace: Path, run_id: str | None) -> str:
    """Resume the picked run; the toast confirms from which checkpoint, and whether now or in its queue turn."""
    if not run_id:
        return ""
    gr.Info(api.resume_run(workspace, run_id)["message"])
    return status_markdown(api.run_status(workspace, run_id))


def run_ids(workspace: Path) -> list[str]:
    return [row["run_id"] for row in api.list_runs(workspace)]


def state_text(state: str | None) -> str:
    """A run's state in the visitor's language (an unknown one as it is)."""
    state = state or "unknown"
    return text(f"status.{state}") if has_message(f"status.{state}") else state


def runs_rows(runs: list[dict]) -> list[list]:
    def cell(row: dict, column: str):
        if column == "checkpoints":
            return ", ".join(map(str, row[column]))
        if column == "tokens_per_second":
            return tokens_per_second_text(row.get(column))
        return state_text(row[column]) if column == "status" else row[column]
    return [[cell(row, c) for c in RUN_COLUMNS] for row in runs]


def tokens_per_second_text(rate: float | None) -> str:
    """A run's mean tokens/s as a person reads it: whole tokens, one decimal below ten; blank before its first log."""
    if rate is None:
        return ""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def throughput_parts(status: dict) -> list[str]:
    """The run's mean tokens/s, and its latest MFU against the measured peak (pipelines/throughput.py)."""
    throughput, last = status.get("throughput") or {}, status.get("last_metrics") or {}
    parts = []
    if throughput.get("tokens_per_second"):
        parts.append(f"⚡ {text('train.tokens_per_second', rate=tokens_per_second_text(throughput['tokens_per_second']))}")
    if isinstance(last.get("mfu"), (int, float)) and throughput.get("peak_gflops"):
        share = f"{last['mfu']:.1%}" if last["mfu"] >= 0.001 else "<0.1%"
        parts.append(text("train.mfu", share=share, peak=f"{throughput['peak_gflops']:,.0f}", dtype=throughput["dtype"]))
    return parts


def runs_table_value(runs: list[dict]) -> dict:
    """The runs list with its headers in the visitor's language."""
    return {"headers": [text(f"train.col.{c}") for c in RUN_COLUMNS], "data": runs_rows(runs)}


def refresh_runs(workspace: Path, selected: str | None):
    runs = api.list_runs(workspace)
    ids = [row["run_id"] for row in runs]
    value = selected if selected in ids else (ids[0] if ids else None)
    return gr.update(choices=ids, value=value), runs_table_value(runs)


def run_view(workspace: Path, run_id: str | None, smooth: bool = True, log_scale: bool = False):
    hidden = gr.update(visible=False)
    if not run_id:
        return "", None, "", hidden, hidden, hidden
    try:
        status = api.run_status(workspace, run_id)
    except StudioError as exc:  # e.g. the run folder was deleted by hand
        return exc.text(), None, "", hidden, hidden, hidden
    metrics = api.run_metrics(workspace, run_id)
    return (status_markdown(status), training_curves(metrics, run_id, smooth=smooth, log_scale=log_scale),
            api.run_log(workspace, run_id, LOG_LINES), samples_table(api.run_samples(workspace, run_id)),
            gr.update(visible=bool(status.get("datasets"))), probe_table(api.run_probes(workspace, run_id)))


def samples_table(samples: list[dict]):
    """An RL run's newest generations, newest first, with headers in the visitor's language."""
    if not samples:
        return gr.update(visible=False)
    rows = [[round(s["score"], 3) if c == "score" else s.get(c, "") for c in SAMPLE_COLUMNS]
            for s in reversed(samples[-SAMPLES_SHOWN:])]
    return gr.update(visible=True, value={"headers": [text(f"train.col.{c}") for c in SAMPLE_COLUMNS], "data": rows},
                     column_widths=SAMPLE_WIDTHS)


def probe_table(grid: dict):
    """Probe prompts down, checkpoint steps across: how one answer changes as training goes on. The first save and
    the newest ones are shown (PROBE_STEPS_SHOWN), each wide enough to read; run_probes has every step."""
    if not grid["rows"]:
        return gr.update(visible=False)
    steps = list(grid["steps"])
    if len(steps) > PROBE_STEPS_SHOWN:
        steps = [steps[0], *steps[-(PROBE_STEPS_SHOWN - 1):]]
    headers = [text("train.col.prompt"), *(text("train.col.at_step", step=step) for step in steps)]
    rows = [[row["prompt"], *(row["answers"].get(step, "") for step in steps)] for row in grid["rows"]]
    answer_width = 76 / max(len(steps), 1)
    return gr.update(visible=True, value={"headers": headers, "data": rows},
                     column_widths=["24%", *(f"{answer_width:.0f}%" for _ in steps)])


def train_on_output(workspace: Path, stage: str, run_id: str | None):
    """Fill the form to train on what a rejection-sampling run kept: SFT on the best answers, DPO on the pairs."""
    datasets = api.run_status(workspace, run_id)["datasets"] if run_id else {}
    name = datasets.get("best" if stage == "sft" else "pairs")
    if not name:
        raise StudioError("train.no_best_answers" if stage == "sft" else "train.no_pairs", run_id=run_id or "")
    dataset, *rest = stage_changed(stage)
    return (gr.update(value=stage), gr.update(value=name, choices=dataset_names(workspace)), *rest)


STATUS_ICONS = {"queued": "⏳", "running": "🟢", "stopping": "🟡", "completed": "✅", "failed": "❌", "stopped": "⏹️", "interrupted": "⚠️"}


def status_markdown(status: dict) -> str:
    """One line a person reads at a glance, in the visitor's language."""
    state = status.get("status") or "unknown"
    step, total = status.get("step") or 0, status.get("max_steps") or 0
    parts = [f"**{STATUS_ICONS.get(state, '')} {state_text(state)}**"]
    if status.get("queue_position"):   # the place in the run queue: 1 starts next
        parts.append(text("train.queue_place", position=status["queue_position"]))
    parts.append(f"{step} / {total or '?'}")
    if total:
        parts.append(f"{100 * step / total:.0f}%")
    # Only a training run has a time left; a queued or stopping one shows none (a resumed run's old ETA included).
    if state == "running" and status.get("eta_s") is not None:
        parts.append(f"⏱ {time_left(status['eta_s'])}")
    last = status.get("last_metrics") or {}
    if isinstance(last.get("loss"), (int, float)):
        parts.append(text("train.loss", loss=last["loss"]))
    parts.extend(throughput_parts(status))
    if status.get("checkpoints"):
        parts.append(f"💾 {text('train.saved_steps', steps=', '.join(map(str, status['checkpoints'])))}")
    if status.get("datasets"):
        parts.append(f"🗂 {text('train.saved_datasets', names=', '.join(status['datasets'].values()))}")
    line = " · ".join(parts)
    if status.get("error"):
        line += f"\n\n> {status['error']}"
    line += "".join(f"\n\n⚠️ {warning}" for warning in status.get("warnings") or [])
    return line
