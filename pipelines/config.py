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

from pipelines.errors import StudioError, quote, shorten
from pipelines.paths import check_name

# Every stage of the pipeline, in the order a user meets them; the names are part of the config format.
STAGES = ("sft", "reward", "dpo", "kto", "orpo", "ppo", "grpo", "rloo", "rejection_sampling")

BUNDLED_MODEL_ID = "smollm2-135m-instruct"
MAX_RUN_NAME = 72
# Refused before parsing: a 50 MB config once took 49 s to parse and came back as a 50 MB message.
MAX_CONFIG_CHARS = 64 * 1024
MAX_CONFIG_DEPTH = 8        # a config is two levels deep (section: {setting: value}); YAML's composer recurses
MAX_STEPS = 1_000_000       # steps (and step intervals) beyond any run this app is for
MAX_SEED = 2**32 - 1        # the seeds numpy and torch both accept
MAX_TEMPERATURE = 4.0       # sampling hotter than this is noise, in training and in chat alike


def _field(default: Any, help: str, choices: tuple | None = None, minimum: float | None = None,
            exclusive_minimum: bool = False, maximum: float | None = None):
    metadata = {"help": help, "choices": choices, "minimum": minimum,
                "exclusive_minimum": exclusive_minimum, "maximum": maximum}
    return field(default=default, metadata=metadata)


@dataclass
class PeftSettings:
    method: str = _field("lora", "Full fine-tune, LoRA adapters, or QLoRA (LoRA on a 4-bit base; needs a CUDA GPU and bitsandbytes).",
                         choices=("lora", "qlora", "full"))
    r: int = _field(16, "LoRA rank: the width of the low-rank update. 8–64 is typical.", minimum=1, maximum=1024)
    alpha: int = _field(32, "LoRA alpha: the update is scaled by alpha / r. Twice the rank is a common choice.", minimum=1, maximum=4096)
    dropout: float = _field(0.05, "Dropout on the LoRA branch.", minimum=0.0, maximum=0.99)
    target_modules: str = _field("all-linear", "Which layers get adapters: 'all-linear', or a comma-separated list such as 'q_proj,v_proj'.")


@dataclass
class TrainSettings:
    max_steps: int = _field(60, "Optimizer steps to run; 0 means run for `epochs` instead.", minimum=0, maximum=MAX_STEPS)
    epochs: float = _field(3.0, "Passes over the dataset, used when max_steps is 0.", minimum=0, exclusive_minimum=True, maximum=1000)
    learning_rate: float = _field(2.0e-4, "Peak learning rate. LoRA: 1e-4–5e-4; full fine-tune: 1e-5–5e-5.", minimum=0, exclusive_minimum=True, maximum=1.0)
    lr_scheduler: str = _field("cosine", "How the learning rate changes after warm-up.", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = _field(0.05, "Share of the steps spent warming the learning rate up from 0.", minimum=0.0, maximum=0.5)
    batch_size: int = _field(4, "Rows per device per forward pass.", minimum=1, maximum=4096)
    grad_accum: int = _field(1, "Forward passes accumulated into one optimizer step (effective batch = batch_size × grad_accum × GPUs). PPO instead splits each of its minibatches into this many forwards, for memory.", minimum=1, maximum=1024)
    max_length: int = _field(512, "Longest tokenised row; longer rows are cut. Must not exceed the model's context.", minimum=8, maximum=1_048_576)
    logging_steps: int = _field(1, "Log metrics every this many steps.", minimum=1, maximum=MAX_STEPS)
    save_steps: int = _field(20, "Save a checkpoint every this many steps (one is also saved at the end and on stop).", minimum=1, maximum=MAX_STEPS)
    save_total_limit: int = _field(3, "Checkpoints kept: when a new one is saved the oldest goes, but never the one with the best eval loss (with an eval set); 0 keeps every one.", minimum=0, maximum=1000)
    seed: int = _field(42, "Random seed for data order and initialisation.", minimum=0, maximum=MAX_SEED)
    precision: str = _field("auto", "Numeric precision: auto = bf16 on a GPU that supports it, fp32 on CPU (bf16 on CPU is 2.5–5× slower).",
                            choices=("auto", "fp32", "bf16", "fp16"))
    gradient_checkpointing: str = _field("auto", "Recompute activations to save memory: auto = on only for models of 1B+ parameters on a GPU (it costs ~30% speed).",
                                         choices=("auto", "on", "off"))
    eval_steps: int = _field(10, "Evaluate on the eval dataset (when one is set) every this many steps.", minimum=1, maximum=MAX_STEPS)
    gpus: str = _field("", "The GPUs this run trains on, by CUDA number: 0, or 0,1 for one process per GPU (through accelerate). Runs given GPUs no other active run uses train side by side; empty: every GPU the app sees, in the queue's turn.")
    probe_prompts: str = _field("", "Prompts answered greedily at every checkpoint save, one per line: a prompt × step grid on the run page shows how answers change. Preference and RL runs that name none probe 4 prompts of their own dataset.")


# TRL 1.16's DPO losses (DPOConfig.loss_type), but for 'sft', which is not a preference loss on its own.
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


@dataclass
class RewardSettings:
    center_rewards: float = _field(0.01, "Pulls rewards toward a mean of 0 (TRL's center_rewards_coefficient), so scores stay comparable across prompts; 0 turns it off.",
                                   minimum=0.0, maximum=10.0)


@dataclass
class DPOSettings:
    beta: float = _field(0.1, "How far the policy may move from the reference: lower lets it drift further, higher keeps it close (0.01–0.5).",
                         minimum=0, exclusive_minimum=True, maximum=100.0)
    loss_type: str = _field("sigmoid", "The DPO loss: sigmoid (the paper's), ipo, hinge, robust (noisy labels), and the other variants TRL offers.",
                            choices=DPO_LOSS_TYPES)
    label_smoothing: float = _field(0.0, "Assumed share of flipped preference labels (robust, exo_pair, aot); 0 trusts every label.",
                                    minimum=0.0, maximum=0.49)
    sft_weight: float = _field(1.0, "Weight of an SFT term (the chosen answers' negative log-likelihood, as in RPO) beside the preference loss: it makes the chosen answers themselves likelier, so greedy answers change sooner; 0 turns it off.",
                               minimum=0.0, maximum=10.0)


@dataclass
class KTOSettings:
    beta: float = _field(0.1, "How far the policy may move from the reference (as DPO's beta).", minimum=0, exclusive_minimum=True, maximum=100.0)
    loss_type: str = _field("kto", "kto (the paper's) or apo_zero_unpaired.", choices=("kto", "apo_zero_unpaired"))
    desirable_weight: float = _field(1.0, "Weight of the loss on desirable (label true) answers.", minimum=0, exclusive_minimum=True, maximum=100.0)
    undesirable_weight: float = _field(1.0, "Weight of the loss on undesirable (label false) answers.", minimum=0, exclusive_minimum=True, maximum=100.0)


@dataclass
class PPOSettings:
    reward: str = _field("", "Where rewards come from: a reward run's checkpoint (my-rm/final), a Python file in the workspace defining reward(prompts, completions) -> list of floats (rules.py), or both joined by '+'.")
    kl_coef: float = _field(0.05, "Weight of the per-token KL penalty to the reference (the SFT model): the guard against reward hacking.", minimum=0.0, maximum=100.0)
    kl_target: float = _field(0.0, "0 keeps kl_coef fixed; above 0 adapts it so the KL per response tracks this target (Ziegler et al. 2019).", minimum=0.0, maximum=1000.0)
    kl_horizon: int = _field(10000, "How fast the adaptive kl_coef moves: by at most 20% × train.batch_size ÷ kl_horizon per update, so kl_horizon must be at least train.batch_size. The paper's 10000 barely moves β in a short run; a few times train.batch_size moves it every update.",
                             minimum=1, maximum=10 * MAX_STEPS)
    kl_estimator: str = _field("k1", "How per-token KL is estimated: k1 = log-ratio (unbiased), k2 = half its square, k3 = Schulman's non-negative estimator.",
                               choices=("k1", "k2", "k3"))
    ppo_epochs: int = _field(4, "Passes over each batch of rollouts.", minimum=1, maximum=32)
    minibatches: int = _field(2, "Minibatches per pass (train.batch_size must divide evenly).", minimum=1, maximum=4096)
    response_length: int = _field(48, "Longest generated answer, in tokens.", minimum=1, maximum=2048)
    temperature: float = _field(0.8, "Sampling temperature of the rollouts.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    clip_range: float = _field(0.2, "PPO's ε: how far the probability ratio may move per update.", minimum=0, exclusive_minimum=True, maximum=1.0)
    clip_range_value: float = _field(0.2, "The same clip for the value head's predictions.", minimum=0, exclusive_minimum=True, maximum=100.0)
    vf_coef: float = _field(0.1, "Weight of the value loss beside the policy loss (they share the backbone).", minimum=0.0, maximum=100.0)
    gamma: float = _field(1.0, "Discount over response tokens.", minimum=0.0, maximum=1.0)
    lam: float = _field(0.95, "GAE's λ: bias (0) against variance (1) of the advantages.", minimum=0.0, maximum=1.0)
    missing_eos_penalty: float = _field(0.0, "Subtracted from the score of an answer cut off before its end-of-turn token; 0 turns it off.", minimum=0.0, maximum=100.0)


@dataclass
class SampledRLSettings:
    """What GRPO and RLOO share: several answers per prompt, each judged against the others of its group."""
    reward: str = _field("", "Where rewards come from: a reward run's checkpoint (my-rm/final), a Python file in the workspace defining reward(prompts, completions) -> list of floats (rules.py), or both joined by '+'.")
    num_generations: int = _field(4, "Answers sampled per prompt; each is compared with the others of its prompt (train.batch_size must be a multiple).",
                                  minimum=2, maximum=64)
    response_length: int = _field(48, "Longest generated answer, in tokens.", minimum=1, maximum=4096)
    temperature: float = _field(1.0, "Sampling temperature of the answers.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    beta: float = _field(0.04, "Weight of the KL penalty to the reference, the model the run starts from (with LoRA: the adapter disabled); 0 drops the reference.", minimum=0.0, maximum=100.0)


@dataclass
class GRPOSettings(SampledRLSettings):
    loss_type: str = _field("dapo", "How token losses are averaged: dapo (TRL's default, no length bias), grpo (the paper's), dr_grpo, bnpo.",
                            choices=("dapo", "grpo", "dr_grpo", "bnpo"))


@dataclass
class RLOOSettings(SampledRLSettings):
    pass


@dataclass
class RejectionSamplingSettings:
    reward: str = _field("", "Where scores come from: a reward run's checkpoint (my-rm/final), a Python file in the workspace defining reward(prompts, completions) -> list of floats (rules.py), or both joined by '+'.")
    num_samples: int = _field(4, "Answers generated per prompt (the N of best-of-N).", minimum=2, maximum=64)
    response_length: int = _field(96, "Longest generated answer, in tokens.", minimum=1, maximum=4096)
    temperature: float = _field(0.8, "Sampling temperature: high enough that the N answers differ.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    keep: str = _field("best_and_pairs", "best: an SFT dataset of each prompt's best answer; best_and_pairs: also a preference dataset of best over worst.",
                       choices=("best", "best_and_pairs"))


@dataclass
class ORPOSettings:
    beta: float = _field(0.1, "Weight of the odds-ratio preference term beside the SFT loss (the paper's lambda).",
                         minimum=0, exclusive_minimum=True, maximum=100.0)


@dataclass
class RunConfig:
    name: str = _field("", "Optional run name; the run id is derived from it.")
    stage: str = _field("sft", "Which alignment stage to run.", choices=STAGES)
    model: str = _field(BUNDLED_MODEL_ID, "Bundled model id, Hugging Face Hub id (org/name), local path, or a checkpoint id of an earlier run.")
    dataset: str = _field("alpaca-en-sample", "A dataset name (bundled sample or saved in the workspace), or a file path.")
    eval_dataset: str = _field("", "Optional held-out dataset of the same kind, evaluated every eval_steps (the Data tab's split makes one).")
    peft: PeftSettings = field(default_factory=PeftSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    kto: KTOSettings = field(default_factory=KTOSettings)
    orpo: ORPOSettings = field(default_factory=ORPOSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    rloo: RLOOSettings = field(default_factory=RLOOSettings)
    rejection_sampling: RejectionSamplingSettings = field(default_factory=RejectionSamplingSettings)

    def to_dict(self) -> dict:
        """Every setting, but only the stage section of this run's stage (the others would only mislead)."""
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if k not in STAGE_SECTIONS or k == self.stage}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SECTIONS = {"peft": PeftSettings, "train": TrainSettings, "reward": RewardSettings, "dpo": DPOSettings,
            "kto": KTOSettings, "orpo": ORPOSettings, "ppo": PPOSettings, "grpo": GRPOSettings, "rloo": RLOOSettings,
            "rejection_sampling": RejectionSamplingSettings}
STAGE_SECTIONS = ("reward", "dpo", "kto", "orpo", "ppo", "grpo", "rloo", "rejection_sampling")   # a section of settings that only its own stage reads

# The kind of rows each stage trains on (pipelines/data/store.py names them). KTO also takes preference pairs,
# unpaired into one desirable and one undesirable row each.
STAGE_DATA_KIND = {"sft": "instruction", "reward": "preference", "dpo": "preference", "kto": "unpaired",
                   "orpo": "preference", "ppo": "prompt_only", "grpo": "prompt_only", "rloo": "prompt_only",
                   "rejection_sampling": "prompt_only"}

# Defaults that differ by stage, chosen so that the bundled model on a CPU with LoRA visibly changes within
# minutes (TRL's own defaults, such as DPO's learning rate of 1e-6, are meant for full fine-tunes of large
# models and would change nothing here). A setting written in the config always wins.
STAGE_DEFAULTS = {
    "sft": {"dataset": "alpaca-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 60, "save_steps": 20}},
    "reward": {"dataset": "preference-en-sample", "train": {"learning_rate": 1.0e-4, "max_steps": 40, "save_steps": 20}},
    # DPO: at 5e-5 a behaviour carried only by the chosen answers (a sign-off, an opener) was ranked right but
    # never reached greedy answers in 40 steps; 2e-4 with the SFT term (dpo.sft_weight 1) taught each one
    # (bench/preference_behaviours.py).
    "dpo": {"dataset": "preference-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 40, "save_steps": 20}},
    "kto": {"dataset": "preference-en-sample", "train": {"learning_rate": 5.0e-5, "max_steps": 40, "save_steps": 20}},
    "orpo": {"dataset": "preference-en-sample", "train": {"learning_rate": 1.0e-4, "max_steps": 40, "save_steps": 20}},
    "ppo": {"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
    "grpo": {"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
    "rloo": {"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
    # max_steps counts batches of prompts here (0 = every prompt); nothing is trained, so there is no learning rate to tune.
    "rejection_sampling": {"dataset": "prompts-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 0, "save_steps": 20}},
}


def stage_defaults(stage: str) -> dict:
    """{"dataset": ..., "train": {...}} for `stage` (SFT's for a stage without its own)."""
    return STAGE_DEFAULTS.get(stage, STAGE_DEFAULTS["sft"])


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases, which a config never needs (337 bytes of nested aliases expand to
    gigabytes), and without deep nesting. Both are refused before anything is expanded."""
    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise StudioError("The config uses a YAML anchor or alias (& or *); write each setting out instead.")
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                raise StudioError(f"The config nests values more than {MAX_CONFIG_DEPTH} levels deep; a config is "
                                  "settings, and sections of settings (`train: {max_steps: 30}`).")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_config_text(text: str) -> RunConfig:
    """Parse YAML (or JSON, which is YAML) text into a validated RunConfig."""
    if text is not None and not isinstance(text, str):
        raise StudioError("The config must be YAML or JSON text, for example `stage: sft`.")
    if text and len(text) > MAX_CONFIG_CHARS:
        raise StudioError(f"The config is {len(text)} characters long; a config has at most {MAX_CONFIG_CHARS}.")
    try:
        data = yaml.load(text, Loader=_ConfigLoader) if text and text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = shorten(str(getattr(exc, "problem", None) or exc))   # a tag or character it quotes is input
        raise StudioError(f"The config is not valid YAML or JSON{where}: {problem}.") from None
    except ValueError:   # a value YAML parses but Python cannot build: an integer of 5000 digits, a 13th month
        raise StudioError("The config holds a value that cannot be read (a number thousands of digits long, or a "
                          "date that does not exist); correct it.") from None
    if not isinstance(data, dict):
        raise StudioError("The config must be a mapping of settings (for example `stage: sft`), not a list or a single value.")
    return config_from_dict(data)


def config_from_dict(data: dict) -> RunConfig:
    """Build a RunConfig from plain data, coercing types, then validate it."""
    top = {f.name: f for f in dataclasses.fields(RunConfig)}
    unknown = [k for k in data if k not in top]
    if unknown:
        raise StudioError(f"Unknown setting {quote(unknown[0])}; known settings are: {', '.join(top)}.")
    data = _with_stage_defaults(data)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            kwargs[key] = _section_from_dict(key, SECTIONS[key], value or {})
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
        raise StudioError(f"`{section}` must be a mapping of settings, for example `{section}: {{...}}`.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise StudioError(f"Unknown setting {quote(f'{section}.{unknown[0]}')}; known {section} settings are: {', '.join(known)}.")
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
    except (TypeError, ValueError, OverflowError):
        raise StudioError("config.not_whole" if kind == "int" else "config.not_finite", path=path,
                          value=quote(value)) from None
    return value


GPU_LIST = re.compile(r"\d{1,2}(,\d{1,2}){0,15}")


def validate(config: RunConfig) -> None:
    """Check everything that can be checked without the model or the data; raise StudioError on the first problem."""
    if config.stage not in STAGES:
        raise StudioError("config.unknown_stage", stage=quote(config.stage), stages=", ".join(STAGES))
    if config.name:
        check_name(config.name, "run name")
        if len(config.name) > MAX_RUN_NAME:  # room for the "-2" suffix a repeated name gets
            raise StudioError(f"The run name is {len(config.name)} characters; use at most {MAX_RUN_NAME}.")
    if not config.model.strip():
        raise StudioError("No model chosen: set `model` to the bundled model, a Hub id, a local path or a checkpoint.")
    if not config.dataset.strip():
        raise StudioError("No dataset chosen: set `dataset` to a sample, a saved dataset or a file path.")
    if config.stage == "dpo" and config.dpo.loss_type == "exo_pair" and config.dpo.label_smoothing <= 0:
        raise StudioError("The exo_pair loss needs dpo.label_smoothing above 0 (the EXO paper uses 1e-3).")
    gpus = config.train.gpus
    if gpus and (not GPU_LIST.fullmatch(gpus) or len(set(gpus.split(","))) < len(gpus.split(","))):
        raise StudioError(f"train.gpus {quote(config.train.gpus)} is not a list of GPU numbers such as 0 or 0,1.")
    if config.train.logging_steps > config.train.save_steps:
        raise StudioError("train.logging_steps must not exceed train.save_steps: a NaN loss must be seen before a "
                          "checkpoint is saved from the weights that produced it.")
    if config.stage == "ppo" and config.train.batch_size % config.ppo.minibatches:
        raise StudioError(f"train.batch_size {config.train.batch_size} does not split into ppo.minibatches "
                          f"{config.ppo.minibatches}; make the batch size a multiple of it.")
    if config.stage == "ppo" and (config.train.batch_size // config.ppo.minibatches) % config.train.grad_accum:
        raise StudioError(f"A PPO minibatch of {config.train.batch_size // config.ppo.minibatches} rollouts (train.batch_size "
                          f"÷ ppo.minibatches) does not split into train.grad_accum {config.train.grad_accum} equal "
                          "parts; pick a grad_accum that divides it.")
    if config.stage == "ppo" and config.ppo.kl_target > 0 and config.ppo.kl_horizon < config.train.batch_size:
        raise StudioError(f"ppo.kl_horizon {config.ppo.kl_horizon} is below train.batch_size {config.train.batch_size}: "
                          "the adaptive β could then change by more than 20% in one update, even below 0; raise it.")
    if config.stage in ("grpo", "rloo"):
        group = getattr(config, config.stage).num_generations
        if config.train.batch_size % group:
            raise StudioError(f"train.batch_size {config.train.batch_size} must be a multiple of {config.stage}.num_generations "
                              f"{group}: a batch holds whole groups of answers to one prompt.")
    if config.stage == "reward" and config.peft.method == "qlora":
        raise StudioError("QLoRA is not available for the reward stage; use LoRA or a full fine-tune.")
    for section_name, section in (("", config), *((name, getattr(config, name)) for name in SECTIONS)):
        for spec in dataclasses.fields(section):
            if spec.name in SECTIONS:
                continue
            _check_bounds(f"{section_name}.{spec.name}".lstrip("."), spec, getattr(section, spec.name))


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
