"""Which weights a model name means, what they are, and how much memory training them takes.

A model is named by: the bundled id, a Hugging Face Hub id (`org/name`), a local directory, or a
checkpoint id of an earlier run (`<run_id>/checkpoint-<step>` or `<run_id>/final`). A LoRA checkpoint
resolves to its base plus the chain of adapters on top of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import users
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.errors import StudioError, quote, shorten

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
CHECKPOINT_ID = re.compile(r"^(?P<run>[A-Za-z0-9][A-Za-z0-9._-]{0,79})/(?P<ckpt>checkpoint-\d+|final)$")
MAX_MODEL_CHARS = 1024   # far beyond any Hub id (193) or sensible folder; bounds what is quoted and looked up


@dataclass
class ModelSource:
    spec: str                     # what the user wrote
    kind: str                     # bundled | hub | local | checkpoint
    base: str                     # a local directory or a Hub id that from_pretrained loads
    adapters: list[Path] = field(default_factory=list)  # LoRA adapters applied on top, in order
    stage: str | None = None      # the stage of the run that made this checkpoint (a reward model scores, never chats)

    @property
    def is_adapter(self) -> bool:
        return bool(self.adapters)


def trust_remote_code() -> bool:
    """Off unless the operator turns it on for the whole process; never from the UI."""
    return os.environ.get("ALIGNMENT_STUDIO_TRUST_REMOTE_CODE", "") == "1"


def resolve_model(spec: str, workspace: Path, check_hub: bool = True) -> ModelSource:
    """Say which weights `spec` names, or raise StudioError in one sentence if it names none."""
    if spec is not None and not isinstance(spec, str):
        raise StudioError("models.not_text", value=quote(spec))
    spec = (spec or "").strip()
    if len(spec) > MAX_MODEL_CHARS:
        raise StudioError("models.long_name", length=len(spec), limit=MAX_MODEL_CHARS)
    from pipelines.hosting import check_model
    check_model(spec, workspace)   # hosted mode: the bundled model, the user's checkpoints, the operator's list
    if spec == BUNDLED_MODEL_ID:
        from pipelines.bundled import bundled_model_dir
        return ModelSource(spec, "bundled", str(bundled_model_dir()))
    if match := CHECKPOINT_ID.fullmatch(spec):   # fullmatch: `$` alone lets a trailing newline through
        run_dir = Path(workspace) / "runs" / match["run"]
        if (run_dir / "config.yaml").is_file():
            return _resolve_checkpoint(spec, run_dir / ("checkpoints/" + match["ckpt"] if match["ckpt"] != "final" else "final"), workspace)
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or _is_folder(path):
        if not _is_folder(path) or not (path / "config.json").is_file() or not users.may_read(path, workspace):
            raise StudioError("models.not_model_folder", model=quote(spec))
        if (path / "adapter_config.json").is_file():
            raise StudioError("models.adapter_folder", model=quote(spec))
        return ModelSource(spec, "local", str(path.resolve()))
    if "://" in spec or ".." in spec or not HUB_ID.fullmatch(spec):
        raise StudioError("models.not_model_id", model=quote(spec))
    if check_hub:
        _check_hub_model(spec)
    return ModelSource(spec, "hub", spec)


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:   # a name longer than the file system allows ([Errno 36]) names no folder
        return False


def _resolve_checkpoint(spec: str, path: Path, workspace: Path) -> ModelSource:
    from pipelines.runs import load_config  # the run's own config says its stage and which base its adapter sits on

    if not path.is_dir():
        raise StudioError("models.no_checkpoint", checkpoint=quote(spec))
    config = load_config(path.parent.parent if path.name != "final" else path.parent)
    if not (path / "adapter_config.json").is_file():
        return ModelSource(spec, "checkpoint", str(path), stage=config.stage)
    parent = resolve_model(config.model, workspace, check_hub=False)
    return ModelSource(spec, "checkpoint", parent.base, parent.adapters + [path], stage=config.stage)


def check_generative(source: ModelSource) -> None:
    """A reward model scores answers; it cannot chat or be trained on as a policy."""
    from pipelines.stages import get_stage
    stage = get_stage(source.stage) if source.stage else None
    if stage and not stage.generates:
        raise StudioError("models.reward_cannot_generate", model=quote(source.spec))


def check_reward_model(source: ModelSource) -> None:
    """Scoring, a PPO reward and a reward evaluation need the checkpoint of a reward run."""
    if source.stage != "reward":
        if source.stage:
            raise StudioError("scoring.not_reward_made_by", model=quote(source.spec), stage=source.stage.upper())
        raise StudioError("scoring.not_reward", model=quote(source.spec))


def check_chat_template(tokenizer, model: str) -> None:
    """Every dataset row is a conversation, and chat and compare send one: the tokenizer must have a template."""
    if not tokenizer.chat_template:
        raise StudioError("model.no_chat_template", model=quote(model))


def check_context_length(max_length: int, config) -> None:
    """A run's max_length must fit the model's context (when the config says what that is)."""
    limit = context_length(config)
    if limit and max_length > limit:
        raise StudioError("model.beyond_context", max_length=max_length, limit=limit)


def _check_hub_model(repo_id: str) -> None:
    """A Hub model must be in the local cache or answer on the Hub within pipelines.hub_check.HUB_TIMEOUT_S."""
    from huggingface_hub import try_to_load_from_cache

    from pipelines.hub_check import check_on_hub, offline_error

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise offline_error(repo_id, "model")
    check_on_hub(repo_id, "model")


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    # A checkpoint saves the tokenizer it was trained with (training chat template included).
    folder = str(source.adapters[-1]) if source.adapters else source.base
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, dtype=None, device: str | None = None, merge_adapters: bool = True):
    """Load the base and apply the adapter chain; all but the last adapter are merged, the last too if asked."""
    from transformers import AutoModelForCausalLM

    check_generative(source)
    model = AutoModelForCausalLM.from_pretrained(
        source.base, dtype=dtype or "auto", trust_remote_code=trust_remote_code(), use_safetensors=True)
    if device:
        model.to(device)
    if source.adapters:
        from peft import PeftModel
        for index, adapter in enumerate(source.adapters):
            model = PeftModel.from_pretrained(model, str(adapter))
            if merge_adapters or index < len(source.adapters) - 1:
                model = model.merge_and_unload()
        if merge_adapters:   # PEFT loaded the base frozen; merged, it is a plain model again, trainable in full
            model.requires_grad_(True)
    return model


def best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def auto_precision(device: str) -> str:
    """What train.precision "auto" trains in on `device`: bf16 where the hardware does it fast — a recent GPU, or a
    CPU with native bf16 (avx512_bf16 or AMX: measured, pipelines/device_speed.py) — else fp32: a CPU that emulates
    bf16 trains 2.5–5× slower in it."""
    import torch

    from pipelines.device_speed import cpu_bf16_is_fast

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device == "cpu" and cpu_bf16_is_fast() else "fp32"


def describe_model(spec: str, workspace: Path, batch_size: int = 4, seq_len: int = 512) -> dict:
    """What the Model tab shows: parameters, dtype, device, context, chat template, memory estimates (for training at
    batch_size × seq_len)."""
    from transformers import AutoConfig

    source = resolve_model(spec, workspace)
    try:
        config = AutoConfig.from_pretrained(source.base, trust_remote_code=trust_remote_code())
    except OSError as exc:
        raise StudioError("models.no_config", model=quote(spec), problem=shorten(str(exc))) from None
    n_params = count_config_parameters(config)
    tokenizer = load_tokenizer(source)
    device = best_device()
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32").replace("torch.", "")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    train_bf16 = auto_precision(device) == "bf16"
    estimate = estimate_training_memory(n_params, getattr(text_config, "hidden_size", 0) or 0,
                                        getattr(text_config, "num_hidden_layers", 0) or 0,
                                        getattr(text_config, "vocab_size", 0) or 0, batch_size, seq_len,
                                        bf16=train_bf16, device=device)
    return {
        "model": spec, "kind": source.kind, "base": source.base, "adapters": [str(a) for a in source.adapters],
        "architecture": (getattr(config, "architectures", None) or [config.model_type])[0],
        "parameters": n_params, "dtype": dtype, "device": device,
        "context_length": context_length(config), "chat_template": bool(tokenizer.chat_template),
        "memory_gb": estimate,
    }


def count_config_parameters(config) -> int:
    """Parameters of a model built from `config`, counted without allocating them."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code())
    skeleton.tie_weights()   # from_config leaves tied embeddings apart: SmolLM2-135M would count as 163M
    return sum(p.numel() for p in skeleton.parameters())


def hidden_size(config) -> int | None:
    """The width of the model's hidden states: the most a LoRA rank can usefully be."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    width = getattr(text_config, "hidden_size", None)
    return width if isinstance(width, int) else None


def context_length(config) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(text_config, name, None), int):
            return getattr(text_config, name)
    return None


# Calibrated against the peak RSS of training processes on the 2-core CPU (bench/memory_estimate.py, results in
# bench/results/memory_estimate.json): SmolLM2-135M LoRA at batch 1 × 256 and 4 × 512 tokens, and the tiny model.
PROCESS_GB = 0.55          # python with torch, transformers, TRL and datasets loaded, before any model
LOADING_COPY = 0.7         # loading keeps part of a second copy of the weights (the file's pages) at its peak
ACTIVATION_VALUES = 37     # values kept per token, layer and hidden unit for the backward pass
LOGIT_COPIES = 5           # logits, softmax, log-softmax, their gradient, entropy: vocabulary-sized, in fp32


def estimate_training_memory(n_params: int, hidden: int, layers: int, vocab: int, batch_size: int, seq_len: int,
                             bf16: bool, device: str = "cpu", lora_fraction: float = 0.01) -> dict:
    """Peak memory in GB to train with AdamW, full and LoRA, at batch_size rows of seq_len tokens.

    weights  = n × bytes (× (1 + LOADING_COPY) while loading)
    full     = + gradients (n × bytes) + 2 Adam moments (n × 8) (+ fp32 master weights n × 4 with bf16)
    lora     = + the same for the ~1% trainable parameters (16 bytes each)
    tokens   = batch × seq × (ACTIVATION_VALUES × hidden × layers × bytes + LOGIT_COPIES × vocab × 4)
    On the CPU the process itself (PROCESS_GB) counts as well; on a GPU it does not. Measured on the CPU: LoRA within
    10%, full training up to 25% above (its peak comes after the loading copy is gone); not yet measured on a GPU.
    """
    weight_bytes = 2 if bf16 else 4
    tokens = batch_size * seq_len * (ACTIVATION_VALUES * hidden * layers * weight_bytes + LOGIT_COPIES * vocab * 4)
    base = n_params * weight_bytes * (1 + LOADING_COPY) + tokens + (PROCESS_GB * 1024 ** 3 if device == "cpu" else 0)
    full = base + n_params * (weight_bytes + 8 + (4 if bf16 else 0))
    lora = base + n_params * lora_fraction * 16
    gb = 1024 ** 3
    return {"full": round(full / gb, 2), "lora": round(lora / gb, 2), "batch_size": batch_size, "seq_len": seq_len}
