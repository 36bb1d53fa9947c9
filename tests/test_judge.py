"""The AI judge (pipelines/judge.py, pipelines/judge_label.py): verdicts stand only when both orders agree, a chat
model judges by the probabilities of "1" and "2", a judge-labelled dataset trains DPO and a reward model, agreement
with people and Cohen's kappa are right on hand-made examples, and bad inputs are refused before anything is written."""

import json

import pytest

from pipelines import api, jobs
from pipelines.errors import StudioError
from pipelines.judge import Judge, cohen_kappa, judge_pair, judge_pairs, load_judge
from pipelines.judge_label import agreement_summary
from pipelines.run_files import read_status
from tests.conftest import tiny_config, write_jsonl

SHORT = "rules: [{max_words: 3}]"   # a rule judge: the shorter answer (up to 3 words) scores higher
PROMPTS = ["Say hi", "Add 2 and 3", "Capital of France?", "Name a color"]
QUICK = {"max_new_tokens": 12, "temperature": 1.0}   # the tiny model's answers: short, and varied


class FirstPosition(Judge):
    """A judge with nothing but position bias: whatever comes first is better."""

    def prefer(self, prompt, first, second):
        return 0.9


class Longer(Judge):
    """A judge without position bias: the longer answer is better, whichever order it is shown in."""

    def prefer(self, prompt, first, second):
        return 0.8 if len(first) > len(second) else 0.2


def test_a_judge_that_always_prefers_the_first_position_yields_no_verdicts():
    verdicts = judge_pairs(FirstPosition(), [("q", "short", "a longer answer"), ("q", "a longer answer", "short")])
    assert [v["winner"] for v in verdicts] == [None, None]
    assert not any(v["agree"] for v in verdicts)
    assert verdicts[0]["orders"] == [{"first": "a", "p_first": 0.9}, {"first": "b", "p_first": 0.9}]
    # A judge that weighs the answers themselves keeps its verdict, whichever side the better answer is on.
    assert judge_pair(Longer(), "q", "short", "a longer answer")["winner"] == "b"
    assert judge_pair(Longer(), "q", "a longer answer", "short") == {
        "winner": "a", "agree": True, "p_a": pytest.approx(0.8),
        "orders": [{"first": "a", "p_first": 0.8}, {"first": "b", "p_first": 0.2}]}


def test_a_chat_model_grades_each_answer_alone_by_the_odds_of_yes(tiny_model, workspace):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.judge import default_template, fill_template

    result = api.judge(workspace, str(tiny_model), "Say hi", ["Hi there!", "Go away."], criteria="is polite")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    yes, no = (tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in ("Yes", "No"))

    def grade(answer):   # a plain forward pass of the filled single-answer prompt
        question = fill_template(default_template("en", "single"), "is polite", "Say hi", answer)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        return float(logits[yes] - logits[no])

    expected = 1 / (1 + math.exp(-(grade("Hi there!") - grade("Go away."))))
    first, second = result["orders"]
    assert first["p_first"] == pytest.approx(expected, abs=1e-4)
    assert second["p_first"] == pytest.approx(1 - expected, abs=1e-4), "graded alone: no position to favour"
    assert result["winner"] == ("a" if expected > 0.5 else "b") and result["agree"]


def test_a_chat_model_judges_by_the_next_token_probabilities_of_1_and_2(tiny_model, workspace):
    result = api.judge(workspace, str(tiny_model), "Say hi", ["Hi there!", "Go away."], criteria="is polite",
                       mode="pairwise")
    first, second = result["orders"]
    assert (first["first"], second["first"]) == ("a", "b")
    assert 0 < first["p_first"] < 1 and 0 < second["p_first"] < 1
    assert first["p_first"] != second["p_first"]   # the swapped prompt is another prompt, read afresh
    expected = "a" if first["p_first"] > 0.5 and second["p_first"] < 0.5 else \
        "b" if first["p_first"] < 0.5 and second["p_first"] > 0.5 else None
    assert result["winner"] == expected and result["agree"] == (expected is not None)
    assert api.judge(workspace, str(tiny_model), "Say hi", ["Hi there!", "Go away."], criteria="is polite",
                     mode="pairwise") == result
    with load_judge(workspace, str(tiny_model), "is polite", mode="pairwise") as judge:   # the Judge that Evaluate's scorer calls
        assert judge.prefer("Say hi", "Hi there!", "Go away.") == pytest.approx(first["p_first"], abs=1e-5)
    # Another template is another question: the probabilities move.
    custom = "Criteria: {criteria}\nQ: {prompt}\n1) {answer_1}\n2) {answer_2}\nBetter (1 or 2)?"
    assert api.judge(workspace, str(tiny_model), "Say hi", ["Hi there!", "Go away."], "is polite",
                     custom, "pairwise")["orders"][0]["p_first"] != pytest.approx(first["p_first"], abs=1e-6)


def test_rules_judge_in_both_spellings_and_braces_in_answers_are_never_filled(workspace):
    for spec in (SHORT, [{"max_words": 3}]):
        result = api.judge(workspace, spec, "Say hi", ["Hello there, how are you today?", "Hi!"])
        assert result["winner"] == "b" and result["agree"]
    tie = api.judge(workspace, SHORT, "Say hi", ["Hi!", "Yo!"])
    assert tie["winner"] is None and not tie["agree"]   # equal scores: 0.5 both ways, no verdict
    from pipelines.judge import fill_template
    assert fill_template("{prompt}|{answer_1}|{answer_2}", "", "p {answer_2}", "x", "y") == "p {answer_2}|x|y"


def test_bad_inputs_are_refused_before_anything_is_written(tiny_model, workspace):
    model = str(tiny_model)
    refused = [
        lambda: api.judge(workspace, model, "Say hi", ["one", "two", "three"]),
        lambda: api.judge(workspace, model, "x" * 9000, ["one", "two"]),
        lambda: api.judge(workspace, model, "Say hi", ["one", "y" * 9000]),
        lambda: api.judge(workspace, model, "Say hi", ["one", "two"], criteria="c" * 2001),
        lambda: api.judge(workspace, model, "Say hi", ["one", "two"], template="Which is better, {answer_1}?",
                          mode="pairwise"),
        lambda: api.judge(workspace, model, "Say hi", ["one", "two"], "be kind", "{prompt} {answer_1} {answer_2}",
                          "pairwise"),
        lambda: api.judge(workspace, model, "Say hi", ["one", "two"], template="{prompt} {answer_1} {answer_2}"),
        lambda: api.judge(workspace, model, "Say hi", ["one", "two"], mode="both"),
        lambda: api.judge(workspace, "", "Say hi", ["one", "two"]),
        lambda: api.judge(workspace, "rules: []", "Say hi", ["one", "two"]),
        lambda: api.judge(workspace, "rules: [{shout: true}]", "Say hi", ["one", "two"]),
        lambda: api.judge(workspace, "../outside.py", "Say hi", ["one", "two"]),
        lambda: api.label_with_judge(workspace, model, PROMPTS, SHORT, n=5),
        lambda: api.label_with_judge(workspace, model, PROMPTS, SHORT, n=1),
        lambda: api.label_with_judge(workspace, model, ["Say hi"] * 1001, SHORT),
        lambda: api.label_with_judge(workspace, model, [], SHORT),
        lambda: api.label_with_judge(workspace, "no-such-run/final", PROMPTS, SHORT),
        lambda: api.label_with_judge(workspace, model, PROMPTS, "no such judge"),
        lambda: api.label_with_judge(workspace, model, PROMPTS, SHORT, name="../escape"),
        lambda: api.label_with_judge(workspace, model, PROMPTS, SHORT, name="alpaca-en-sample"),
        lambda: api.judge_agreement(workspace, "alpaca-en-sample", SHORT),
        lambda: api.judge_agreement(workspace, "", SHORT),
    ]
    for call in refused:
        with pytest.raises(StudioError) as error:
            call()
        assert len(str(error.value)) < 400, str(error.value)   # one sentence, never the huge input echoed
    assert not list(jobs.jobs_root(workspace).iterdir()), "nothing was started"
    assert not (workspace / "datasets").exists() or not list((workspace / "datasets").iterdir())


def follow(workspace, job_id: str) -> dict:
    status = jobs.wait(jobs.job_dir_of(workspace, job_id))
    assert status["status"] == "completed", status
    return api.job_results(workspace, job_id)


def test_a_judge_labelled_dataset_trains_dpo_and_a_reward_model(tiny_model, workspace):
    from pipelines.train import train_run

    model = str(tiny_model)
    # The tiny model samples and judges: the counts add up, whatever a random model prefers.
    job_id = api.start_job(workspace, "label_with_judge", {"checkpoint": model, "prompts": PROMPTS, "judge": model,
                                                           "n": 3, "name": "tiny-judged", "settings": QUICK})
    found = follow(workspace, job_id)
    summary = found["summary"]
    assert summary["pairs"] == len(PROMPTS) * 3 == len(found["rows"])
    assert summary["pairs_judged"] + summary["skipped_identical"] == summary["pairs"]
    assert summary["verdicts_kept"] + summary["dropped_disagreeing"] == summary["pairs_judged"]
    assert summary["verdicts_kept"] == sum(1 for r in found["rows"] if r["winner"])
    assert summary["seconds"] > 0 and summary["judge"] == model
    # A rule judge always decides between different answers: the dataset it saves is what DPO and reward take.
    job_id = api.label_with_judge(workspace, model, PROMPTS, SHORT, n=2, name="rule-judged")
    assert api.job_status(workspace, job_id)["kind"] == "label_with_judge"   # a job like any other
    summary = follow(workspace, job_id)["summary"]
    assert summary["dataset"] == "rule-judged" and summary["verdicts_kept"] >= 1
    lines = (workspace / "datasets" / "rule-judged" / "data.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[0])
    assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert len(row["chosen"][0]["content"].split()) <= len(row["rejected"][0]["content"].split()) or \
        row["judge_p_chosen"] > 0.5
    assert row["judge"] and row["judge_p_chosen"] > 0.5
    meta = json.loads((workspace / "datasets" / "rule-judged" / "meta.json").read_text())
    assert meta["kind"] == "preference" and meta["rows"] == len(lines) == summary["verdicts_kept"]
    assert "rule-judged" in [d["name"] for d in api.list_datasets(workspace)]
    for stage in ("dpo", "reward"):
        config = tiny_config(model, max_steps=2, batch_size=2, save_steps=2, max_length=512).replace("stage: sft", f"stage: {stage}")
        run_dir = api.prepare_run(workspace, config.replace("dataset: tiny.jsonl", "dataset: rule-judged"))
        assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)


def test_agreement_and_kappa_on_hand_made_examples(workspace):
    # p_o = 3/4; p_e = 1/2 · 1/4 + 1/2 · 3/4 = 1/2; κ = (3/4 − 1/2) / (1 − 1/2) = 1/2
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.5)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b", "a", "b"], ["b", "a", "b", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None and cohen_kappa([], []) is None
    assert agreement_summary(["a", "a", "b", "b"], ["a", "b", "b", "b"], pairs=8) == {
        "pairs": 8, "verdicts": 4, "coverage": 0.5, "agreement": 0.75, "kappa": pytest.approx(0.5)}
    # Votes where people chose the shorter answer three times out of four; a judge that likes short answers.
    votes = [{"prompt": [{"role": "user", "content": f"Question {i}"}],
              "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
              "chosen_checkpoint": "x/final", "rejected_checkpoint": "y/final"}
             for i, (chosen, rejected) in enumerate([("Yes.", "Well, it depends on many things."),
                                                     ("No.", "I would rather not say anything."),
                                                     ("Paris.", "The capital is a lovely city, Paris."),
                                                     ("It is a long story, told slowly.", "Short.")])]
    write_jsonl(workspace / "votes.jsonl", votes)
    report = api.judge_agreement(workspace, "votes.jsonl", SHORT)
    assert (report["pairs"], report["verdicts"], report["coverage"], report["agreement"]) == (4, 4, 1.0, 0.75)
    assert [r["judge_picks"] for r in report["rows"]] == ["chosen", "chosen", "chosen", "rejected"]
    people = ["a" if r["shown_first"] == "chosen" else "b" for r in report["rows"]]
    picked = [h if r["agrees"] else ("b" if h == "a" else "a") for h, r in zip(people, report["rows"])]
    assert report["kappa"] == cohen_kappa(people, picked)
    assert {r["shown_first"] for r in report["rows"]} == {"chosen", "rejected"}   # a seeded deal, both sides
    assert api.judge_agreement(workspace, "votes.jsonl", SHORT)["rows"] == report["rows"]   # the same deal again


def test_the_compare_tabs_judge_handlers_say_what_they_found(workspace):
    from studio.tabs import judge_view

    with pytest.raises(StudioError):
        judge_view.judge_last_round(workspace, SHORT, "", "", {})   # no round asked yet: one sentence
    shown = judge_view.judge_last_round(workspace, SHORT, "", "",
                                        {"prompt": "Say hi", "answers": ["Hello there, how are you today?", "Hi!"]})
    assert "**B**" in shown and shown.count("p(") == 2   # both orders, then the verdict
    report = judge_view.label_report({"dataset": "judged", "verdicts_kept": 3, "pairs_judged": 4, "agreement_rate": 0.75,
                                      "skipped_identical": 1, "seconds": 12.0})
    assert "judged" in report and "DPO" in report and "75%" in report
    assert judge_view.label_report({"dataset": None, "pairs_judged": 4}) == ""   # the job's warning says why
    line = judge_view.agreement_report({"pairs": 8, "verdicts": 4, "coverage": 0.5, "agreement": 0.75, "kappa": 0.5})
    assert "4 of 8" in line and "3 of them" in line and "0.50" in line
    assert "n/a" in judge_view.agreement_report({"pairs": 2, "verdicts": 0, "coverage": 0.0, "agreement": None,
                                                 "kappa": None})
