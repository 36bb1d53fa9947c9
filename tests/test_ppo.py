"""Our PPO on the tiny model: a rule reward rises while KL stays finite, a run resumed mid-way continues exactly
as if it had never stopped, and bad reward settings are one sentence before anything starts."""

import json
import math

import pytest

from pipelines import api
from pipelines.data.store import load_rows
from pipelines.errors import StudioError
from pipelines.run_files import checkpoint_steps, read_jsonl, read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import write_jsonl

# Dense and learnable from random text: the share of the answer's characters that are lowercase ASCII letters.
LOWERCASE_RULE = ("def reward(prompts, completions):\n"
                  "    return [sum(ch.islower() and ch.isascii() for ch in c) / max(len(c), 1) for c in completions]\n")


def ppo_config(model, method="full", steps=24, lr=3e-3, **ppo) -> str:
    settings = {"reward": "rules.py", "response_length": 16, "ppo_epochs": 4, "minibatches": 2, **ppo}
    body = ", ".join(f"{k}: {v}" for k, v in settings.items())
    return (f"stage: ppo\nmodel: {model}\ndataset: prompts.jsonl\npeft: {{method: {method}, r: 8, alpha: 16}}\n"
            f"train: {{max_steps: {steps}, batch_size: 8, learning_rate: {lr}, save_steps: 3, warmup_ratio: 0.0, "
            f"lr_scheduler: constant}}\nppo: {{{body}}}\n")


@pytest.fixture
def prompts(workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    (workspace / "rules.py").write_text(LOWERCASE_RULE, encoding="utf-8")
    return workspace


def test_ppo_raises_a_rule_reward_while_kl_stays_finite(tiny_model, prompts):
    run_dir = api.prepare_run(prompts, ppo_config(tiny_model))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    metrics = read_metrics(run_dir)
    scores = [m["objective/scores"] for m in metrics]
    assert sum(scores[-6:]) / 6 > sum(scores[:6]) / 6 + 0.05, scores
    assert all(math.isfinite(m["objective/kl"]) and math.isfinite(m["loss"]) for m in metrics)
    assert metrics[0]["objective/kl"] == pytest.approx(0.0, abs=1e-4), "update 1 samples from the reference itself"
    expected = {"objective/scores", "objective/kl", "objective/non_score_reward", "objective/rlhf_reward", "loss/policy",
                "loss/value", "policy/clipfrac", "value/clipfrac", "policy/approx_kl", "policy/entropy",
                "value/explained_variance", "response_length", "kl_coef"}
    assert expected <= set(metrics[-1])
    samples = api.run_samples(prompts, run_dir.name)
    assert len(samples) == 4 * 24 and {"step", "prompt", "response", "score"} <= set(samples[0])
    assert (run_dir / "final" / "value_head.safetensors").is_file()


def test_a_lora_ppo_run_resumed_mid_way_continues_exactly(tiny_model, prompts, monkeypatch, capsys):
    """... even when the reward file was edited in between: the run scores with the copy it started with."""
    from pipelines.stages.ppo import PPORunner

    whole = api.prepare_run(prompts, "name: whole\n" + ppo_config(tiny_model, "lora", steps=6, lr=1e-2))
    assert train_run(whole, echo=False) == "completed"

    original = PPORunner._update

    def crash_at_update_5(self, update):
        if update == 4 and not self.context.resume_from:
            raise KeyboardInterrupt
        return original(self, update)

    monkeypatch.setattr(PPORunner, "_update", crash_at_update_5)
    halves = api.prepare_run(prompts, "name: halves\n" + ppo_config(tiny_model, "lora", steps=6, lr=1e-2))
    assert (halves / "reward" / "rules.py").is_file(), "the run keeps the rules it was checked with from its creation"
    assert train_run(halves, echo=False) == "interrupted"
    assert checkpoint_steps(halves) == [3]
    (prompts / "rules.py").write_text(LOWERCASE_RULE.replace("islower", "isupper"), encoding="utf-8")
    assert train_run(halves, resume=True, echo=False) == "completed"
    assert (halves / "reward" / "rules.py").read_text(encoding="utf-8") == LOWERCASE_RULE, "the rules it started with"
    assert "rules.py changed or went from the workspace" in capsys.readouterr().out
    resumed = {m["step"]: m for m in read_metrics(halves)}
    for step, reference in enumerate(read_metrics(whole), start=1):
        assert resumed[step]["objective/scores"] == pytest.approx(reference["objective/scores"], abs=1e-5), step
        assert resumed[step]["loss"] == pytest.approx(reference["loss"], abs=1e-4), step
    assert resumed[6]["kl_coef"] == pytest.approx(read_metrics(whole)[-1]["kl_coef"])


@pytest.mark.parametrize("source, words", [
    ("def reward(prompts, completions):\n    import nonexistent_module_xyz\n", "reward raised ModuleNotFoundError"),
    ("import nonexistent_module_xyz\n", "does not import: ModuleNotFoundError"),
    ("def reward(prompts, completions):\n    return 1.0\n", "returned float, not a list of numbers"),
    ("def reward(prompts, completions):\n    return [1.0]\n", "returned 1 scores for 2 completions"),
    ("def score(prompts, completions):\n    return [1.0]\n", "has no function `reward"),
])
def test_a_bad_reward_function_is_refused_before_the_run_starts(tiny_model, prompts, source, words):
    (prompts / "rules.py").write_text(source, encoding="utf-8")
    with pytest.raises(StudioError, match=words):
        api.prepare_run(prompts, ppo_config(tiny_model))
    assert not (prompts / "runs").exists() or not list((prompts / "runs").iterdir())


def test_bad_ppo_settings_are_one_sentence(tiny_model, prompts):
    with pytest.raises(StudioError, match="needs prompt-only rows"):
        api.prepare_run(prompts, ppo_config(tiny_model).replace("prompts.jsonl", "tiny.jsonl"))
    with pytest.raises(StudioError, match="This stage needs a reward"):
        api.prepare_run(prompts, ppo_config(tiny_model, reward="''"))
    with pytest.raises(StudioError, match="outside the workspace"):
        api.prepare_run(prompts, ppo_config(tiny_model, reward="../rules.py"))
    with pytest.raises(StudioError, match="does not split into ppo.minibatches"):
        api.prepare_run(prompts, ppo_config(tiny_model, minibatches=3))
    with pytest.raises(StudioError, match="There is no run 'missing-rm'"):
        api.prepare_run(prompts, ppo_config(tiny_model, reward="missing-rm/final"))
    with pytest.raises(StudioError, match="ppo.kl_horizon 4 is below train.batch_size 8"):
        api.prepare_run(prompts, ppo_config(tiny_model, kl_target=0.01, kl_horizon=4))
    with pytest.raises(StudioError, match="minibatch of 4 rollouts .* does not split into train.grad_accum 3"):
        api.prepare_run(prompts, ppo_config(tiny_model).replace("batch_size: 8", "batch_size: 8, grad_accum: 3"))


def test_ppo_grad_accum_splits_minibatches_and_the_kl_horizon_sets_how_fast_beta_adapts(tiny_model, prompts, monkeypatch):
    import torch

    from pipelines.rl import rollout

    forwards, steps, original = [], [], rollout.forward_scores
    monkeypatch.setattr(rollout, "forward_scores", lambda model, head, sequences, *a, **kw:
                        (forwards.append(len(sequences)), original(model, head, sequences, *a, **kw))[1])
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **kw: steps.append(1))
    config = ppo_config(tiny_model, steps=2, kl_target=0.01, kl_horizon=8).replace("batch_size: 8", "batch_size: 8, grad_accum: 2")
    run_dir = api.prepare_run(prompts, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    # Update 1 samples from the reference (KL 0, under the target): β falls by the full 20% in 8 rollouts.
    assert [m["kl_coef"] for m in read_metrics(run_dir)] == pytest.approx([0.05, 0.04])
    training_forwards = [rows for rows in forwards if rows != 8]    # rollouts score all 8 rows at once
    assert training_forwards == [2] * (2 * 4 * 2 * 2), "2 updates × 4 epochs × 2 minibatches × 2 parts of 2 rows"
    assert len(steps) == 2 * 4 * 2, "one optimizer step per minibatch"


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_grpo_and_rloo_train_on_the_same_reward_sources_and_record_samples(tiny_model, prompts, stage):
    from safetensors.torch import load_file

    config = (f"stage: {stage}\nmodel: {tiny_model}\ndataset: prompts.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\n"
              "train: {max_steps: 4, batch_size: 8, learning_rate: 1.0e-2, save_steps: 2, warmup_ratio: 0.0}\n"
              f"{stage}: {{reward: rules.py, num_generations: 4, response_length: 12}}\n")
    run_dir = api.prepare_run(prompts, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and "reward" in metrics[-1]
    weights = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)
    samples = api.run_samples(prompts, run_dir.name)
    assert samples and {s["step"] for s in samples} <= {1, 2, 3, 4}
    assert all(0.0 <= s["score"] <= 1.0 for s in samples)
    with pytest.raises(StudioError, match="must be a multiple of"):
        api.prepare_run(prompts, config.replace("batch_size: 8", "batch_size: 6"))


def test_ppo_gradient_checkpointing_recomputes_layers_and_changes_no_value(tiny_model, prompts, monkeypatch):
    from pipelines.stages.ppo import PPORunner

    attention_calls = {}
    original = PPORunner._optimise

    def counting(self, *args):   # the first layer's attention runs again in the backward pass when checkpointed
        calls = []
        layer = next(m for name, m in self.model.named_modules() if name.endswith("layers.0.self_attn"))
        handle = layer.register_forward_hook(lambda *_: calls.append(1))
        try:
            return original(self, *args)
        finally:
            handle.remove()
            attention_calls[self.context.run_dir.name] = attention_calls.get(self.context.run_dir.name, 0) + len(calls)

    monkeypatch.setattr(PPORunner, "_optimise", counting)
    metrics = {}
    for setting in ("off", "on"):
        config = ppo_config(tiny_model, "lora", steps=2).replace("batch_size: 8", f"batch_size: 8, gradient_checkpointing: {setting}")
        run_dir = api.prepare_run(prompts, f"name: gc-{setting}\n" + config)
        assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
        metrics[setting] = read_metrics(run_dir)
    forwards = 2 * 4 * 2   # updates × epochs × minibatches
    assert (attention_calls["gc-off"], attention_calls["gc-on"]) == (forwards, 2 * forwards)
    for off, on in zip(metrics["off"], metrics["on"]):
        for key in ("loss", "objective/scores", "objective/kl", "value/explained_variance"):
            assert on[key] == pytest.approx(off[key], abs=1e-6), key


def test_ppo_in_bf16_computes_under_autocast_while_its_weights_stay_fp32(tiny_model, prompts, monkeypatch):
    import torch

    from pipelines.stages.ppo import PPORunner

    dtypes = []
    original = PPORunner._optimise
    monkeypatch.setattr(PPORunner, "_optimise", lambda self, *args: (
        dtypes.append({p.dtype for p in self.parameters}), original(self, *args))[1])
    losses = {}
    for precision in ("fp32", "bf16"):
        config = ppo_config(tiny_model, steps=2).replace("batch_size: 8", f"batch_size: 8, precision: {precision}")
        run_dir = api.prepare_run(prompts, f"name: ppo-{precision}\n" + config)
        assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
        losses[precision] = [m["loss"] for m in read_metrics(run_dir)]
    assert all(math.isfinite(loss) for loss in losses["bf16"])
    assert losses["bf16"] != losses["fp32"], "bf16 autocast changed the arithmetic"
    assert dtypes == [{torch.float32}] * 4, "the weights that train stay fp32"


def test_a_full_grpo_run_from_a_lora_checkpoint_keeps_that_checkpoint_as_its_kl_reference(tiny_model, prompts, monkeypatch):
    import torch
    from trl import GRPOTrainer

    from pipelines.models import load_model, resolve_model
    from tests.conftest import tiny_config

    sft = api.prepare_run(prompts, "name: sft\n" + tiny_config(tiny_model, max_steps=4, learning_rate=5e-2))
    assert train_run(sft, echo=False) == "completed"
    references = []
    original = GRPOTrainer.train
    monkeypatch.setattr(GRPOTrainer, "train", lambda self, **kw: (references.append(self.ref_model), original(self, **kw))[1])
    config = ("stage: grpo\nmodel: sft/final\ndataset: prompts.jsonl\npeft: {method: full}\n"
              "train: {max_steps: 1, batch_size: 4, learning_rate: 1.0e-4, warmup_ratio: 0.0}\n"
              "grpo: {reward: rules.py, num_generations: 4, response_length: 8, beta: 0.04}\n")
    run_dir = api.prepare_run(prompts, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    start = dict(load_model(resolve_model("sft/final", prompts), dtype=torch.float32).named_parameters())
    base = dict(load_model(resolve_model(str(tiny_model), prompts), dtype=torch.float32).named_parameters())
    reference = dict(references[0].named_parameters())
    name = next(n for n in start if "q_proj" in n)
    assert not torch.equal(start[name], base[name]), "the SFT adapter moved this weight"
    assert all(torch.equal(reference[n].float(), start[n]) for n in start), "the reference is the merged SFT model"
    trained = dict(load_model(resolve_model(f"{run_dir.name}/final", prompts), dtype=torch.float32).named_parameters())
    assert not torch.equal(trained[name], start[name]), "merged weights are trainable in a full fine-tune"
    assert not (run_dir / ".staging").exists()


def test_rejection_sampling_keeps_each_prompts_best_answer_and_saves_datasets_a_stage_can_use(tiny_model, prompts):
    config = (f"stage: rejection_sampling\nmodel: {tiny_model}\ndataset: prompts.jsonl\n"
              "train: {batch_size: 4, max_steps: 3}\n"
              "rejection_sampling: {reward: rules.py, num_samples: 4, response_length: 32}\n")
    run_dir = api.prepare_run(prompts, config)
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    assert not (run_dir / "final").exists(), "best-of-N makes data, not a model"
    kept = [row for batch in read_jsonl(run_dir / "kept.jsonl") for row in batch["rows"]]
    assert len(kept) == 12
    for row in kept:   # the best is the highest-scored of the N answers that were not cut off
        whole = [s for s, ended, answer in zip(row["scores"], row["ended"], row["answers"]) if ended and answer]
        assert len(row["scores"]) == 4
        if whole:
            assert row["scores"][row["best"]] == max(whole) and row["scores"][row["worst"]] == min(whole)
        else:
            assert row["best"] is None
    status = api.run_status(prompts, run_dir.name)
    assert status["datasets"]["best"] == f"{run_dir.name}-best"
    best = {json_key(r["messages"][:-1]): r["messages"][-1]["content"] for r in load_rows(status["datasets"]["best"], prompts)}
    for row in kept:
        if row["best"] is not None:
            assert best[json_key(row["prompt"])] == row["answers"][row["best"]]
    sft = api.prepare_run(prompts, f"stage: sft\nmodel: {tiny_model}\ndataset: {status['datasets']['best']}\n")
    assert sft.is_dir(), "an SFT run accepts the kept answers"
    if "pairs" in status["datasets"]:
        assert api.prepare_run(prompts, f"stage: dpo\nmodel: {tiny_model}\ndataset: {status['datasets']['pairs']}\n").is_dir()


def json_key(turns) -> str:
    return json.dumps(turns, sort_keys=True)


EVENTS = ("on_train_begin", "on_step_begin", "on_step_end", "on_log", "on_save", "on_train_end")


def test_our_own_loops_tell_callbacks_the_trainer_events_with_the_runs_training_arguments(tiny_model, prompts,
                                                                                          monkeypatch):
    """PPO and best-of-N drive the run's callbacks as a Trainer does: real TrainingArguments (output_dir the
    staging folder, the run's max_steps), every event in the Trainer's order, and a save only where there is one."""
    from transformers import TrainingArguments

    from pipelines.recorder import RunRecorder

    seen = []   # (run, event, args, step)
    for event in EVENTS:
        def spy(self, args, state, control, *rest, _event=event, _original=getattr(RunRecorder, event), **kwargs):
            seen.append((self.run_dir.name, _event, args, state.global_step))
            return _original(self, args, state, control, *rest, **kwargs)
        monkeypatch.setattr(RunRecorder, event, spy)
    ppo = api.prepare_run(prompts, "name: ppo\n" + ppo_config(tiny_model, "lora", steps=4, ppo_epochs=1)
                          .replace("save_steps: 3", "save_steps: 3, logging_steps: 2"))
    best_of_n = api.prepare_run(prompts, f"name: bon\nstage: rejection_sampling\nmodel: {tiny_model}\n"
                                         "dataset: prompts.jsonl\ntrain: {batch_size: 4, max_steps: 2}\n"
                                         "rejection_sampling: {reward: rules.py, num_samples: 4, response_length: 32}\n")
    for run_dir in (ppo, best_of_n):
        assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)

    for run_dir, max_steps in ((ppo, 4), (best_of_n, 2)):
        calls = [(event, args, step) for run, event, args, step in seen if run == run_dir.name]
        assert all(isinstance(args, TrainingArguments) for _, args, _ in calls)
        assert {(args.output_dir, args.max_steps) for _, args, _ in calls} == {(str(run_dir / ".staging"), max_steps)}
        assert calls[0][0] == "on_train_begin" and calls[-1][0] == "on_train_end"
        assert [step for event, _, step in calls if event == "on_step_end"] == list(range(1, max_steps + 1))
    events = lambda run, name: [step for r, event, _, step in seen if r == run and event == name]  # noqa: E731
    assert events("ppo", "on_log") == [1, 2, 4], "the first step, every logging_steps, and the last"
    assert events("ppo", "on_save") == [3, 4] and checkpoint_steps(ppo) == [3, 4]
    assert events("bon", "on_save") == [], "best-of-N keeps its batches in kept.jsonl, not checkpoints"


def test_ppo_scores_with_a_reward_checkpoint_and_a_rule_file_added(tiny_model, prompts):
    from tests.test_preference_stages import PAIRS, stage_config

    write_jsonl(prompts / "pairs.jsonl", PAIRS)
    reward_run = api.prepare_run(prompts, "name: rm\n" + stage_config(tiny_model, "reward", max_steps=4))
    assert train_run(reward_run, echo=False) == "completed"
    run_dir = api.prepare_run(prompts, ppo_config(tiny_model, "lora", steps=2, reward="rm/final + rules.py"))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    from pipelines.models import resolve_model
    from pipelines.rl.rewards import RewardScorer, parse_reward
    scorer = RewardScorer(parse_reward("rm/final + rules.py", prompts), prompts)
    rm_only = RewardScorer(parse_reward("rm/final", prompts), prompts)
    conversation, answer = [{"role": "user", "content": "Say hi"}], "hello there"
    rule = sum(ch.islower() and ch.isascii() for ch in answer) / len(answer)
    assert scorer([conversation], [answer])[0] == pytest.approx(rm_only([conversation], [answer])[0] + rule, abs=1e-5)
    assert resolve_model(f"{run_dir.name}/final", prompts).adapters[-1] == run_dir / "final"


def test_response_mask_keeps_the_first_stop_token_and_drops_what_follows():
    import torch

    from pipelines.rl.rollout import response_mask

    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [3, 2, 2, 2, 2]])   # 2 = end of turn = pad
    mask, ended = response_mask(responses, {2, 3})
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_rollout_log_probs_are_those_of_the_distribution_sampled_from(tiny_model, prompts):
    """Temperature, and a repetition penalty saved in the model's generation config, must not make the stored
    log-probs differ from the ones generate sampled with."""
    import torch
    from peft import get_peft_model

    from pipelines.models import ModelSource, load_model, load_tokenizer
    from pipelines.rl.rollout import generate_rollout, pure_sampling, stop_token_ids
    from pipelines.stages.common import lora_config
    from pipelines.config import parse_config_text

    source = ModelSource(str(tiny_model), "local", str(tiny_model))
    tokenizer = load_tokenizer(source)
    model = get_peft_model(load_model(source, dtype=torch.float32), lora_config(parse_config_text(f"model: {tiny_model}")))
    model.generation_config.repetition_penalty = 1.3
    conversation = [[{"role": "user", "content": "Say hi"}]]
    torch.manual_seed(0)
    rollout = generate_rollout(model, None, tokenizer, conversation, max_new_tokens=8, temperature=0.7)
    encoded = tokenizer(tokenizer.apply_chat_template(conversation[0], tokenize=False, add_generation_prompt=True),
                        return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    output = model.generate(**encoded, **pure_sampling(0.7, stop_token_ids(model, tokenizer)), max_new_tokens=8,
                            pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
    sampled = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)   # (1, T)
    mask = rollout.response_mask.bool()
    assert torch.allclose(rollout.logprobs[mask], sampled[:, :mask.shape[1]][mask], atol=1e-4)


def test_a_reward_file_may_use_dataclasses_and_future_annotations(tiny_model, prompts):
    (prompts / "rules.py").write_text(
        "from __future__ import annotations\nfrom dataclasses import dataclass\n\n@dataclass\nclass Rule:\n"
        "    word: str\n\ndef reward(prompts, completions):\n    return [float(Rule('hi').word in c) for c in completions]\n",
        encoding="utf-8")
    assert api.prepare_run(prompts, ppo_config(tiny_model, steps=1)).is_dir()
