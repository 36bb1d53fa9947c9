"""Will the answers change? The policy's own preference between a pair's answers (hand-checked on the tiny model),
the warnings a run gives when its curves look like success but greedy answers stay the same, when RL has nothing
to learn, and when RL drifts into reward hacking; and the SFT term that makes the chosen answers likelier."""

import pytest

from pipelines import api
from pipelines.preference_check import (CHECK_EVERY, answer_logps, encode_pair, measure, pair_preference,
                                       preference_shares)
from pipelines.run_files import read_metrics, read_status
from pipelines.signals import repeated_ngram_share, warning_signs
from pipelines.train import train_run
from tests.conftest import write_jsonl
from tests.test_ppo import ppo_config
from tests.test_preference_stages import PAIRS, stage_config


def test_pair_preference_compares_totals_per_token_means_and_the_first_differing_token():
    # chosen = "a b c", rejected = "a d": they differ at position 1.
    chosen_ids, chosen_logps = [5, 6, 7], [-1.0, -2.0, -3.0]            # total -6, mean -2
    rejected_ids, rejected_logps = [5, 8], [-1.0, -0.5]                 # total -1.5, mean -0.75
    assert pair_preference(chosen_ids, chosen_logps, rejected_ids, rejected_logps) == {
        "total": False, "per_token": False, "first_token": False}
    # A long chosen answer whose first differing token is likelier: greedy picks it although its total is lower.
    assert pair_preference([5, 6, 7, 7], [-1.0, -0.2, -3.0, -3.0], [5, 8], [-1.0, -0.4]) == {
        "total": False, "per_token": False, "first_token": True}
    assert pair_preference([5, 6], [-0.1, -0.1], [5, 8, 9], [-0.1, -1.0, -1.0]) == {
        "total": True, "per_token": True, "first_token": True}
    assert pair_preference([5, 6], [-1.0, -1.0], [5, 6], [-1.0, -1.0]) is None, "the same answer twice"
    shares = preference_shares([{"total": True, "per_token": False, "first_token": True},
                                {"total": False, "per_token": False, "first_token": True}, None])
    assert shares == {"prefers_chosen/total": 0.5, "prefers_chosen/per_token": 0.0, "prefers_chosen/first_token": 1.0}
    assert preference_shares([None]) == {}


def test_measured_shares_equal_a_hand_computation_on_the_tiny_model(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    pairs = [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant", "content": p["chosen"]}],
              "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in PAIRS]
    encoded = [encode_pair(tokenizer, pair, 128) for pair in pairs]
    expected, by_hand = {"total": [], "per_token": [], "first_token": []}, []
    for pair, (prompt, chosen, rejected) in zip(pairs, encoded):
        # By hand: the whole text through the template, one sequence at a time, no padding.
        full = tokenizer(tokenizer.apply_chat_template(pair["prompt"] + pair["chosen"], tokenize=False),
                         add_special_tokens=False)["input_ids"]
        assert full[:len(prompt) + len(chosen)] == prompt + chosen, "the answer follows the prompt's tokens"

        def token_logps(answer):
            ids = torch.tensor([prompt + answer])
            with torch.no_grad():
                logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            return [logps[len(prompt) - 1 + i, token].item() for i, token in enumerate(answer)]

        c, r = token_logps(chosen), token_logps(rejected)
        by_hand += [c, r]
        first = next(i for i, (x, y) in enumerate(zip(chosen, rejected)) if x != y)
        expected["total"].append(sum(c) > sum(r))
        expected["per_token"].append(sum(c) / len(c) > sum(r) / len(r))
        expected["first_token"].append(c[first] > r[first])
    batched = answer_logps(model, [(prompt, answer) for prompt, chosen, rejected in encoded for answer in (chosen, rejected)])
    assert [v for row in batched for v in row] == pytest.approx([v for row in by_hand for v in row], abs=1e-4), \
        "padding and batching change no log-prob"
    measured = measure(model, encoded)
    for kind, values in expected.items():
        assert measured[f"prefers_chosen/{kind}"] == pytest.approx(sum(values) / len(values))


def test_a_dpo_run_logs_the_policys_own_preference_at_its_first_every_tenth_and_last_step(tiny_model, pairs):
    run_dir = api.prepare_run(pairs, stage_config(tiny_model, "dpo", max_steps=12))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    measured = [m["step"] for m in read_metrics(run_dir) if "prefers_chosen/first_token" in m]
    assert measured == [1, 1 + CHECK_EVERY, 12]
    last = read_metrics(run_dir)[-1]
    assert all(0.0 <= last[f"prefers_chosen/{kind}"] <= 1.0 for kind in ("total", "per_token", "first_token"))


def test_a_kto_run_on_pairs_measures_the_policys_own_preference_on_them(tiny_model, pairs):
    from pipelines.preference_check import pairs_from_unpaired

    rows = [{"prompt": [{"role": "user", "content": "q1"}], "completion": [{"role": "assistant", "content": "good"}], "label": True},
            {"prompt": [{"role": "user", "content": "q2"}], "completion": [{"role": "assistant", "content": "bad"}], "label": False},
            {"prompt": [{"role": "user", "content": "q1"}], "completion": [{"role": "assistant", "content": "worse"}], "label": False}]
    assert pairs_from_unpaired(rows) == [{"prompt": rows[0]["prompt"], "chosen": rows[0]["completion"],
                                          "rejected": rows[2]["completion"]}], "q2 has no desirable answer to pair"
    run_dir = api.prepare_run(pairs, stage_config(tiny_model, "kto", max_steps=3))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    assert [m["step"] for m in read_metrics(run_dir) if "prefers_chosen/first_token" in m] == [1, 3]
    stuck = _records(rewards__margins=[0.3 * (i + 1) for i in range(6)], prefers_chosen__first_token=[0.25] * 6)
    signs = warning_signs("kto", stuck)
    assert len(signs) == 1 and "still prefers the rejected answer in 75%" in signs[0]


def test_the_sft_term_raises_the_chosen_answers_log_probability_faster_than_dpo_alone(tiny_model, pairs):
    def chosen_logps(sft_weight):
        config = stage_config(tiny_model, "dpo", max_steps=6, learning_rate=2e-3) + f"dpo: {{sft_weight: {sft_weight}}}\n"
        run_dir = api.prepare_run(pairs, f"name: dpo-sft-{sft_weight}\n" + config)
        assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
        return [m["logps/chosen"] for m in read_metrics(run_dir)]

    plain, with_sft = chosen_logps(0), chosen_logps(1.0)
    assert plain[0] == pytest.approx(with_sft[0], rel=1e-4), "the same start"
    assert with_sft[-1] > plain[-1] + 1.0, (plain, with_sft)


@pytest.fixture
def pairs(workspace):
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    return workspace


def _records(**series):
    steps = len(next(iter(series.values())))
    return [{"step": i + 1, "split": "train", **{k.replace("__", "/"): v[i] for k, v in series.items()}} for i in range(steps)]


def test_a_run_that_ranks_pairs_right_while_the_rejected_answer_stays_likelier_says_answers_will_not_change():
    stuck = _records(rewards__accuracies=[1.0] * 10, rewards__margins=[0.2 * i for i in range(10)],
                     prefers_chosen__first_token=[0.13] * 10)
    signs = warning_signs("dpo", stuck)
    assert len(signs) == 1 and "prefers the rejected answer in 87% of them" in signs[0]
    assert "dpo.sft_weight" in signs[0] and "dpo.sft_weight" not in warning_signs("orpo", stuck)[0]
    changing = _records(rewards__accuracies=[1.0] * 10, prefers_chosen__first_token=[0.13] * 9 + [0.7])
    assert warning_signs("dpo", changing) == [], "the latest reading decides"
    not_yet_ranked = _records(rewards__accuracies=[0.5] * 10, prefers_chosen__first_token=[0.13] * 10)
    assert warning_signs("dpo", not_yet_ranked) == [], "a run that does not rank the pairs yet has other problems"


def test_rl_whose_scores_are_all_equal_says_there_is_nothing_to_learn():
    flat = _records(objective__scores_std=[0.0, 0.0, 0.0])
    assert warning_signs("ppo", flat)[0].startswith("Nothing to learn: in the latest update every sampled answer got "
                                                    "the same score (3 of 3 updates so far)")
    assert warning_signs("ppo", _records(objective__scores_std=[0.0, 0.0, 0.3])) == []
    learned = _records(objective__scores_std=[0.0, 0.43, 0.0], objective__scores=[0.0, 0.25, 1.0])
    assert warning_signs("ppo", learned) == [], "every answer earning the rule's 1 is success, not a flat reward"
    assert "more grpo.num_generations" in warning_signs("grpo", _records(frac_reward_zero_std=[0.5, 1.0]))[0]
    # A rule that never fires wants graded scores; a reward model that scores all alike needs checking instead.
    assert "instead of a 0/1 rule" in warning_signs("ppo", flat, rule_reward=True)[0]
    assert "instead of a 0/1 rule" not in warning_signs("grpo", _records(frac_reward_zero_std=[1.0]))[0]
    assert "check that the reward model tells such answers apart" in warning_signs("rloo", _records(frac_reward_zero_std=[1.0]))[0]
    assert warning_signs("rloo", _records(frac_reward_zero_std=[1.0, 0.75])) == []


def test_the_charts_mark_where_the_reward_hacking_warning_begins():
    from studio.charts import training_curves

    steps = range(12)
    ppo = _records(objective__kl=[1.2 * i for i in steps], answers__repeated_3grams=[0.05 * i for i in steps],
                   loss=[1.0] * 12)
    lines = [shape for shape in training_curves(ppo).layout.shapes if shape.type == "line"]
    assert sorted(round(line.y0, 2) for line in lines) == [0.3, 6.0]
    assert all("reward-hacking warning" in a.text for a in training_curves(ppo).layout.annotations
               if a.text.startswith("reward"))
    dpo = _records(loss=[1.0] * 12, rewards__margins=[0.1 * i for i in steps])
    assert not [shape for shape in training_curves(dpo).layout.shapes if shape.type == "line"]


def test_ppo_whose_samples_score_alike_against_a_wide_reward_margin_says_there_is_little_to_learn(workspace):
    # As measured (bench/rl_behaviours.py): PPO from an SFT model that never samples the sign-off the reward model
    # prefers scores -3.4 ± 0.05 while the reward model's margin on its pairs is 6.7; from one that sometimes samples
    # it, the score climbs to +3.4 and then its spread is small again because every answer has the sign-off.
    stuck = _records(objective__scores=[-3.39, -3.25, -3.38, -3.44, -3.3, -3.35], reward_model__margin=[6.7] * 6,
                     objective__scores_std=[0.03, 0.05, 0.07, 0.12, 0.04, 0.06])
    signs = warning_signs("ppo", stuck)
    assert len(signs) == 1 and signs[0].startswith("Little to learn: the answers the policy samples differ in score by "
                                                   "0.068 (the last 5 updates), while the reward model tells its "
                                                   "training pairs apart by 6.7.")
    learned = _records(objective__scores=[-3.39, -3.25, -1.7, 1.8, 3.46, 3.41, 3.43, 3.34, 3.42],
                       objective__scores_std=[0.03, 0.05, 2.9, 2.9, 0.06, 0.07, 0.15, 0.13, 0.1],
                       reward_model__margin=[6.7] * 9)
    assert warning_signs("ppo", learned) == [], "a small spread after the score rose means it learned"
    rule_only = _records(objective__scores=[0.0] * 6, objective__scores_std=[0.01] * 6)
    assert warning_signs("ppo", rule_only) == [], "without a reward model there is no scale to judge the spread by"

    from pipelines.rl.rewards import RewardSource, reward_model_margin
    run = workspace / "runs" / "my-rm"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {i}, "split": "train", "margin": {m}}}\n'
                                               for i, m in enumerate([0.3, 1.0, 5.0, 6.0, 7.0, 8.0, 9.0])))
    assert reward_model_margin(RewardSource("my-rm/final", None), workspace) == 7.0   # its last 5 steps
    assert reward_model_margin(RewardSource(None, workspace / "rules.py"), workspace) is None


def test_rl_whose_kl_and_repetition_grow_warns_of_reward_hacking():
    steps = range(12)
    hacking = _records(objective__kl=[1.2 * i for i in steps], answers__repeated_3grams=[0.05 * i for i in steps],
                       response_length=[20 + 3 * i for i in steps], objective__scores_std=[0.5] * 12)
    signs = warning_signs("ppo", hacking)
    assert len(signs) == 1 and signs[0].startswith("Signs of reward hacking: KL to the reference 10.8 and rising; "
                                                   "answers repeat themselves (45% of their 3-word phrases are repeats); "
                                                   "answers grew from 26 to 47 tokens")
    assert "ppo.kl_coef" in signs[0]
    calm = _records(objective__kl=[0.3] * 12, answers__repeated_3grams=[0.02] * 12, response_length=[20 + 3 * i for i in steps])
    assert warning_signs("ppo", calm) == [], "longer answers alone are no sign"
    grpo = _records(kl=[0.02 * i for i in steps], **{"completions__mean_length": [48] * 12})
    assert "raise grpo.beta" in warning_signs("grpo", grpo)[0], "TRL's per-token KL times the length: 0.18 × 48 ≈ 8.6"


def test_repeated_ngram_share_counts_phrases_said_again():
    assert repeated_ngram_share("ten plus fourteen is twenty four") == 0.0
    assert repeated_ngram_share("let me know let me know let me know") == pytest.approx(1 - 3 / 7)   # 7 phrases, 3 of them new
    assert repeated_ngram_share("too short") == 0.0


def test_a_ppo_run_whose_rule_never_fires_says_so_in_the_log_and_on_the_status_line(tiny_model, workspace, capsys):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(8)])
    (workspace / "rules.py").write_text("def reward(prompts, completions):\n    return [0.0 for c in completions]\n",
                                        encoding="utf-8")
    run_dir = api.prepare_run(workspace, ppo_config(tiny_model, "lora", steps=2))
    assert train_run(run_dir, echo=True) == "completed", read_status(run_dir)
    assert capsys.readouterr().out.count("warning: Nothing to learn") == 1, "told once in the log, when it shows"
    warnings = api.run_status(workspace, run_dir.name)["warnings"]
    assert any("(2 of 2 updates so far)" in w and "instead of a 0/1 rule" in w for w in warnings)
    assert all(m["objective/scores_std"] == 0.0 and 0.0 <= m["answers/repeated_3grams"] <= 1.0 for m in read_metrics(run_dir))


def test_a_preference_run_without_probe_prompts_probes_prompts_of_its_own_dataset(tiny_model, pairs):
    run_dir = api.prepare_run(pairs, stage_config(tiny_model, "dpo", max_steps=4, save_steps=2))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    grid = api.run_probes(pairs, run_dir.name)
    assert grid["steps"] == [2, 4] and len(grid["rows"]) == 4
    assert {row["prompt"] for row in grid["rows"]} <= {p["prompt"] for p in PAIRS}
    sft_dir = api.prepare_run(pairs, stage_config(tiny_model, "sft", "tiny.jsonl", max_steps=2, save_steps=2))
    assert train_run(sft_dir, echo=False) == "completed"
    assert api.run_probes(pairs, sft_dir.name)["steps"] == [], "SFT probes only what the config names"
