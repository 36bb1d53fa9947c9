"""Road tab: "Try the road" walks SFT → DPO and SFT → reward model → PPO on a bundled sample with defaults
(pipelines/road.py), shows each step's run as it trains, and opens Compare with base, SFT, DPO and PPO side by side.

Like the Train tab it holds nothing the disk does not: a timer re-reads the picked road's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.errors import StudioError
from studio.errors import shows_errors
from studio.i18n import t

REFRESH_S = 3.0
STEP_COLUMNS = ["step", "stage", "run", "status", "progress", "eta"]
COMPARED = ("base", "sft", "dpo", "ppo")   # Compare's columns, in the order the road's story goes
LABELS = {"base": "base", "sft": "SFT", "dpo": "DPO", "ppo": "PPO"}


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
        steps = gr.Dataframe(headers=STEP_COLUMNS, interactive=False, wrap=True)
        compare = gr.Button(t("road.compare"), variant="primary", interactive=False)
        timer = gr.Timer(REFRESH_S)

    private = {"api_visibility": "private"}
    outputs = [road, status, steps, compare]
    start.click(shows_errors(partial(start_clicked, workspace)), [language], outputs, **private)
    stop.click(shows_errors(partial(stop_clicked, workspace)), [road], outputs, **private)
    again.click(shows_errors(partial(continue_clicked, workspace)), [road], outputs, **private)
    road.change(partial(view, workspace), [road], [status, steps, compare], **private)
    timer.tick(partial(view, workspace), [road], [status, steps, compare], **private, show_progress="hidden")
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
        raise StudioError("Pick a road first, or start one with Try the road.")
    return road_id


def _picked(workspace: Path, road_id: str):
    """The road picker listing every road with `road_id` picked, and that road's view."""
    roads = [row["road_id"] for row in api.list_roads(workspace)]
    return (gr.update(choices=roads, value=road_id), *view(workspace, road_id))


def view(workspace: Path, road_id: str | None):
    """Status line, the steps table and whether Compare can open, for the picked road."""
    if not road_id:
        return "", [], gr.update(interactive=False)
    try:
        report = api.road_status(workspace, road_id)
    except StudioError as exc:   # e.g. its folder was deleted by hand
        return str(exc), [], gr.update(interactive=False)
    rows = [[s["step"], s["stage"], s["run_id"] or "", s["status"], f"{s['progress']}/{s['max_steps']}" if s["run_id"] else "",
             f"{s['eta_s'] / 60:.1f} min" if s.get("eta_s") and s["status"] == "running" else ""] for s in report["steps"]]
    done = sum(s["status"] == "completed" for s in report["steps"])
    line = f"**{road_id}**: {report['status']} — {done} of {len(report['steps'])} steps done"
    if report.get("error"):
        line += f"\n\n❌ {report['error']}"
    can_compare = len(report["checkpoints"]) > 1   # base and at least the SFT model
    return line, rows, gr.update(interactive=can_compare)


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
            updates[label] = LABELS[names[index]]
    return updates


def compare_outputs(tabs: gr.Tabs, columns) -> list:
    return [tabs, columns.count, *columns.pickers, *columns.labels, columns.prompt, columns.eval_prompts]
