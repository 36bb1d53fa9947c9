"""Reward model, DPO, KTO and ORPO on the tiny model: parameters change, preferences are learned, SFT → DPO
builds on the SFT adapter, a NaN loss stops a run cleanly, and bad settings are one sentence."""

import math

import pytest
from safetensors.torch import load_file

from pipelines import api
from pipelines.errors import StudioError
from pipelines.run_files import checkpoint_steps, read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import tiny_config, write_jsonl

# Clearly separable: every chosen answer ends with one sign-off, no rejected answer has it.
PAIRS = [{"prompt": q, "chosen": f"{a} Hope this helps!", "rejected": f"{a.split('.')[0]}, whatever."}
         for q, a in [("Say hi", "Hi there."), ("Add 2 and 3", "It is 5."), ("Capital of France?", "Paris."),
                      ("Name a color", "Blue."), ("Name a fruit", "An apple."), ("Say bye", "Goodbye."),
                      ("Two plus two?", "Four."), ("Largest ocean?", "The Pacific.")]]


def stage_config(model, stage: str, dataset: str = "pairs.jsonl", **train) -> str:
    settings = {"max_steps": 8, "batch_size": 4, "learning_rate": 5e-3, "save_steps": 4, **train}
    return tiny_config(model, **settings).replace("stage: sft", f"stage: {stage}").replace("dataset: tiny.jsonl", f"dataset: {dataset}")


@pytest.fixture
def pairs(workspace):
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    return workspace


def trained(workspace, config: str):
    run_dir = api.prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    return run_dir


@pytest.mark.parametrize("stage", ["reward", "dpo", "kto", "orpo"])
def test_each_preference_stage_trains_its_parameters(tiny_model, pairs, stage):
    run_dir = trained(pairs, stage_config(tiny_model, stage))
    weights = load_file(run_dir / "final" / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: non-zero was learned"
    if stage == "reward":
        assert any(name.endswith("score.weight") for name in weights), "the reward head is trained and saved"
    # A reward run also logs length_correlation at each save: the steps of its training loss are counted.
    steps = [m["step"] for m in read_metrics(run_dir) if m["split"] == "train" and "loss" in m]
    assert steps == list(range(1, 9))


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_a_full_fine_tune_from_a_lora_checkpoint_trains_the_merged_weights(tiny_model, pairs, stage):
    start = trained(pairs, "name: lora-sft\n" + tiny_config(tiny_model, max_steps=2))
    dataset = "tiny.jsonl" if stage == "sft" else "pairs.jsonl"
    config = stage_config(tiny_model, stage, dataset, max_steps=2, warmup_ratio=0.0).replace(f"model: {tiny_model}", "model: lora-sft/final")
    run_dir = trained(pairs, config.replace("method: lora", "method: full"))
    from pipelines.models import load_model, resolve_model
    merged = dict(load_model(resolve_model(f"{start.name}/final", pairs)).named_parameters())
    final = load_file(run_dir / "final" / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not final[name].equal(merged[name].detach()), "PEFT leaves merged weights frozen; a full fine-tune trains them"


def test_a_lora_reward_run_builds_on_a_lora_sft_checkpoint_and_scores(tiny_model, pairs):
    from pipelines.models import resolve_model

    trained(pairs, "name: lora-sft\n" + tiny_config(tiny_model, max_steps=2))
    config = stage_config(tiny_model, "reward", max_steps=2).replace(f"model: {tiny_model}", "model: lora-sft/final")
    reward = trained(pairs, "name: rm-on-sft\n" + config)
    assert len(resolve_model(f"{reward.name}/final", pairs).adapters) == 2, "the SFT adapter, then the reward adapter"
    scores = api.score(pairs, f"{reward.name}/final", "Say hi", ["Hi there. Hope this helps!", "Hi, whatever."])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_dpo_learns_a_separable_preference(tiny_model, pairs):
    metrics = read_metrics(trained(pairs, stage_config(tiny_model, "dpo", max_steps=12)))
    # The precomputed reference and the policy's compact head sum the same log-probs in different orders: rounding.
    assert abs(metrics[0]["rewards/margins"]) < 1e-5, "step 1: the policy is still the reference"
    last = metrics[-3:]
    assert sum(m["rewards/accuracies"] for m in last) / 3 > 0.5
    assert min(m["rewards/margins"] for m in last) > 0.1
    assert all(math.isfinite(m["loss"]) for m in metrics) and metrics[-1]["loss"] < metrics[0]["loss"]


def test_a_reward_model_learns_to_rank_chosen_first_and_scores_through_the_api(tiny_model, pairs):
    run_dir = trained(pairs, stage_config(tiny_model, "reward", max_steps=16))
    readings = {m["step"]: m["length_correlation"] for m in read_metrics(run_dir) if "length_correlation" in m}
    assert sorted(readings) == [4, 8, 12, 16], "reward vs answer length is checked at every save"
    assert readings[16] > 0, "every chosen answer here is the longer one, and the model ranks chosen first"
    metrics = [m for m in read_metrics(run_dir) if "accuracy" in m]
    assert sum(m["accuracy"] for m in metrics[-3:]) / 3 > sum(m["accuracy"] for m in metrics[:3]) / 3
    assert metrics[-1]["accuracy"] >= 0.75
    checkpoint = f"{run_dir.name}/final"
    good, bad = api.score(pairs, checkpoint, PAIRS[0]["prompt"], [PAIRS[0]["chosen"], PAIRS[0]["rejected"]])
    assert good > bad
    report = api.evaluate_reward(pairs, checkpoint, "pairs.jsonl")
    assert report["pairs"] == 8 and report["accuracy"] >= 0.75 and len(report["margins"]) == 8
    ranked = api.score_dataset(pairs, checkpoint, "pairs.jsonl")
    assert [r["reward"] for r in ranked] == sorted((r["reward"] for r in ranked), reverse=True)
    with pytest.raises(StudioError, match="is a reward model"):
        api.prepare_run(pairs, stage_config(tiny_model, "dpo").replace(f"model: {tiny_model}", f"model: {checkpoint}"))
    from pipelines.inference import chat
    with pytest.raises(StudioError, match="cannot generate"):
        chat(pairs, checkpoint, "Say hi")


def test_sft_then_dpo_builds_on_the_sft_adapter(tiny_model, pairs):
    from pipelines.models import resolve_model

    sft = trained(pairs, "name: sft\n" + tiny_config(tiny_model, max_steps=10))
    on_base = read_metrics(trained(pairs, "name: dpo-base\n" + stage_config(tiny_model, "dpo", max_steps=1)))
    config = stage_config(tiny_model, "dpo", max_steps=2).replace(f"model: {tiny_model}", "model: sft/final")
    dpo = trained(pairs, "name: dpo-sft\n" + config)
    on_sft = read_metrics(dpo)
    assert on_sft[0]["logps/chosen"] != pytest.approx(on_base[0]["logps/chosen"], abs=1e-3), \
        "the DPO policy starts from the SFT weights, not the base"
    assert on_sft[0]["rewards/margins"] == 0.0, "and its reference is that same SFT model"
    assert resolve_model("dpo-sft/final", pairs).adapters == [sft / "final", dpo / "final"]
    assert next(r for r in api.list_runs(pairs) if r["run_id"] == "dpo-sft")["parent"] == "sft"
    from pipelines.inference import chat
    assert isinstance(chat(pairs, "dpo-sft/final", "Say hi", settings={"max_new_tokens": 4, "temperature": 0}), str)
    with pytest.raises(StudioError, match="is not a reward model \\(the SFT stage trained it\\); scoring needs"):
        api.score(pairs, "sft/final", "Say hi", ["Hello"])
    with pytest.raises(StudioError, match="Pick a reward model first"):
        api.evaluate_reward(pairs, "", "pairs.jsonl")


def test_a_nan_loss_stops_the_run_and_keeps_the_checkpoints_before_it(tiny_model, pairs, monkeypatch):
    import torch

    from pipelines.recorder import RunRecorder

    original = RunRecorder.on_step_end

    def poison_at_step_3(self, args, state, control, model=None, **kwargs):
        if state.global_step == 3:
            with torch.no_grad():
                for parameter in model.parameters():
                    if parameter.requires_grad:
                        parameter.fill_(float("nan"))
        return original(self, args, state, control, model=model, **kwargs)

    monkeypatch.setattr(RunRecorder, "on_step_end", poison_at_step_3)
    run_dir = api.prepare_run(pairs, stage_config(tiny_model, "dpo", save_steps=2))
    assert train_run(run_dir, echo=False) == "failed"
    status = read_status(run_dir)
    assert "loss became nan at step 4" in status["error"] and "Lower the learning rate" in status["error"]
    assert checkpoint_steps(run_dir) == [2], "nothing is saved from broken weights"
    assert not (run_dir / "final").exists()
    weights = load_file(run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.parametrize("stage, dataset, words", [
    ("dpo", "tiny.jsonl", "this stage needs preference pairs"),
    ("reward", "tiny.jsonl", "such as preference-en-sample"),
    ("sft", "pairs.jsonl", "this stage needs instruction rows"),
])
def test_a_stage_given_the_wrong_kind_of_data_says_what_it_needs(tiny_model, pairs, stage, dataset, words):
    with pytest.raises(StudioError, match=words):
        api.prepare_run(pairs, stage_config(tiny_model, stage, dataset))


def test_impossible_preference_settings_are_refused(tiny_model, pairs):
    with pytest.raises(StudioError, match="`dpo.beta` must be greater than 0"):
        api.prepare_run(pairs, stage_config(tiny_model, "dpo") + "dpo: {beta: -0.1}\n")
    with pytest.raises(StudioError, match="`dpo.loss_type` must be one of"):
        api.prepare_run(pairs, stage_config(tiny_model, "dpo") + "dpo: {loss_type: magic}\n")
    with pytest.raises(StudioError, match="exo_pair loss needs dpo.label_smoothing above 0"):
        api.prepare_run(pairs, stage_config(tiny_model, "dpo") + "dpo: {loss_type: exo_pair}\n")
    with pytest.raises(StudioError, match="QLoRA is not available for the reward stage"):
        api.prepare_run(pairs, stage_config(tiny_model, "reward").replace("method: lora", "method: qlora"))
    with pytest.raises(StudioError, match="logging_steps must not exceed train.save_steps"):
        api.prepare_run(pairs, stage_config(tiny_model, "dpo", logging_steps=5, save_steps=2))
    with pytest.raises(StudioError, match="KTO needs train.batch_size of at least 2"):
        api.prepare_run(pairs, stage_config(tiny_model, "kto", batch_size=1))


def _records(**series):
    steps = len(next(iter(series.values())))
    return [{"step": i + 1, "split": "train", **{k.replace("_", "/"): v[i] for k, v in series.items()}} for i in range(steps)]


def test_warning_signs_name_margin_collapse_and_both_rewards_falling():
    from pipelines.signals import warning_signs

    healthy = _records(rewards_margins=[0.1 * i for i in range(12)], rewards_chosen=[0.05 * i for i in range(12)],
                       rewards_rejected=[-0.05 * i for i in range(12)])
    assert warning_signs("dpo", healthy) == []
    collapse = _records(rewards_margins=[1.0] * 8 + [0.0] * 8)
    assert warning_signs("dpo", collapse)[0].startswith("Margin collapse")
    falling = _records(rewards_chosen=[-0.1 * i for i in range(12)], rewards_rejected=[-0.2 * i for i in range(12)])
    assert "both falling" in warning_signs("kto", falling)[0]
    assert warning_signs("sft", falling) == []
    lengthy = [{"step": 4, "split": "train", "length_correlation": 0.2}, {"step": 8, "split": "train", "length_correlation": 0.7}]
    assert "follow answer length (correlation +0.70" in warning_signs("reward", lengthy)[0]
    assert warning_signs("reward", lengthy[:1]) == []
