"""The optional GPU extras a run uses where they are installed and apply: FlashAttention, Liger kernels, vLLM.

None of them is required. Each is found with `importlib.util.find_spec` (nothing is imported, so detection costs
nothing and a broken install cannot take a run down before it starts) and used only on a CUDA GPU:

    attention   flash_attention_3 (flash-attn-3, Hopper and newer) > flash_attention_2 (flash-attn, Ampere and
                newer) > sdpa, torch's own fused attention and transformers' default. FlashAttention only when the
                run computes in bf16/fp16 (it has no fp32 kernels) and the model's class supports it.
    Liger       its layer kernels (RMSNorm, RoPE, SwiGLU) through TRL's `use_liger_kernel`, for the trainers that
                keep their own fused, chunked LM head (TRL 1.16 turns Liger's fused cross-entropy off there: the
                logits memory is already saved) — SFT, pretrain, DPO, KTO.
    vLLM        generation for GRPO and RLOO through TRL's `use_vllm` in colocate mode: vLLM shares the training
                process and its GPU, so no second server is started.

The HF Hub kernels (`kernels`, TRL's `model_init_kwargs={"use_kernels": True}`) are reported but never turned on:
they download compiled code from the Hub when the model loads, which an offline GPU machine cannot do and which
the studio does not run without the operator asking (the same reason trust_remote_code is off).

An operator turns any extra off for the whole process with ALIGNMENT_STUDIO_DISABLE_EXTRAS, a comma-separated
list of flash_attn, liger, vllm (bench/gpu_speed.py uses it to measure each with and without).
"""

from __future__ import annotations

import importlib.util
import os

DISABLE_VARIABLE = "ALIGNMENT_STUDIO_DISABLE_EXTRAS"
# What each extra needs importable. Liger's kernels are Triton programs, so Triton must be there too.
MODULES = {
    "flash_attn_3": ("flash_attn_interface",),
    "flash_attn": ("flash_attn",),
    "kernels": ("kernels",),
    "liger": ("liger_kernel", "triton"),
    "vllm": ("vllm",),
}
# The CUDA compute capability each FlashAttention generation needs (8: Ampere, 9: Hopper).
FLASH_MIN_CAPABILITY = {"flash_attention_2": 8, "flash_attention_3": 9}
LIGER_STAGES = ("sft", "pretrain", "dpo", "kto")
VLLM_STAGES = ("grpo", "rloo")
# vLLM in colocate mode takes this share of the GPU for its copy of the weights (bf16) and its KV cache; the
# training process keeps the rest for the trained weights, gradients, optimizer and activations. TRL's default;
# raised only for a model whose bf16 weights plus an equal KV cache would not fit in it.
VLLM_GPU_MEMORY_SHARE = 0.3
VLLM_MAX_GPU_MEMORY_SHARE = 0.6
INSTALL_HINT = {"gpu": "pip install 'alignment-studio[gpu]'", "vllm": "pip install 'alignment-studio[vllm]'",
                "flash_attn": "pip install --no-build-isolation flash-attn"}   # it builds against the installed torch


def installed(extra: str) -> bool:
    """Whether every module `extra` needs can be imported (found, not imported), and the operator left it on."""
    if extra in disabled():
        return False
    return all(_found(module) for module in MODULES[extra])


def disabled() -> set[str]:
    names = {name.strip() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()}
    if "flash_attn" in names:
        names.add("flash_attn_3")
    return names


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # a parent package that fails to import, or a module without a spec
        return False


def cuda_capability() -> int:
    """The major CUDA compute capability of the current GPU (8 Ampere, 9 Hopper), 0 without one."""
    import torch

    return torch.cuda.get_device_capability()[0] if torch.cuda.is_available() else 0


def gpu_memory_bytes() -> int:
    import torch

    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def model_class(model_config):
    """The AutoModelForCausalLM class `model_config` builds, or None (remote code, an unknown architecture)."""
    if model_config is None:
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(model_config)]
    except KeyError:
        return None


def attention_implementation(device: str, model_config=None, half_precision: bool = True) -> str | None:
    """The `attn_implementation` to load a model with: the fastest FlashAttention installed that this GPU, the
    model's class and the run's precision support; else "sdpa" where the class has it; else None (transformers
    chooses, eager for a class with neither)."""
    cls = model_class(model_config)
    if device == "cuda" and half_precision and cls is not None and getattr(cls, "_supports_flash_attn", False):
        capability = cuda_capability()
        for implementation, extra in (("flash_attention_3", "flash_attn_3"), ("flash_attention_2", "flash_attn")):
            if installed(extra) and capability >= FLASH_MIN_CAPABILITY[implementation]:
                return implementation
    return "sdpa" if cls is not None and getattr(cls, "_supports_sdpa", False) else None


def use_fast_attention(model, device: str, half_precision: bool) -> str:
    """Switch a loaded model to attention_implementation()'s choice where it differs; returns the one in use."""
    chosen = attention_implementation(device, model.config, half_precision)
    if chosen and chosen != model.config._attn_implementation:
        model.set_attn_implementation(chosen)
    return model.config._attn_implementation


def liger_applies(stage: str, device: str) -> bool:
    return stage in LIGER_STAGES and device == "cuda" and installed("liger")


def liger_args(stage: str, device: str) -> dict:
    """Keywords for the stage's TRL config (SFTConfig, DPOConfig, KTOConfig): Liger's layer kernels where they apply."""
    return {"use_liger_kernel": True} if liger_applies(stage, device) else {}


def vllm_applies(stage: str, device: str) -> bool:
    return stage in VLLM_STAGES and device == "cuda" and installed("vllm")


def vllm_gpu_memory_share(n_params: int | None, gpu_bytes: int | None) -> float:
    """VLLM_GPU_MEMORY_SHARE, or more for a model whose bf16 weights (2 bytes each) and as much again for the KV
    cache do not fit in that share of the GPU — up to VLLM_MAX_GPU_MEMORY_SHARE, beyond which training would
    have too little left."""
    if not n_params or not gpu_bytes:
        return VLLM_GPU_MEMORY_SHARE
    needed = 2 * (2 * n_params) / gpu_bytes
    return round(min(max(VLLM_GPU_MEMORY_SHARE, needed), VLLM_MAX_GPU_MEMORY_SHARE), 2)


def vllm_args(device: str, n_params: int | None = None, stage: str = "grpo") -> dict:
    """Keywords for GRPOConfig / RLOOConfig: vLLM generation in colocate mode where it applies, else none (TRL then
    generates with the policy's own `generate`). Sleep mode stays off: it frees vLLM's memory during each training
    step but reloads the weights every step, and speed is what vLLM is here for."""
    if not vllm_applies(stage, device):
        return {}
    return {"use_vllm": True, "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": vllm_gpu_memory_share(n_params, gpu_memory_bytes()),
            "vllm_enable_sleep_mode": False}


def describe(device: str, stage: str | None = None, model_config=None, half_precision: bool = True) -> str:
    """One line for train.log: the attention in use and what became of each extra, with how to install a missing
    one. `model_config` of a loaded model reports the attention it really uses."""
    attention = getattr(model_config, "_attn_implementation", None) or \
        attention_implementation(device, model_config, half_precision) or "eager"
    parts = [f"{attention} attention"]
    flash_installed = installed("flash_attn") or installed("flash_attn_3")
    if device == "cuda" and not attention.startswith("flash") and not flash_installed:
        parts[0] += f" (FlashAttention not installed: {INSTALL_HINT['flash_attn']})"
    parts.append(_extra_state("Liger", "liger", "gpu", device, stage, LIGER_STAGES, "layer kernels on"))
    parts.append(_extra_state("vLLM", "vllm", "vllm", device, stage, VLLM_STAGES, "generation (colocate)"))
    if installed("kernels"):
        parts.append("Hub kernels installed, not used (they download code at load)")
    return "Accelerators: " + "; ".join(parts)


def _extra_state(label: str, extra: str, hint: str, device: str, stage: str | None, stages: tuple, used: str) -> str:
    if extra in disabled():
        return f"{label} turned off ({DISABLE_VARIABLE})"
    if device != "cuda":   # an install hint would send a CPU user after something their machine cannot use
        return f"{label} needs a CUDA GPU"
    if not installed(extra):
        return f"{label} not installed ({INSTALL_HINT[hint]})"
    if stage is not None and stage not in stages:
        return f"{label} not used by {stage}"
    return f"{label} {used}"
