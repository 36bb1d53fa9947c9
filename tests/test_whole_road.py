"""The whole road on the tiny model, each stage starting from the one before, through the same calls the UI makes:
base → SFT → reward model on the SFT model → PPO, GRPO and best-of-N from the SFT model with that reward →
SFT on the best answers → Compare and Evaluate base, SFT and PPO → votes → DPO from the SFT model on the votes.

Each stage is tested on its own elsewhere; this test is about the hand-offs: a checkpoint of one stage is the
model or the reward of the next, adapters stack on merged adapters, and data made by one stage trains another."""

import math

from pipelines import api
from pipelines.models import resolve_model
from pipelines.run_files import read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import tiny_config, write_jsonl
from tests.test_preference_stages import PAIRS

GREEDY = {"max_new_tokens": 8, "temperature": 0}
FAST = "max_steps: 2, batch_size: 4, learning_rate: 1.0e-2, save_steps: 2, warmup_ratio: 0.0"


def trained(workspace, config: str) -> str:
    run_dir = api.prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    return run_dir.name


def test_each_stage_starts_from_the_one_before(tiny_model, workspace):
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": row["prompt"]} for row in PAIRS])
    lora = "peft: {method: lora, r: 8, alpha: 16}\n"

    sft = trained(workspace, "name: sft\n" + tiny_config(tiny_model, max_steps=4))
    rm = trained(workspace, f"name: rm\nstage: reward\nmodel: {sft}/final\ndataset: pairs.jsonl\n{lora}train: {{{FAST}}}\n")
    assert len(resolve_model(f"{rm}/final", workspace).adapters) == 2

    reward = f"{rm}/final"
    ppo = trained(workspace, f"name: ppo\nstage: ppo\nmodel: {sft}/final\ndataset: prompts.jsonl\n{lora}"
                             f"train: {{{FAST.replace('batch_size: 4', 'batch_size: 8')}}}\n"
                             f"ppo: {{reward: {reward}, response_length: 8, minibatches: 2, ppo_epochs: 1}}\n")
    grpo = trained(workspace, f"name: grpo\nstage: grpo\nmodel: {sft}/final\ndataset: prompts.jsonl\n{lora}"
                              f"train: {{{FAST}}}\ngrpo: {{reward: {reward}, num_generations: 4, response_length: 8}}\n")
    for run in (ppo, grpo):
        assert api.run_samples(workspace, run), f"{run} scored its answers with the reward model"
        assert all(math.isfinite(s["score"]) for s in api.run_samples(workspace, run))
        assert resolve_model(f"{run}/final", workspace).adapters[0].parent.name == sft, "it built on the SFT model"

    best_of_n = trained(workspace, f"name: bon\nstage: rejection_sampling\nmodel: {sft}/final\ndataset: prompts.jsonl\n"
                                   "train: {batch_size: 4, max_steps: 1}\n"
                                   f"rejection_sampling: {{reward: {reward}, num_samples: 4, response_length: 48}}\n")
    best = api.run_status(workspace, best_of_n)["datasets"]["best"]
    trained(workspace, "name: sft-on-best\n" + tiny_config(tiny_model, max_steps=2).replace("dataset: tiny.jsonl", f"dataset: {best}"))

    checkpoints = [str(tiny_model), f"{sft}/final", f"{ppo}/final"]
    answers = api.compare(workspace, checkpoints, "Say hi", GREEDY)
    assert answers == [api.compare(workspace, [c], "Say hi", GREEDY)[0] for c in checkpoints]
    report = api.evaluate(workspace, checkpoints, ["Say hi", "Name a color"], reward, GREEDY)
    assert set(report["means"]) == set(checkpoints) and all(math.isfinite(m) for m in report["means"].values())

    sampled = api.compare(workspace, checkpoints, "Say hi", {"max_new_tokens": 8, "temperature": 1.0, "seed": 1})
    assert api.vote(workspace, "votes", "Say hi", sampled, checkpoints, [2, 1, 3], GREEDY)["added_rows"] == 3
    dpo = trained(workspace, f"name: dpo\nstage: dpo\nmodel: {sft}/final\ndataset: votes\n{lora}train: {{{FAST}}}\n")
    assert read_metrics(workspace / "runs" / dpo)[-1]["step"] == 2
