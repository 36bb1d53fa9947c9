"""Training stages. Each module exposes `run(context)`; modules are imported only when their stage runs."""

from __future__ import annotations

import importlib

STAGE_MODULES = {"sft": "pipelines.stages.sft"}


def stage_runner(stage: str):
    return importlib.import_module(STAGE_MODULES[stage]).run
