"""The GPU path on the tiny model: bf16 training, models placed on the GPU in bf16 for chat, Compare and scoring,
and the RL stages with a reward model beside the policy. Skipped where there is no CUDA GPU (CI, laptops); a
session with one runs `python -m pytest tests/test_gpu.py`."""

import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from pipelines import api, inference  # noqa: E402
from pipelines.run_files import read_metrics, read_status  # noqa: E402
from pipelines.train import train_run  # noqa: E402
from tests.conftest import tiny_config, write_jsonl  # noqa: E402
from tests.test_preference_stages import PAIRS  # noqa: E402

GREEDY = {"temperature": 0, "max_new_tokens": 12}


def trained(workspace, config: str) -> str:
    run_dir = api.prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    assert all(math.isfinite(m["loss"]) for m in read_metrics(run_dir) if "loss" in m)
    return run_dir.name


@pytest.fixture(scope="module")
def gpu_workspace(tiny_model, tmp_path_factory):
    """Two LoRA SFT runs and a reward run, trained on the GPU (precision auto: bf16 where supported)."""
    from tests.conftest import TINY_ROWS
    workspace = tmp_path_factory.mktemp("gpu-workspace")
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": row["prompt"]} for row in PAIRS])
    for name, steps in (("one", 6), ("two", 12)):
        trained(workspace, f"name: {name}\n" + tiny_config(tiny_model, max_steps=steps, learning_rate=2e-2))
    reward = tiny_config(tiny_model, max_steps=4).replace("stage: sft", "stage: reward").replace("tiny.jsonl", "pairs.jsonl")
    trained(workspace, "name: rm\n" + reward.replace(f"model: {tiny_model}", "model: one/final"))
    return workspace


def test_training_uses_bf16_on_the_gpu(gpu_workspace, tiny_model):
    from pipelines.config import parse_config_text
    from pipelines.stages.common import precision_args

    config = parse_config_text(tiny_config(tiny_model))
    assert precision_args(config, "cuda")["bf16"] == torch.cuda.is_bf16_supported()
    assert (gpu_workspace / "runs" / "one" / "final" / "adapter_model.safetensors").is_file()


def test_chat_compare_and_scoring_run_on_the_gpu_in_bf16(gpu_workspace, tiny_model):
    inference.free_models()
    checkpoints = [str(tiny_model), "one/final", "two/final", "one/checkpoint-5"]
    batched = api.compare(gpu_workspace, checkpoints, "Say hi", GREEDY)
    sequential = [inference.chat(gpu_workspace, c, "Say hi", [], GREEDY) for c in checkpoints]
    assert batched == sequential, "stacked adapters in bf16 on the GPU answer as one checkpoint at a time"
    scores = api.score(gpu_workspace, "rm/final", "Say hi", ["Hi there. Hope this helps!", "Hi, whatever."])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    for loaded in inference._cache.values():
        parameter = next(loaded.model.parameters())
        assert parameter.device.type == "cuda" and parameter.dtype == torch.bfloat16
    assert len(inference._cache) == 2, "one base for the four columns, and the reward model"
    inference.free_models()


@pytest.mark.parametrize("stage, method", [("ppo", "lora"), ("ppo", "full"), ("grpo", "lora")])
def test_rl_stages_run_on_the_gpu_with_the_reward_model_beside_the_policy(gpu_workspace, stage, method):
    settings = ("ppo: {reward: rm/final, response_length: 8, minibatches: 2, ppo_epochs: 1}" if stage == "ppo" else
                "grpo: {reward: rm/final, num_generations: 4, response_length: 8}")
    run = trained(gpu_workspace, f"name: gpu-{stage}-{method}\nstage: {stage}\nmodel: one/final\ndataset: prompts.jsonl\n"
                                 f"peft: {{method: {method}, r: 8, alpha: 16}}\n"
                                 "train: {max_steps: 2, batch_size: 8, learning_rate: 1.0e-3, save_steps: 2}\n" + settings + "\n")
    samples = api.run_samples(gpu_workspace, run)
    assert samples and all(math.isfinite(s["score"]) for s in samples)
