"""The stage registry: every training stage is one module of this package that declares itself as `STAGE = Stage(...)`.

A declaration says everything the rest of the studio needs to know about a stage — its settings section, the data it
trains on, its defaults, whether it takes a reward, what it makes, its own checks and its chart panels — so that the
config, the form, the CLI's help, validation, charts and the API are derived from here, and adding a stage is adding
one module (README, "Adding a stage"). Stage modules import only light things at their top (no torch, no
transformers): the studio reads these declarations without loading a model library. A stage's `run` is imported
only when its stage runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

DATA_KINDS = ("instruction", "preference", "unpaired", "prompt_only", "text")   # pipelines/data/store.py names them
OUTPUTS = ("chat_model", "reward_model", "datasets")


@dataclass(frozen=True)
class Stage:
    name: str                      # the config's `stage`, and the name of its settings section
    order: int                     # place on the road from a base model to an assistant: lists follow it
    data_kind: str                 # the rows it trains on (KTO takes preference pairs too, unpaired)
    defaults: dict                 # {"dataset": ..., "train": {...}}: what differs from the train settings' defaults
    settings: type | None = None   # the dataclass of its own section (`dpo: {beta: ...}`), if it has settings
    takes_reward: bool = False     # its section has `reward`: a reward checkpoint and/or a rule file scores its answers
    output: str = "chat_model"     # what final/ holds: a model that chats, a reward model, or (best-of-N) nothing
    rows_per_example: int = 1      # forward rows per dataset row: 2 where each row is a pair of answers
    probes_own_prompts: bool = False   # with no probe prompts named, probe a few of its dataset's: whether answers
                                       # change at all is what its curves do not tell (pipelines/probes.py)
    validate: Callable | None = None   # validate(config): checks that need neither model nor data; raises StudioError
    check_start: Callable | None = None   # check_start(config, rows) -> warnings, once the data is loaded
    warning_signs: Callable | None = None   # warning_signs(stage, metrics, rule_reward) -> {kind: sentence}
                                            # (pipelines/signals.py: preference_signs, rl_signs, …)
    panels: tuple = ()             # the chart panels of what it logs beyond the loss (pipelines/panels.py)
    run_module: str = ""           # the module whose run(context) trains it (declare() gives the declaring one)

    def __post_init__(self):
        if self.data_kind not in DATA_KINDS or self.output not in OUTPUTS:
            raise ValueError(f"stage {self.name}: data_kind must be one of {DATA_KINDS}, output one of {OUTPUTS}")

    @property
    def generates(self) -> bool:
        """Whether its checkpoints answer prompts (a reward model's only score them)."""
        return self.output != "reward_model"

    def run(self, context):
        """Train: the stage module's run(context), imported now (it is where torch and TRL come in)."""
        return importlib.import_module(self.run_module).run(context)


_registry: dict[str, Stage] = {}
_discovered = False


def register(stage: Stage) -> Stage:
    """Add a stage (the built-in ones register themselves; a test or a plugin may add its own)."""
    if not stage.run_module:
        raise ValueError(f"stage {stage.name}: say which module runs it (run_module)")
    _registry[stage.name] = stage
    return stage


def declare(module_name: str, **facts) -> Stage:
    """`STAGE = declare(__name__, name=..., ...)` in a stage module: registers it, run by that module."""
    return register(Stage(run_module=module_name, **facts))


def all_stages() -> list[Stage]:
    """Every registered stage, in road order."""
    _discover()
    return sorted(_registry.values(), key=lambda stage: (stage.order, stage.name))


def stage_names() -> tuple[str, ...]:
    return tuple(stage.name for stage in all_stages())


def get_stage(name: str) -> Stage | None:
    _discover()
    return _registry.get(name)


def unregister(name: str) -> None:
    _registry.pop(name, None)


def _discover() -> None:
    """Import every module of this package once; those that declare a STAGE have registered it."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def stage_runner(name: str):
    """The run(context) of a stage."""
    return get_stage(name).run
