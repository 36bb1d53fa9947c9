"""The optional GPU extras (pipelines/accelerators.py): what is found on this machine, what a CUDA machine with
everything installed would get (find_spec and the GPU faked), and that the keywords given to TRL are ones its
configs take. The real kernels only run on a GPU with the extras installed: those tests skip here, saying why."""

import importlib.util

import pytest

from pipelines import accelerators

EXTRA_MODULES = ("flash_attn", "flash_attn_interface", "kernels", "liger_kernel", "triton", "vllm")
NOT_ON_CPU = dict(output_dir="unused", use_cpu=True, bf16=False, report_to=[])


@pytest.fixture
def everything_installed(monkeypatch):
    """A Hopper GPU (compute capability 9, 141 GB) with every extra importable."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in EXTRA_MODULES else real_find_spec(name, *a))
    monkeypatch.setattr(accelerators, "cuda_capability", lambda: 9)
    monkeypatch.setattr(accelerators, "gpu_memory_bytes", lambda: 141 * 10**9)
    monkeypatch.delenv(accelerators.DISABLE_VARIABLE, raising=False)


def llama():
    from transformers import LlamaConfig
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4)


def test_on_this_machine_nothing_is_found_and_the_log_line_says_what_each_extra_needs(monkeypatch):
    monkeypatch.delenv(accelerators.DISABLE_VARIABLE, raising=False)
    found = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is not None]
    if found:
        pytest.skip(f"this machine has {found} installed")
    assert not any(accelerators.installed(extra) for extra in accelerators.MODULES)
    for device in ("cpu", "cuda"):
        assert accelerators.attention_implementation(device, llama()) == "sdpa"
        assert accelerators.liger_args("sft", device) == {}
        assert accelerators.vllm_args(device, 10**9, "grpo") == {}
    assert accelerators.describe("cpu", "sft", llama()) == (
        "Accelerators: sdpa attention; Liger needs a CUDA GPU; vLLM needs a CUDA GPU")
    on_a_gpu = accelerators.describe("cuda", "sft", llama())
    assert "FlashAttention not installed" in on_a_gpu and "Liger not installed (pip install 'alignment-studio[gpu]')" in on_a_gpu


def test_a_loaded_model_reports_the_attention_it_really_uses(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert accelerators.use_fast_attention(model, "cpu", half_precision=True) == "sdpa"
    model.set_attn_implementation("eager")
    assert accelerators.describe("cpu", "sft", model.config).startswith("Accelerators: eager attention; ")


def test_flash_attention_where_the_gpu_the_model_and_the_precision_allow_it(everything_installed, monkeypatch):
    from transformers import BloomConfig, DogeConfig

    assert accelerators.attention_implementation("cuda", llama()) == "flash_attention_3", "Hopper: FA3 first"
    monkeypatch.setattr(accelerators, "cuda_capability", lambda: 8)
    assert accelerators.attention_implementation("cuda", llama()) == "flash_attention_2", "Ampere: FA2"
    monkeypatch.setattr(accelerators, "cuda_capability", lambda: 7)
    assert accelerators.attention_implementation("cuda", llama()) == "sdpa", "Volta/Turing: no FlashAttention 2"
    monkeypatch.setattr(accelerators, "cuda_capability", lambda: 9)
    assert accelerators.attention_implementation("cuda", llama(), half_precision=False) == "sdpa", "no fp32 kernels"
    assert accelerators.attention_implementation("cpu", llama()) == "sdpa"
    assert accelerators.attention_implementation("cuda", DogeConfig()) == "sdpa", "a class without FlashAttention"
    assert accelerators.attention_implementation("cuda", BloomConfig()) is None, "neither: transformers picks eager"
    assert accelerators.attention_implementation("cuda", None) is None, "unknown (remote code): left to transformers"
    monkeypatch.setenv(accelerators.DISABLE_VARIABLE, "flash_attn")
    assert accelerators.attention_implementation("cuda", llama()) == "sdpa", "the operator turned it off"


def test_liger_keywords_are_ones_the_trl_configs_take(everything_installed):
    from trl import DPOConfig, KTOConfig, SFTConfig

    args = accelerators.liger_args("sft", "cuda")
    assert args == {"use_liger_kernel": True}
    for config_class, stage in ((SFTConfig, "sft"), (DPOConfig, "dpo"), (KTOConfig, "kto"), (SFTConfig, "pretrain")):
        config = config_class(**NOT_ON_CPU, **accelerators.liger_args(stage, "cuda"))
        assert config.use_liger_kernel is True
        # TRL keeps its own chunked LM head: Liger's fused cross-entropy must stay off (TRL raises otherwise)
        assert not (config.liger_kernel_config or {}).get("fused_linear_cross_entropy")
    assert accelerators.liger_args("grpo", "cuda") == {} and accelerators.liger_args("sft", "cpu") == {}
    assert accelerators.liger_args("sft", "mps") == {}


def test_vllm_keywords_are_ones_grpo_and_rloo_configs_take(everything_installed):
    from trl import GRPOConfig, RLOOConfig

    for config_class, stage in ((GRPOConfig, "grpo"), (RLOOConfig, "rloo")):
        args = accelerators.vllm_args("cuda", 500_000_000, stage)
        assert args == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                        "vllm_enable_sleep_mode": False}
        config = config_class(**NOT_ON_CPU, **args, num_generations=4, per_device_train_batch_size=4)
        assert (config.use_vllm, config.vllm_mode, config.vllm_gpu_memory_utilization) == (True, "colocate", 0.3)
    assert accelerators.vllm_args("cpu", 10**9, "grpo") == {}
    assert accelerators.vllm_args("cuda", 10**9, "sft") == {}


def test_vllm_takes_more_of_the_gpu_only_for_a_model_that_would_not_fit_in_its_share():
    gb = 10**9
    assert accelerators.vllm_gpu_memory_share(500_000_000, 80 * gb) == 0.3
    assert accelerators.vllm_gpu_memory_share(8_000_000_000, 80 * gb) == 0.4, "16 GB of bf16 weights + 16 GB cache"
    assert accelerators.vllm_gpu_memory_share(30_000_000_000, 80 * gb) == 0.6, "capped: training needs the rest"
    assert accelerators.vllm_gpu_memory_share(None, None) == 0.3


def test_the_log_line_with_everything_installed_and_with_extras_turned_off(everything_installed, monkeypatch):
    assert accelerators.describe("cuda", "sft", llama()) == (
        "Accelerators: flash_attention_3 attention; Liger layer kernels on; vLLM not used by sft; "
        "Hub kernels installed, not used (they download code at load)")
    assert "vLLM generation (colocate)" in accelerators.describe("cuda", "grpo", llama())
    assert "Liger needs a CUDA GPU" in accelerators.describe("cpu", "sft", llama())
    monkeypatch.setenv(accelerators.DISABLE_VARIABLE, "liger, vllm")
    assert accelerators.liger_args("sft", "cuda") == {} and accelerators.vllm_args("cuda", 10**9, "grpo") == {}
    line = accelerators.describe("cuda", "grpo", llama())
    assert "Liger turned off (ALIGNMENT_STUDIO_DISABLE_EXTRAS)" in line and "vLLM turned off" in line


class Captured(Exception):
    """Raised by the fake trainer once it holds the config the stage built."""


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_grpo_and_rloo_hand_the_vllm_keywords_to_trl(tiny_model, workspace, monkeypatch, stage):
    import trl

    from pipelines import api
    from pipelines.train import train_run
    from tests.conftest import write_jsonl

    seen = {}

    def fake_trainer(*, args, **_):
        seen["args"] = args
        raise Captured

    monkeypatch.setattr(trl, "GRPOTrainer" if stage == "grpo" else "RLOOTrainer", fake_trainer)
    monkeypatch.setattr(accelerators, "vllm_applies", lambda stage, device: True)   # as on a GPU with vLLM
    monkeypatch.setattr(accelerators, "gpu_memory_bytes", lambda: 80 * 10**9)
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(8)])
    run_dir = api.prepare_run(workspace, (
        f"stage: {stage}\nmodel: {tiny_model}\ndataset: prompts.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\n"
        f"train: {{max_steps: 1, batch_size: 4, save_steps: 1}}\n"
        f"{stage}: {{rules: [{{max_chars: 12}}], num_generations: 4, response_length: 8}}\n"))
    train_run(run_dir, echo=False)
    args = seen["args"]
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization) == (True, "colocate", 0.3)


def on_a_gpu_with(module: str, package: str):
    """Skip unless there is a CUDA GPU and `module` is installed; the reason names what is missing first."""
    import torch

    if not torch.cuda.is_available():
        return pytest.mark.skip(reason=f"needs a CUDA GPU (and {package} installed)")
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {package} installed")


@on_a_gpu_with("flash_attn", "flash-attn")
def test_flash_attention_2_loads_and_matches_sdpa_on_the_gpu(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).to("cuda")
    ids = torch.tensor([[1, 5, 9, 14, 20, 7]], device="cuda")
    with torch.no_grad():
        reference = model(input_ids=ids).logits.float()
        assert accelerators.use_fast_attention(model, "cuda", half_precision=True).startswith("flash_attention")
        fast = model(input_ids=ids).logits.float()
    assert torch.allclose(reference, fast, atol=5e-2), (reference - fast).abs().max()


@on_a_gpu_with("liger_kernel", "liger-kernel")
def test_an_sft_run_with_liger_kernels_trains_on_the_gpu(tiny_model, workspace):
    from pipelines import api
    from pipelines.run_files import read_metrics, read_status
    from pipelines.train import train_run
    from tests.conftest import TINY_ROWS, tiny_config, write_jsonl

    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_steps=4))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    assert "Liger layer kernels on" in (run_dir / "train.log").read_text(encoding="utf-8")
    assert all(m["loss"] == m["loss"] for m in read_metrics(run_dir) if "loss" in m)
