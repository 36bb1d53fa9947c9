"""Road tab: "Try the road" walks SFT → DPO and SFT → reward model → PPO on a bundled sample with defaults
(pipelines/road.py), shows each step's run as it trains, and opens Compare with base, SFT, DPO and PPO side by side.

Like the Train tab it holds nothing the disk does not: a timer re-reads the picked road's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.errors import StudioError
from pipelines.messages import has_message, text
from studio.form import on
from studio.i18n import t, time_left
from studio.tabs.train import state_text
from studio.identity import for_visitor

REFRESH_S = 3.0
STEP_COLUMNS = ["step", "run", "status", "progress", "eta"]
STEP_WIDTHS = ["26%", "30%", "16%", "12%", "16%"]
COMPARED = ("base", "sft", "dpo", "ppo")   # Compare's columns, in the order the road's story goes
LABELS = {"sft": "SFT", "dpo": "DPO", "ppo": "PPO"}   # "base" is a word, in the visitor's language


@dataclass
class RoadTab:
    road: gr.Dropdown
    compare: gr.Button


def build(workspace: Path) -> RoadTab:
    roads = [row["road_id"] for row in api.list_roads(workspace)]
    with gr.Tab(t("tab.road"), id="road"):
        gr.Markdown(t("road.intro"))
        with gr.Row():
            language = gr.Radio([(t("road.english"), "en"), (t("road.korean"), "ko")], value="en",
                                label=t("road.language"), scale=2)
            start = gr.Button(t("road.start"), variant="primary", scale=1)
            stop = gr.Button(t("train.stop"), scale=1)
            again = gr.Button(t("road.continue"), scale=1)
        road = gr.Dropdown(choices=roads, value=roads[0] if roads else None, label=t("road.pick"))
        status = gr.Markdown()
        steps = gr.Dataframe(headers=STEP_COLUMNS, interactive=False, wrap=True, column_widths=STEP_WIDTHS,
                             elem_classes="reading-table")
        compare = gr.Button(t("road.compare"), variant="primary", interactive=False)
        timer = gr.Timer(REFRESH_S)

    outputs = [road, status, steps, compare]
    on(start.click, for_visitor(start_clicked), outputs, language=language)
    on(stop.click, for_visitor(stop_clicked), outputs, road_id=road)
    on(again.click, for_visitor(continue_clicked), outputs, road_id=road)
    on(road.change, for_visitor(view), [status, steps, compare], road_id=road)
    on(timer.tick, for_visitor(view), [status, steps, compare], show_progress="hidden", road_id=road)
    return RoadTab(road=road, compare=compare)


def refresh_roads(workspace: Path, selected: str | None):
    """The road picker as the disk has it: a new visitor sees every road, the newest picked."""
    roads = [row["road_id"] for row in api.list_roads(workspace)]
    return gr.update(choices=roads, value=selected if selected in roads else (roads[0] if roads else None))


def start_clicked(workspace: Path, language: str):
    return _picked(workspace, api.start_road(workspace, language))


def stop_clicked(workspace: Path, road_id: str | None):
    return _picked(workspace, api.stop_road(workspace, _required(road_id))["road_id"])


def continue_clicked(workspace: Path, road_id: str | None):
    return _picked(workspace, api.continue_road(workspace, _required(road_id))["road_id"])


def _required(road_id: str | None) -> str:
    if not road_id:
        raise StudioError("road.pick_first")
    return road_id


def _picked(workspace: Path, road_id: str):
    """The road picker listing every road with `road_id` picked, and that road's view."""
    roads = [row["road_id"] for row in api.list_roads(workspace)]
    return (gr.update(choices=roads, value=road_id), *view(workspace, road_id))


def view(workspace: Path, road_id: str | None):
    """Status line, the steps table and whether Compare can open, for the picked road."""
    if not road_id:
        return "", steps_table([]), gr.update(interactive=False)
    try:
        report = api.road_status(workspace, road_id)
    except StudioError as exc:   # e.g. its folder was deleted by hand
        return exc.text(), steps_table([]), gr.update(interactive=False)
    done = sum(s["status"] == "completed" for s in report["steps"])
    line = text("road.status_line", road_id=road_id, status=state_text(report["status"]), done=done,
                total=len(report["steps"]))
    rows = steps_table(report["steps"])
    if report.get("error"):
        line += f"\n\n❌ {report['error']}"
    can_compare = len(report["checkpoints"]) > 1   # base and at least the SFT model
    return line, rows, gr.update(interactive=can_compare)


def steps_table(steps: list[dict]):
    """The road's steps, one row each, with headers and states in the visitor's language."""
    def row(s: dict) -> list:
        name = text(f"road.step.{s['step']}") if has_message(f"road.step.{s['step']}") else s["step"]
        progress = f"{s['progress']} / {s['max_steps']}" if s["run_id"] else ""
        eta = time_left(s["eta_s"]) if s.get("eta_s") is not None and s["status"] == "running" else ""
        return [name, s["run_id"] or "", state_text(s["status"]), progress, eta]
    return gr.update(value={"headers": [text(f"road.col.{c}") for c in STEP_COLUMNS], "data": [row(s) for s in steps]},
                     column_widths=STEP_WIDTHS)


def compare_clicked(workspace: Path, tabs: gr.Tabs, columns, road_id: str | None) -> dict:
    """Compare with the road's checkpoints in columns (base, SFT, DPO, PPO as far as they completed), its first
    held-out prompt typed in and all of them ready for Evaluate; then the Compare tab itself."""
    report = api.road_status(workspace, _required(road_id))
    names = [n for n in COMPARED if n in report["checkpoints"]]
    choices = api.list_checkpoints(workspace)
    updates = {tabs: gr.Tabs(selected="compare"), columns.count: len(names),
               columns.prompt: report["prompts"][0] if report["prompts"] else "",
               columns.eval_prompts: "\n".join(report["prompts"])}
    for index, (picker, label) in enumerate(zip(columns.pickers, columns.labels)):
        if index < len(names):
            updates[picker] = gr.update(choices=choices, value=report["checkpoints"][names[index]])
            updates[label] = LABELS.get(names[index]) or text("road.label.base")
    return updates


def compare_outputs(tabs: gr.Tabs, columns) -> list:
    return [tabs, columns.count, *columns.pickers, *columns.labels, columns.prompt, columns.eval_prompts]
