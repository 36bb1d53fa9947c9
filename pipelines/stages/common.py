"""What every stage shares: the run context, device-aware precision, model loading with LoRA / QLoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipelines import run_files
from pipelines.accelerators import describe as describe_accelerators, liger_args, use_fast_attention
from pipelines.config import RunConfig
from pipelines.errors import StudioError
from pipelines.models import (ModelSource, auto_precision, best_device, load_model, load_tokenizer, resolve_model,
                              trust_remote_code)
from pipelines.trackers import report_to_args

GRADIENT_CHECKPOINTING_MIN_PARAMS = 1_000_000_000


@dataclass
class RunContext:
    config: RunConfig
    run_dir: Path
    workspace: Path
    staging_dir: Path                 # the trainer's output_dir; complete checkpoints move to run_dir/checkpoints
    resume_from: Path | None          # a complete checkpoint to continue from
    callbacks: list


class SavesModel(Protocol):
    """What a stage's `run(context)` returns where its registry entry makes a model (output "chat_model" or
    "reward_model"): train.py's save_final writes final/ through these two methods. A TRL Trainer is one (returned
    by train_and_finish), PPO's runner another. A stage whose output is "datasets" returns None."""

    def is_world_process_zero(self) -> bool: ...

    def save_model(self, folder: str) -> None: ...


def precision_args(config: RunConfig, device: str) -> dict:
    """The Trainer's bf16/fp16 flags for the run's precision ("auto": pipelines/models.auto_precision)."""
    choice = config.train.precision
    if choice == "auto":
        choice = auto_precision(device)
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def check_hardware(config: RunConfig, device: str, source: ModelSource | None = None) -> None:
    """Precision and quantisation this machine (or this model) cannot train with: the one check, made before a run
    starts (pipelines/api.py) and again where the policy loads, in case the run moved to another machine."""
    import importlib.util

    if config.peft.method == "qlora":
        if device != "cuda":
            raise StudioError("stage.qlora_needs_cuda")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise StudioError("stage.qlora_needs_bitsandbytes")
        if source is not None and source.adapters:   # 4-bit weights cannot take an earlier adapter merged into them
            raise StudioError("stage.qlora_on_adapters")
    if config.train.precision == "fp16" and device == "cpu":
        raise StudioError("stage.fp16_needs_gpu")


def refuse_several_processes(stage: str) -> None:
    """Our own loops (PPO, best-of-N) run in one process: under accelerate launch or torchrun every rank would
    sample and write the same batches again."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise StudioError("stage.one_process", stage=stage)


def use_gradient_checkpointing(config: RunConfig, device: str, n_params: int) -> bool:
    """On only when memory is the limit: big models on a GPU. It costs ~30% speed, and much more on CPU."""
    if config.train.gradient_checkpointing != "auto":
        return config.train.gradient_checkpointing == "on"
    return device == "cuda" and n_params >= GRADIENT_CHECKPOINTING_MIN_PARAMS


def load_policy(source: ModelSource, config: RunConfig, device: str, bf16: bool):
    """The model to train: the base with earlier adapters merged, 4-bit for QLoRA."""
    import torch

    check_hardware(config, device, source)
    if config.peft.method == "qlora":
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(source.base, quantization_config=quantization,
                                                     dtype=torch.bfloat16, trust_remote_code=trust_remote_code(),
                                                     use_safetensors=True)
    else:
        # Frozen LoRA bases can sit in bf16; weights that are trained stay fp32 (bf16 autocast does the math).
        dtype = torch.bfloat16 if bf16 and config.peft.method == "lora" else torch.float32
        model = load_model(source, dtype=dtype, merge_adapters=True)
    use_fast_attention(model, device, half_precision=bf16 or config.train.precision == "fp16")
    return model


def lora_config(config: RunConfig, task_type: str = "CAUSAL_LM"):
    if config.peft.method == "full":
        return None
    from peft import LoraConfig

    targets = config.peft.target_modules.strip()
    target_modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=config.peft.r, lora_alpha=config.peft.alpha, lora_dropout=config.peft.dropout,
                      target_modules=target_modules, task_type=task_type)


def common_training_args(context: RunContext, device: str, n_params: int) -> dict:
    """TrainingArguments every stage shares, derived from the run config (evaluation where it has an eval dataset)."""
    train = context.config.train
    return {
        "output_dir": str(context.staging_dir),
        "max_steps": train.max_steps if train.max_steps > 0 else -1,
        "num_train_epochs": train.epochs,
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": train.warmup_ratio,      # a float below 1 is a ratio of the total steps
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "logging_nan_inf_filter": False,         # a NaN loss must be seen, not averaged away
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "seed": train.seed,
        **report_to_args(context.config.train.report_to, context.run_dir),   # trackers; none by default
        "disable_tqdm": True,                    # the recorder prints one clean line per logged step
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device == "cuda",
        "gradient_checkpointing": use_gradient_checkpointing(context.config, device, n_params),
        "use_cpu": device == "cpu",
        **precision_args(context.config, device),
        **liger_args(context.config.stage, device),    # Liger's kernels where installed, on a GPU
        **eval_args(context.config, bool(context.config.eval_dataset)),
    }


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_final(trainer: SavesModel, run_dir: Path, staging_dir: Path) -> Path:
    """Save the finished model (or adapter) with its tokenizer, then move it to final/ in one rename — unless a
    weight is not finite: then nothing reaches final/ and the run fails saying so."""
    import os
    import shutil

    from pipelines.recorder import LOWER_THE_LEARNING_RATE
    from pipelines.stop import _agree_across_ranks, barrier

    staged = staging_dir / "final"
    if trainer.is_world_process_zero():
        shutil.rmtree(staged, ignore_errors=True)
    barrier()
    trainer.save_model(str(staged))
    barrier()
    bad, total = non_finite_tensors(staged) if trainer.is_world_process_zero() else (0, 0)
    if _agree_across_ranks(bad > 0):
        shutil.rmtree(staged, ignore_errors=True)
        raise StudioError("stage.final_not_finite", bad=bad, total=total, kept=run_files.checkpoints_kept(run_dir),
                          advice=LOWER_THE_LEARNING_RATE)
    final = run_dir / "final"
    if trainer.is_world_process_zero():
        from pipelines.model_card import write_run_card
        write_run_card(run_dir, staged)   # README.md: the road that made it, as the Hub reads a card
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staged, final)
    barrier()
    return final


def non_finite_tensors(folder: Path) -> tuple[int, int]:
    """(tensors that hold a NaN or an infinity, all tensors) in the safetensors files of a saved model or adapter."""
    import torch
    from safetensors import safe_open

    bad = total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                total += 1
                bad += not bool(torch.isfinite(weights.get_tensor(name)).all())
    return bad, total


def quiet(trainer) -> None:
    """The recorder prints one line per logged step; drop the trainer's own dict printer."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


@dataclass
class StageInputs:
    """What every stage starts from: the model it names, its tokenizer, the device, and the rows it trains on."""
    source: ModelSource
    tokenizer: object
    device: str
    train_dataset: object            # datasets.Dataset
    eval_dataset: object | None


def stage_inputs(context: RunContext) -> StageInputs:
    from datasets import Dataset

    from pipelines.data.store import load_stage_rows

    config = context.config
    source = resolve_model(config.model, context.workspace)
    rows = load_stage_rows(config.dataset, context.workspace, config.stage, config.train.seed)
    eval_rows = (load_stage_rows(config.eval_dataset, context.workspace, config.stage, config.train.seed)
                 if config.eval_dataset else None)
    return StageInputs(source, load_tokenizer(source), best_device(), Dataset.from_list(rows),
                       Dataset.from_list(eval_rows) if eval_rows else None)


def eval_args(config: RunConfig, has_eval: bool) -> dict:
    """Evaluate every eval_steps when the run has an eval dataset, so eval curves share the chart."""
    if not has_eval:
        return {}
    return {"eval_strategy": "steps", "eval_steps": config.train.eval_steps,
            "per_device_eval_batch_size": config.train.batch_size}


def start_policy_stage(context: RunContext) -> tuple[StageInputs, object, dict]:
    """The start every TRL stage that trains the policy shares: its inputs, the policy (earlier adapters merged) and
    the TrainingArguments every stage shares, as keywords for the stage's own config class."""
    inputs = stage_inputs(context)
    model = load_policy(inputs.source, context.config, inputs.device,
                        bf16=precision_args(context.config, inputs.device)["bf16"])
    print(describe_accelerators(inputs.device, context.config.stage, model.config), flush=True)
    return inputs, model, common_training_args(context, inputs.device, count_parameters(model))


def train_and_finish(context: RunContext, trainer):
    """The end every TRL stage shares: the recorder's lines instead of the trainer's own printer, the trackers
    hearing each log after the callbacks that add to it, training from the checkpoint being resumed (if any), and
    the trainer returned for save_final (SavesModel)."""
    from pipelines.trackers import trackers_last

    quiet(trainer)
    trackers_last(trainer.callback_handler.callbacks)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer
