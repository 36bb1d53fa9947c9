"""Training stages. Each module exposes `run(context)`; modules are imported only when their stage runs."""

from __future__ import annotations

import importlib

STAGE_MODULES = {"sft": "pipelines.stages.sft", "reward": "pipelines.stages.reward", "dpo": "pipelines.stages.dpo",
                 "kto": "pipelines.stages.kto", "orpo": "pipelines.stages.orpo", "ppo": "pipelines.stages.ppo",
                 "grpo": "pipelines.stages.grpo", "rloo": "pipelines.stages.rloo",
                 "rejection_sampling": "pipelines.stages.rejection_sampling"}


def stage_runner(stage: str):
    return importlib.import_module(STAGE_MODULES[stage]).run
