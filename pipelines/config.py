"""The run config: one dataclass tree, saved as config.yaml, shared by the UI form, the CLI and the API.

Every field carries its help text (and, where it has them, its choices and bounds) once, in
`metadata`; the UI builds its form from these fields and the CLI documents them from here.
Nothing in this module imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipelines import stages
from pipelines.errors import StudioError, quote, shorten
from pipelines.paths import check_name
from pipelines.trackers import TRACKERS

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
MAX_RUN_NAME = 72
# Refused before parsing: a 50 MB config once took 49 s to parse and came back as a 50 MB message.
MAX_CONFIG_CHARS = 64 * 1024
MAX_CONFIG_DEPTH = 8        # a config is two levels deep (section: {setting: value}); YAML's composer recurses
MAX_STEPS = 1_000_000       # steps (and step intervals) beyond any run this app is for
MAX_SEED = 2**32 - 1        # the seeds numpy and torch both accept
MAX_TEMPERATURE = 4.0       # sampling hotter than this is noise, in training and in chat alike


def setting(default: Any, help: str, choices: tuple | None = None, minimum: float | None = None,
            exclusive_minimum: bool = False, maximum: float | None = None):
    """A config field with its help text, choices and bounds: the form, the CLI's help and validation read them."""
    metadata = {"help": help, "choices": choices, "minimum": minimum,
                "exclusive_minimum": exclusive_minimum, "maximum": maximum}
    return field(default=default, metadata=metadata)


@dataclass
class PeftSettings:
    method: str = setting("lora", "Full fine-tune, LoRA adapters, or QLoRA (LoRA on a 4-bit base; needs a CUDA GPU and bitsandbytes).",
                         choices=("lora", "qlora", "full"))
    r: int = setting(16, "LoRA rank: the width of the low-rank update. 8–64 is typical.", minimum=1, maximum=1024)
    alpha: int = setting(32, "LoRA alpha: the update is scaled by alpha / r. Twice the rank is a common choice.", minimum=1, maximum=4096)
    dropout: float = setting(0.05, "Dropout on the LoRA branch. On a CPU its random masks can take "
                                  "about a fifth of each step; 0 trains faster, with less regularisation.",
                           minimum=0.0, maximum=0.99)
    target_modules: str = setting("all-linear", "Which layers get adapters: 'all-linear', or a comma-separated list such as 'q_proj,v_proj'.")


@dataclass
class TrainSettings:
    max_steps: int = setting(60, "Optimizer steps to run; 0 means run for `epochs` instead.", minimum=0, maximum=MAX_STEPS)
    epochs: float = setting(3.0, "Passes over the dataset, used when max_steps is 0.", minimum=0, exclusive_minimum=True, maximum=1000)
    learning_rate: float = setting(2.0e-4, "Peak learning rate. LoRA: 1e-4–5e-4; full fine-tune: 1e-5–5e-5.", minimum=0, exclusive_minimum=True, maximum=1.0)
    lr_scheduler: str = setting("cosine", "How the learning rate changes after warm-up.", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = setting(0.05, "Share of the steps spent warming the learning rate up from 0.", minimum=0.0, maximum=0.5)
    batch_size: int = setting(4, "Rows per device per forward pass.", minimum=1, maximum=4096)
    grad_accum: int = setting(1, "Forward passes accumulated into one optimizer step (effective batch = batch_size × grad_accum × GPUs). PPO instead splits each of its minibatches into this many forwards, for memory.", minimum=1, maximum=1024)
    max_length: int = setting(512, "Longest tokenised row; longer rows are cut. Must not exceed the model's context.", minimum=8, maximum=1_048_576)
    logging_steps: int = setting(1, "Log metrics every this many steps.", minimum=1, maximum=MAX_STEPS)
    save_steps: int = setting(20, "Save a checkpoint every this many steps (one is also saved at the end and on stop).", minimum=1, maximum=MAX_STEPS)
    save_total_limit: int = setting(3, "Checkpoints kept: when a new one is saved the oldest goes, but never the one with the best eval loss (with an eval set); 0 keeps every one.", minimum=0, maximum=1000)
    seed: int = setting(42, "Random seed for data order and initialisation.", minimum=0, maximum=MAX_SEED)
    precision: str = setting("auto", "Numeric precision: auto = bf16 on a GPU that supports it and on a CPU that multiplies bf16 natively (measured at start: avx512_bf16 or AMX), else fp32 (a CPU that emulates bf16 is 2.5–5× slower in it).",
                            choices=("auto", "fp32", "bf16", "fp16"))
    gradient_checkpointing: str = setting("auto", "Recompute activations to save memory: auto = on only for models of 1B+ parameters on a GPU (it costs ~30% speed).",
                                         choices=("auto", "on", "off"))
    eval_steps: int = setting(10, "Evaluate on the eval dataset (when one is set) every this many steps.", minimum=1, maximum=MAX_STEPS)
    gpus: str = setting("", "The GPUs this run trains on, by CUDA number: 0, or 0,1 for one process per GPU (through accelerate). Runs given GPUs no other active run uses train side by side; empty: every GPU the app sees, in the queue's turn.")
    probe_prompts: str = setting("", "Prompts answered greedily at every checkpoint save, one per line: a prompt × step grid on the run page shows how answers change. Preference and RL runs that name none probe 4 prompts of their own dataset.")
    report_to: str = setting("none", "Also send every logged step to an experiment tracker: trackio or tensorboard (files in the run folder), wandb (needs `wandb login`, or WANDB_MODE=offline) or mlflow. Needs the tracker's package: pip install 'alignment-studio[trackers]'.",
                             choices=TRACKERS)



@dataclass
class RunConfig:
    """A run's settings: the top-level ones, the shared `peft` and `train` sections, and the section of each stage
    that has settings of its own (`config.dpo`), declared by that stage (pipelines/stages/)."""
    name: str = setting("", "Optional run name; the run id is derived from it.")
    stage: str = setting("sft", "Which alignment stage to run.")
    model: str = setting(BUNDLED_MODEL_ID, "Bundled model id, Hugging Face Hub id (org/name), local path, or a checkpoint id of an earlier run.")
    dataset: str = setting("alpaca-en-sample", "A dataset name (bundled sample or saved in the workspace), or a file path.")
    eval_dataset: str = setting("", "Optional held-out dataset of the same kind, evaluated every eval_steps (the Data tab's split makes one).")
    peft: PeftSettings = field(default_factory=PeftSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    stage_settings: dict = field(default_factory=dict, repr=False)   # {stage name: its settings}; read as config.<stage>

    def __post_init__(self):
        for stage in stages.all_stages():
            if stage.settings and stage.name not in self.stage_settings:
                self.stage_settings[stage.name] = stage.settings()

    def __getattr__(self, name: str):
        """`config.dpo`: the settings section of a stage (only called for names that are not fields)."""
        stage = stages.get_stage(name) if not name.startswith("_") and name != "stage_settings" else None
        if stage is None or stage.settings is None or "stage_settings" not in self.__dict__:
            raise AttributeError(f"RunConfig has no setting {name!r}")
        return self.stage_settings.setdefault(name, stage.settings())

    def to_dict(self) -> dict:
        """Every setting, but only the stage section of this run's stage (the others would only mislead)."""
        data = {spec.name: getattr(self, spec.name) for spec in top_fields()}
        data.update(peft=dataclasses.asdict(self.peft), train=dataclasses.asdict(self.train))
        if self.stage in self.stage_settings:
            data[self.stage] = dataclasses.asdict(self.stage_settings[self.stage])
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SHARED_SECTIONS = ("peft", "train")


def top_fields() -> list[dataclasses.Field]:
    """The settings written at the top of a config (name, stage, model, dataset, eval_dataset)."""
    return [spec for spec in dataclasses.fields(RunConfig) if spec.name not in (*SHARED_SECTIONS, "stage_settings")]


def sections() -> dict[str, type]:
    """Every section of settings, with its dataclass: peft, train, then each stage's own, in road order."""
    return {"peft": PeftSettings, "train": TrainSettings,
            **{stage.name: stage.settings for stage in stages.all_stages() if stage.settings}}


def stage_sections() -> tuple[str, ...]:
    """The sections only their own stage reads."""
    return tuple(name for name in sections() if name not in SHARED_SECTIONS)


def stage_names() -> tuple[str, ...]:
    return stages.stage_names()


def stage_defaults(stage: str) -> dict:
    """{"dataset": ..., "train": {...}} for `stage` (SFT's for an unknown stage). The defaults that differ by stage
    are chosen so that the bundled model on a CPU with LoRA visibly changes within minutes (TRL's own, such as DPO's
    learning rate of 1e-6, are meant for full fine-tunes of large models); a setting written in the config wins."""
    declared = stages.get_stage(stage) or stages.get_stage("sft")
    return declared.defaults


def describe_settings(section: str) -> list[dict]:
    """Each setting of a section ("" for the top level) as plain data: name, type, default, help (in the visitor's
    language), choices and bounds — for the CLI's help and the API's list_stages."""
    from pipelines.messages import catalog, current_language

    fields = top_fields() if not section else dataclasses.fields(sections()[section])
    described = []
    for spec in fields:
        key = f"help.{section}.{spec.name}" if section else f"help.{spec.name}"
        meta = spec.metadata
        described.append({"name": spec.name, "type": spec.type if isinstance(spec.type, str) else spec.type.__name__,
                          "default": spec.default_factory() if spec.default is dataclasses.MISSING else spec.default,
                          "help": catalog(current_language()).get(key) or meta["help"],
                          "choices": list(meta["choices"]) if meta.get("choices") else None,
                          "minimum": meta.get("minimum"), "maximum": meta.get("maximum")})
    return described


def stage_train_settings() -> tuple[str, ...]:
    """The train settings whose defaults differ by stage (those any stage's defaults name), in a stable order."""
    return tuple(dict.fromkeys(name for stage in stages.all_stages() for name in stage.defaults["train"]))


def reward_source(scored: str = "rewards"):
    """The `reward` setting of each stage that scores answers (PPO, GRPO, RLOO, best-of-N): one help text for all."""
    return setting("", f"Where {scored} come from: a reward run's checkpoint (my-rm/final), a Python file in the "
                       "workspace defining reward(prompts, completions) -> list of floats (rules.py), or both joined by '+'. "
                       "May be empty when `rules` are given.")


def reward_rules():
    """The `rules` setting beside each `reward`: declarative rule rewards (pipelines/rl/rule_spec.py), a list."""
    return field(default_factory=list, metadata={
        "help": "Rules that score each answer without code (0 to 1, times the rule's weight), added to the reward; "
                "alone, they are the reward. Build them below, or write a YAML list, one rule a line. Kinds: "
                "contains(_any/_all), not_contains, starts_with, ends_with, regex, min/max_words, min/max_chars, "
                "min/max_lines, json_valid, language (en, ko), no_repeats.",
        "choices": None, "minimum": None, "exclusive_minimum": False, "maximum": None})


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases, which a config never needs (337 bytes of nested aliases expand to
    gigabytes), and without deep nesting. Both are refused before anything is expanded."""
    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise StudioError("config.yaml_alias")
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                raise StudioError("config.too_deep", depth=MAX_CONFIG_DEPTH)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_config_text(text: str) -> RunConfig:
    """Parse YAML (or JSON, which is YAML) text into a validated RunConfig."""
    if text is not None and not isinstance(text, str):
        raise StudioError("config.not_text")
    if text and len(text) > MAX_CONFIG_CHARS:
        raise StudioError("config.too_long", length=len(text), limit=MAX_CONFIG_CHARS)
    try:
        data = yaml.load(text, Loader=_ConfigLoader) if text and text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = shorten(str(getattr(exc, "problem", None) or exc))   # a tag or character it quotes is input
        raise StudioError("config.not_yaml_at" if mark else "config.not_yaml", line=mark.line + 1 if mark else 0,
                          problem=problem) from None
    except ValueError:   # a value YAML parses but Python cannot build: an integer of 5000 digits, a 13th month
        raise StudioError("config.unreadable_value") from None
    if not isinstance(data, dict):
        raise StudioError("config.not_mapping")
    return config_from_dict(data)


def config_from_dict(data: dict) -> RunConfig:
    """Build a RunConfig from plain data, coercing types, then validate it."""
    top = {spec.name: spec for spec in top_fields()}
    known = {**top, **sections()}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise StudioError("config.unknown_setting", setting=quote(unknown[0]), known=", ".join(known))
    data = _with_stage_defaults(data)
    kwargs: dict[str, Any] = {"stage_settings": {}}
    for key, value in data.items():
        if key in SHARED_SECTIONS:
            kwargs[key] = _section_from_dict(key, known[key], value or {})
        elif key in known and key not in top:
            kwargs["stage_settings"][key] = _section_from_dict(key, known[key], value or {})
        else:
            kwargs[key] = _coerce(key, top[key], value)
    config = RunConfig(**kwargs)
    validate(config)
    return config


def _with_stage_defaults(data: dict) -> dict:
    """Fill in the stage's own defaults for what the config leaves out."""
    defaults = stage_defaults(str(data.get("stage") or "sft"))
    merged = {**data}
    if "dataset" not in merged:
        merged["dataset"] = defaults["dataset"]
    train = merged.get("train")
    if train is None or isinstance(train, dict):
        merged["train"] = {**defaults["train"], **(train or {})}
    return merged


def _section_from_dict(section: str, cls: type, data: Any):
    if not isinstance(data, dict):
        raise StudioError("config.section_not_mapping", section=section)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise StudioError("config.unknown_section_setting", setting=quote(f"{section}.{unknown[0]}"), section=section,
                          known=", ".join(known))
    return cls(**{k: _coerce(f"{section}.{k}", known[k], v) for k, v in data.items()})


def _coerce(path: str, spec: dataclasses.Field, value: Any) -> Any:
    """Turn YAML/JSON/UI values into the field's type (YAML reads `2e-4` as a string; the UI sends 4.0 for 4)."""
    kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
    try:
        if kind == "int":   # int(float("1e400")) and float(10**400) raise OverflowError
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind == "str":
            if isinstance(value, bool) and {"on", "off"} <= set(spec.metadata.get("choices") or ()):
                return "on" if value else "off"   # YAML 1.1 reads a bare on / off as true / false
            return "" if value is None else str(value)
        if kind == "list" and (value is None or isinstance(value, str)):   # the form's rules box holds YAML text
            return list_from_text(value, path)
    except (TypeError, ValueError, OverflowError):
        raise StudioError("config.not_whole" if kind == "int" else "config.not_finite", path=path,
                          value=quote(value)) from None
    return value


def list_from_text(value: str | None, path: str) -> Any:
    """A list setting written as YAML or JSON text (the form's rules box, one rule a line): the list; one mapping
    alone is a list of one. What is not a list is left for the setting's own check to name."""
    if not value or not value.strip():
        return []
    if len(value) > MAX_CONFIG_CHARS:
        raise StudioError("config.too_long", length=len(value), limit=MAX_CONFIG_CHARS)
    try:
        parsed = yaml.load(value, Loader=_ConfigLoader)
    except (yaml.YAMLError, ValueError):
        raise StudioError("config.not_yaml_list", path=path) from None
    return [parsed] if isinstance(parsed, dict) else [] if parsed is None else parsed


GPU_LIST = re.compile(r"\d{1,2}(,\d{1,2}){0,15}")


def validate(config: RunConfig) -> None:
    """Check everything that can be checked without the model or the data; raise StudioError on the first problem.
    The shared checks are here; each stage adds its own (its declaration's `validate`)."""
    stage = stages.get_stage(config.stage)
    if stage is None:
        raise StudioError("config.unknown_stage", stage=quote(config.stage), stages=", ".join(stage_names()))
    if config.name:
        check_name(config.name, "run name")
        if len(config.name) > MAX_RUN_NAME:  # room for the "-2" suffix a repeated name gets
            raise StudioError("config.long_run_name", length=len(config.name), limit=MAX_RUN_NAME)
    if not config.model.strip():
        raise StudioError("config.no_model")
    if not config.dataset.strip():
        raise StudioError("config.no_dataset")
    gpus = config.train.gpus
    if gpus and (not GPU_LIST.fullmatch(gpus) or len(set(gpus.split(","))) < len(gpus.split(","))):
        raise StudioError("config.bad_gpus", gpus=quote(gpus))
    if config.train.logging_steps > config.train.save_steps:
        raise StudioError("config.logging_after_save")
    for section_name, section in (("", config), ("peft", config.peft), ("train", config.train),
                                  *config.stage_settings.items()):
        for spec in dataclasses.fields(section):
            if section is config and spec.name not in {f.name for f in top_fields()}:
                continue
            _check_bounds(f"{section_name}.{spec.name}".lstrip("."), spec, getattr(section, spec.name))
    if stage.takes_reward:   # declarative rules: checked (regexes compiled) before anything is written
        from pipelines.rl.rule_spec import parse_rules
        parse_rules(getattr(config, config.stage).rules, f"{config.stage}.rules")
    if stage.validate:
        stage.validate(config)


def _check_bounds(path: str, spec: dataclasses.Field, value: Any) -> None:
    meta = spec.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise StudioError("config.not_a_choice", path=path, choices=", ".join(map(str, meta["choices"])), value=quote(value))
    if isinstance(value, float) and not math.isfinite(value):   # inf passes `> 0`, NaN passes `<= maximum`
        raise StudioError("config.not_finite", path=path, value=quote(value))
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    if minimum is not None:
        if meta.get("exclusive_minimum") and not value > minimum:
            raise StudioError("config.not_above", path=path, minimum=minimum, value=quote(value))
        if not value >= minimum:
            raise StudioError("config.below_minimum", path=path, minimum=minimum, value=quote(value))
    if maximum is not None and value > maximum:
        raise StudioError("config.above_maximum", path=path, maximum=maximum, value=quote(value))
