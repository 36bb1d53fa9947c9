"""Declarative rule rewards (pipelines/rl/rule_spec.py): each kind scores as its docstring says, a bad rule is one
sentence naming its position, rules travel in the config through prepare_run, they add to a reward file's score,
and a PPO run with rules alone raises its rule reward on the tiny model."""

import re

import pytest
import yaml

from pipelines import api, runs
from pipelines.config import parse_config_text
from pipelines.errors import StudioError
from pipelines.rl.rewards import RewardScorer, parse_reward, rule_only
from pipelines.rl.rule_spec import MAX_PATTERN, MAX_RULES, parse_rules, rules_score
from pipelines.run_files import read_jsonl, read_metrics, read_status
from pipelines.train import train_run
from tests.conftest import write_jsonl


def score(rule: dict, answer: str) -> float:
    (parsed,) = parse_rules([rule])
    return parsed.score(answer)


@pytest.mark.parametrize("rule, answer, expected", [
    ({"contains": "thanks"}, "Many thanks!", 1.0),
    ({"contains": "Thanks"}, "many thanks", 0.0),
    ({"contains": 42}, "It is 42.", 1.0),                                  # YAML reads 42 as a number
    ({"contains": "Thanks", "ignore_case": True}, "many THANKS", 1.0),
    ({"contains_any": ["thanks", "please"]}, "please do", 1.0),
    ({"contains_any": ["thanks", "please"]}, "no", 0.0),
    ({"contains_all": ["a", "b", "c", "d"]}, "a b c", 0.75),              # the share of the texts present
    ({"not_contains": ["sorry", "cannot"]}, "Sure, here it is.", 1.0),
    ({"not_contains": "sorry"}, "I am sorry.", 0.0),                      # one text or a list
    ({"starts_with": "Sure"}, "  Sure, here.", 1.0),                      # surrounding whitespace stripped
    ({"ends_with": "Hope this helps!"}, "Paris. Hope this helps!\n  ", 1.0),
    ({"ends_with": "Hope this helps!"}, "Hope this helps! Paris.", 0.0),
    ({"ends_with": "hope THIS helps!", "ignore_case": True}, "Paris. Hope this helps!", 1.0),
    ({"regex": r"\d+"}, "It is 42.", 1.0),
    ({"regex": r"^\d"}, "It is 42.", 0.0),
    ({"regex": "^- ", "per_line": True}, "- one\n\n- two\nthree\n- four", 0.75),   # blank lines do not count
    ({"starts_with": "-", "per_line": True}, "- a\nb", 0.5),
    ({"regex": "^- ", "per_line": True}, "   \n", 0.0),                  # no line to match
    ({"min_words": 4}, "one two three four five", 1.0),
    ({"min_words": 4}, "one two", 0.5),                                   # the share of the way there
    ({"max_words": 2}, "one two", 1.0),
    ({"max_words": 2}, "one two three four", 0.5),
    ({"min_chars": 10}, "  abcde  ", 0.5),
    ({"max_chars": 5}, "abcdefghij", 0.5),
    ({"min_lines": 2}, "a\n\nb\nc", 1.0),
    ({"max_lines": 1}, "a\nb\n\n", 0.5),
    ({"json_valid": True}, '{"a": [1, 2]}', 1.0),
    ({"json_valid": True}, '```json\n{"a": 1}\n```', 1.0),             # one fenced block, the whole answer
    ({"json_valid": True}, "{'a': 1}", 0.0),
    ({"language": "ko"}, "안녕하세요 hi", 5 / 7),                           # Hangul letters among letters
    ({"language": "en"}, "안녕하세요 hi", 2 / 7),                           # Latin A-Z among letters
    ({"language": "ko"}, "123 !!", 0.0),                                  # no letters
    ({"no_repeats": True}, "a b c a b c", 0.75),                          # 1 of its 4 word 3-grams repeats
])
def test_each_rule_kind_scores_as_stated(rule, answer, expected):
    assert score(rule, answer) == pytest.approx(expected)


def test_rules_are_weighted_and_summed():
    rules = parse_rules([{"contains": "a"}, {"contains": "b", "weight": 0.5}, {"contains": "c", "weight": -2}])
    assert rules_score(rules, ["a b c", "a b", "", "c"]) == pytest.approx([-0.5, 1.5, 0.0, -2.0])


def one_sentence(message: str) -> bool:
    return message.endswith(".") and not re.search(r"[.;!?] [A-Z]", message[:-1])


@pytest.mark.parametrize("bad, words", [
    ({"max_words": -5}, "'max_words' must be a whole number from 1 to 100000; got -5."),
    ({"max_words": 2.5}, "whole number"),
    ({"max_words": True}, "whole number"),
    ({"maximum_words": 5}, "unknown key 'maximum_words'"),
    ({"weight": 2}, "names no kind"),
    ({"contains": "a", "ends_with": "b"}, "several kinds"),
    ({"contains": "a", "weight": 11}, "'weight' must be a number from -10 to 10"),
    ({"contains": "a", "weight": float("nan")}, "'weight'"),
    ({"contains": "a", "per_line": "yes"}, "'per_line' must be true or false"),
    ({"max_words": 5, "per_line": True}, "'per_line' applies only to the text kinds"),
    ({"json_valid": False}, "takes only true"),
    ({"language": "fr"}, "'language' must be one of en, ko"),
    ({"contains": ""}, "'contains' must be a text of 1 to 1000 characters"),
    ({"contains": "x" * 1001}, "'contains' must be a text"),
    ({"contains_any": []}, "list of 1 to 100 texts"),
    ({"contains_any": ["a"] * 101}, "list of 1 to 100 texts"),
    ({"contains_any": ["a", None]}, "list of 1 to 100 texts"),
    ({"contains": 2.5}, "'contains' must be a text"),
    ({"regex": "("}, "does not compile"),
    ({"regex": "a" * (MAX_PATTERN + 1)}, f"at most {MAX_PATTERN} are allowed"),
    ({"regex": "(a+)+$"}, "repeats a part that itself repeats"),
    ({"regex": r"(\w*\s)*x"}, "repeats a part that itself repeats"),
    ("contains: a", "must be a mapping"),
])
def test_a_bad_rule_is_one_sentence_naming_its_position(bad, words):
    good = [{"contains": "a"}, {"max_words": 80}]
    with pytest.raises(StudioError) as caught:
        parse_rules([*good, bad], "ppo.rules")
    message = str(caught.value)
    assert message.startswith("Rule 3 of ppo.rules") and words in message and one_sentence(message), message
    assert "ppo.rules의 규칙 3" in caught.value.text("ko")


def test_harmless_repeats_in_a_regex_are_allowed():
    for pattern in [r"(ab){2}", r"(\d{3}-)+\d{4}", r"^- \w+", r"(?:yes|no)+", r"\b(\w+)\b"]:
        parse_rules([{"regex": pattern}])


def test_a_rule_list_itself_is_bounded_and_must_be_a_list():
    with pytest.raises(StudioError, match=f"at most {MAX_RULES} are allowed"):
        parse_rules([{"contains": "a"}] * (MAX_RULES + 1), "ppo.rules")
    with pytest.raises(StudioError, match="ppo.rules must be a list of rules"):
        parse_rules({"contains": "a", "weight": 2, "max_words": 3}, "ppo.rules")
    assert parse_rules(None) == parse_rules([]) == []


def test_rules_in_a_config_are_checked_when_it_is_read_and_a_text_box_of_yaml_is_a_list():
    config = parse_config_text("stage: grpo\ngrpo:\n  rules: \"- max_words: 80\\n- {regex: '^- ', per_line: true}\"\n")
    assert config.grpo.rules == [{"max_words": 80}, {"regex": "^- ", "per_line": True}]
    with pytest.raises(StudioError, match=r"^Rule 2 of rloo.rules: 'min_chars' must be a whole number"):
        parse_config_text("stage: rloo\nrloo: {rules: [{contains: a}, {min_chars: 0}]}\n")
    with pytest.raises(StudioError, match="rejection_sampling.rules is not a valid YAML or JSON list"):
        parse_config_text("stage: rejection_sampling\nrejection_sampling: {rules: '- [unclosed'}\n")
    assert parse_config_text("stage: sft\nppo: {rules: [{bad: 1}]}\n").stage == "sft", "only the run's own stage counts"


def test_rules_only_count_as_rule_only_and_a_run_needs_some_reward():
    def config(section: str):
        return parse_config_text(f"stage: ppo\nppo: {section}\n")
    assert rule_only(config("{rules: [{max_words: 80}]}"))
    assert rule_only(config("{reward: rules.py, rules: [{max_words: 80}]}"))
    assert not rule_only(config("{reward: my-rm/final, rules: [{max_words: 80}]}"))
    assert not rule_only(config("{reward: ''}"))
    with pytest.raises(StudioError) as caught:
        parse_reward("", ".")
    assert caught.value.code == "rl.no_reward" and "rules" in str(caught.value)
    assert parse_reward("", ".", rules=[{"contains": "a"}, {"max_words": 3}]).describe() == "2 rules"


@pytest.fixture
def prompts(workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    return workspace


RULES = [{"max_chars": 12}, {"language": "en", "weight": 0.5}]


def ppo_config(model, rules, steps=24, reward="") -> str:
    return (f"stage: ppo\nmodel: {model}\ndataset: prompts.jsonl\npeft: {{method: full}}\n"
            f"train: {{max_steps: {steps}, batch_size: 8, learning_rate: 3.0e-3, save_steps: {steps}, "
            f"warmup_ratio: 0.0, lr_scheduler: constant}}\n"
            f"ppo: {{reward: '{reward}', rules: {yaml.safe_dump(rules, default_flow_style=True).strip()}, "
            f"response_length: 16, ppo_epochs: 4, minibatches: 2}}\n")


def test_a_config_with_rules_round_trips_through_prepare_run(tiny_model, prompts):
    run_dir = api.prepare_run(prompts, ppo_config(tiny_model, RULES))
    assert runs.load_config(run_dir).ppo.rules == RULES
    assert parse_config_text(runs.load_config(run_dir).to_yaml()).ppo.rules == RULES
    with pytest.raises(StudioError) as caught:
        api.prepare_run(prompts, ppo_config(tiny_model, []))
    assert caught.value.code == "rl.no_reward"
    with pytest.raises(StudioError, match="^Rule 2 of ppo.rules: the regex"):
        api.prepare_run(prompts, ppo_config(tiny_model, [{"contains": "a"}, {"regex": "(a*)*b"}]))


def test_rules_add_to_a_reward_files_score(prompts):
    (prompts / "rules.py").write_text("def reward(prompts, completions):\n    return [10.0 for c in completions]\n",
                                      encoding="utf-8")
    with RewardScorer(parse_reward("rules.py", prompts, rules=[{"contains": "hi"}, {"max_words": 1, "weight": 2}]),
                      prompts) as scorer:
        scores = scorer([[{"role": "user", "content": "Say hi"}]] * 2, ["hi", "oh hi there"])
        assert scores == pytest.approx([10 + 1 + 2, 10 + 1 + 2 / 3])
        assert scorer.rule_scores == pytest.approx([3, 1 + 2 / 3]), "the rules' own part, which PPO logs"


def test_a_ppo_run_with_rules_alone_raises_its_rule_reward(tiny_model, prompts):
    run_dir = api.prepare_run(prompts, ppo_config(tiny_model, RULES))
    assert train_run(run_dir, echo=False) == "completed", read_status(run_dir)
    metrics = read_metrics(run_dir)
    rule_scores = [m["objective/rule_scores"] for m in metrics]
    assert len(rule_scores) == 24 and all(0 <= s <= 1.5 for s in rule_scores)
    assert sum(rule_scores[-6:]) / 6 > sum(rule_scores[:6]) / 6 + 0.1, rule_scores
    assert [m["objective/scores"] for m in metrics] == pytest.approx(rule_scores), "rules alone: they are the score"
    samples = api.run_samples(prompts, run_dir.name)
    (max_chars, english) = parse_rules(RULES)
    sample = samples[-1]
    assert sample["score"] == pytest.approx(max_chars.score(sample["response"]) + 0.5 * english.score(sample["response"]))


def test_grpo_and_best_of_n_score_with_rules(tiny_model, prompts):
    grpo = api.prepare_run(prompts, (
        f"stage: grpo\nmodel: {tiny_model}\ndataset: prompts.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\n"
        "train: {max_steps: 2, batch_size: 8, learning_rate: 1.0e-2, save_steps: 2, warmup_ratio: 0.0}\n"
        "grpo: {rules: [{max_chars: 12}], num_generations: 4, response_length: 12}\n"))
    assert train_run(grpo, echo=False) == "completed", read_status(grpo)
    (rule,) = parse_rules([{"max_chars": 12}])
    samples = api.run_samples(prompts, grpo.name)
    assert samples and all(s["score"] == pytest.approx(rule.score(s["response"])) for s in samples)
    best_of_n = api.prepare_run(prompts, (
        f"stage: rejection_sampling\nmodel: {tiny_model}\ndataset: prompts.jsonl\ntrain: {{batch_size: 4, max_steps: 1}}\n"
        "rejection_sampling: {rules: [{max_chars: 12}], num_samples: 4, response_length: 16}\n"))
    assert train_run(best_of_n, echo=False) == "completed", read_status(best_of_n)
    for row in (r for batch in read_jsonl(best_of_n / "kept.jsonl") for r in batch["rows"]):
        assert row["scores"] == pytest.approx([rule.score(a) for a in row["answers"]])


def test_the_forms_rule_builder_writes_lines_the_config_reads_back():
    from studio.form import values_to_config
    from studio.rule_builder import added_rule

    box = added_rule("ppo", "", "ends_with", "Hope this helps!", False, False, 1.0)
    box = added_rule("ppo", box, "contains_any", "thanks | please", True, True, 0.5)
    box = added_rule("ppo", box, "max_words", "80", False, False, 1)
    box = added_rule("ppo", box, "json_valid", "", False, False, -1)
    assert box.count("\n") == 4, "one rule a line"
    expected = [{"ends_with": "Hope this helps!"},
                {"contains_any": ["thanks", "please"], "per_line": True, "ignore_case": True, "weight": 0.5},
                {"max_words": 80}, {"json_valid": True, "weight": -1}]
    config = values_to_config({("", "stage"): "ppo", ("ppo", "rules"): box})
    assert config["ppo"]["rules"] == expected, "the config preview shows the list, not the text"
    assert parse_config_text(yaml.safe_dump(config)).ppo.rules == expected
    with pytest.raises(StudioError, match=r"^Rule 5 of ppo.rules: 'min_words' must be a whole number"):
        added_rule("ppo", box, "min_words", "many", False, False, 1)
    with pytest.raises(StudioError, match=r"^Rule 5 of ppo.rules: 'per_line' applies only"):
        added_rule("ppo", box, "max_chars", "10", True, False, 1)
