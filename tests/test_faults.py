"""Faults injected for real: a learning rate that makes the loss NaN between two logged steps, a disk that fills (a
3 MB tmpfs as the workspace, when we are root), a trainer killed with SIGKILL on that full disk, a reward file that
prints without end, and a completed run asked to train again. Each ends in one true sentence and costs no
checkpoint, no final/ and no app."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines import api, run_files, runs
from pipelines.errors import StudioError
from pipelines.run_files import checkpoint_steps, read_jsonl, read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import REPO_ROOT, TINY_ROWS, tiny_config, wait_for, write_jsonl


def _all_finite(folder) -> bool:
    return all(torch.isfinite(t).all() for f in folder.glob("*.safetensors") for t in load_file(f).values())


def _temp_files(folder) -> list:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# 9. Every record of metrics.jsonl reaches the chart.

PAIRS = [{"prompt": q, "chosen": f"{a} Hope this helps!", "rejected": f"{a.split('.')[0]}, whatever."}
         for q, a in [("Say hi", "Hi there."), ("Add 2 and 3", "It is 5."), ("Capital of France?", "Paris."),
                      ("Name a color", "Blue.")]]


def test_every_line_of_a_reward_runs_metrics_reaches_run_metrics_and_the_chart(tiny_model, workspace):
    from studio.charts import training_curves

    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    config = tiny_config(tiny_model, max_steps=6, save_steps=3).replace("stage: sft", "stage: reward")
    run_dir = api.prepare_run(workspace, config.replace("tiny.jsonl", "pairs.jsonl"))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    metrics = api.run_metrics(workspace, run_dir.name)
    assert metrics == read_jsonl(run_dir / "metrics.jsonl"), "every line, in the order it was logged"
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6], "the training loss of the save steps too"
    assert [m["step"] for m in metrics if "length_correlation" in m] == [3, 6]
    figure = training_curves(metrics)
    assert [len(t.x) for t in figure.data if t.name == "length_correlation"] == [2]
    assert max(max(t.x) for t in figure.data if t.name == "loss") == 6


def test_a_resume_drops_the_abandoned_branch_and_keeps_every_record_of_a_step(workspace):
    run_dir = workspace / "r"
    run_dir.mkdir()
    for record in ({"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0}, {"step": 2, "length_correlation": 0.1},
                   {"step": 3, "loss": 1.0}, {"resumed_from": 2}, {"step": 3, "loss": 0.5}):
        run_files.append_jsonl(run_dir / "metrics.jsonl", record)
    assert read_metrics(run_dir) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0},
                                     {"step": 2, "length_correlation": 0.1}, {"step": 3, "loss": 0.5}]

