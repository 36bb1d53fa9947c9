"""The leaderboard from votes: Bradley–Terry (evalica) recovers simulated strengths within its bootstrap intervals,
ties count half a win, every vote round is logged once, older vote datasets still count, the length-bias check, and
the Compare tab's board and Regenerate."""

import json
import math
import time

import numpy as np
import pytest

from pipelines import api
from pipelines.compare import vote
from pipelines.errors import StudioError
from pipelines.leaderboard import PRIOR_TIES, Battles, board, length_bias, wilson_interval
from tests.conftest import tiny_config, write_jsonl

BASE = "smollm2-135m-instruct"   # not a run's checkpoint: the anchor
TRUE = {BASE: 1000.0, "sft/final": 1100.0, "dpo/final": 1200.0, "ppo/final": 900.0}
TIE_SHARE = 0.2


def simulated(rng, rounds: int = 300) -> Battles:
    """Pairwise votes drawn from TRUE: a tie with probability TIE_SHARE, else a win, chosen so that a's expected
    score (a tie half a win) is the Bradley–Terry 1 / (1 + 10^((r_b − r_a)/400)): the model the board documents."""
    names, battles = list(TRUE), Battles()
    for _ in range(rounds):
        a, b = rng.choice(len(names), 2, replace=False)
        expected = 1 / (1 + 10 ** ((TRUE[names[b]] - TRUE[names[a]]) / 400))
        win = expected - TIE_SHARE / 2   # P(win) + P(tie)/2 = expected
        draw = rng.random()
        score = 1.0 if draw < win else 0.5 if draw < win + TIE_SHARE else 0.0
        battles.rounds.append([(names[a], names[b], score)])
    return battles


def test_bradley_terry_recovers_the_ordering_and_its_intervals_cover_the_true_ratings():
    rng = np.random.default_rng(7)
    covered, intervals, ordered = 0, 0, 0
    for replication in range(20):
        report = board(simulated(rng), resamples=200, seed=replication)
        assert report["anchor"] == BASE and next(r for r in report["ratings"] if r["checkpoint"] == BASE)["rating"] == 1000
        ordered += [r["checkpoint"] for r in report["ratings"]] == sorted(TRUE, key=TRUE.get, reverse=True)
        for entry in report["ratings"]:
            if entry["checkpoint"] != BASE:
                intervals += 1
                covered += entry["low"] <= TRUE[entry["checkpoint"]] <= entry["high"]
    assert ordered >= 16, f"the true order in {ordered} of 20 simulated datasets"
    assert covered / intervals >= 0.8, f"the 95% intervals held the true rating {covered} times of {intervals}"


def test_the_bootstrap_of_a_few_hundred_votes_takes_well_under_a_second_or_two():
    battles = simulated(np.random.default_rng(0), rounds=300)
    board(battles, resamples=5)   # the imports, once
    started = time.perf_counter()
    board(battles, resamples=1000)
    took = time.perf_counter() - started
    print(f"300 rounds, 1000 resamples: {took:.2f} s")   # 0.37 s measured on the 2-core machine
    assert took < 3


def test_a_tie_counts_as_half_a_win_and_a_ranking_of_n_holds_n_choose_2_battles(workspace):
    vote(workspace, "ties", "Q1", ["long answer", "short"], ["a/final", "b/final"], [1, 2])
    vote(workspace, "ties", "Q2", ["same", "same!"], ["a/final", "b/final"], [1, 1])    # a tie
    vote(workspace, "ties", "Q3", ["x", "y", "z"], ["a/final", "b/final", "c/final"], [0, 0, 0])   # all bad: ties
    report = api.leaderboard(workspace, ["ties"])
    assert report["votes"] == 3 and report["ties"] == "half a win each" and report["anchor"] is None
    assert report["battles"]["a/final"] == {"b/final": 3, "c/final": 1}
    assert report["win_rates"]["a/final"]["b/final"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report["win_rates"]["b/final"]["a/final"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert report["win_rates"]["c/final"] == {"a/final": 0.5, "b/final": 0.5}
    rows = {r["checkpoint"]: r for r in report["ratings"]}
    assert (rows["a/final"]["wins"], rows["a/final"]["ties"], rows["a/final"]["losses"]) == (1, 3, 0)
    assert sum(r["battles"] for r in report["ratings"]) == 2 * (1 + 1 + 3)
    # Two checkpoints alone: p_a / p_b is a's score over b's, ties (and the prior's tenth of a tie) half each.
    two = board(Battles(rounds=[[("a/final", "b/final", 1.0)], [("a/final", "b/final", 0.5)]]), resamples=0)
    a, b = (next(r["rating"] for r in two["ratings"] if r["checkpoint"] == n) for n in ("a/final", "b/final"))
    expected = 400 * math.log10((1 + 0.5 + PRIOR_TIES / 2) / (0.5 + PRIOR_TIES / 2))
    assert a - b == pytest.approx(expected, abs=0.2) and math.sqrt((a - 1000) * (1000 - b)) == pytest.approx(expected / 2, abs=0.2)
    assert two["win_rates"]["a/final"]["b/final"] == 0.75


def test_a_bad_answer_loses_to_a_ranked_one():
    from pipelines.leaderboard import battles_of_ranking
    assert battles_of_ranking(["a", "b", "c"], [2, 0, 1]) == [(0, 1, 1.0), (0, 2, 0.0), (1, 2, 0.0)]


def test_every_vote_round_is_logged_once_and_a_round_voted_again_is_refused_with_nothing_written(workspace, tiny_model):
    checkpoints = [BASE, "sft/final"]
    first = api.vote(workspace, "log", "Say hi", ["Hello there!", "Hi"], checkpoints, [2, 1])
    folder = workspace / "datasets" / "log"
    line = json.loads((folder / "votes.jsonl").read_text().splitlines()[0])
    assert line["round"] == first["round"] and line["checkpoints"] == checkpoints and line["ranking"] == [2, 1]
    assert line["lengths"] == [12, 2] and line["time"] > 0
    assert json.loads((folder / "data.jsonl").read_text())["round"] == first["round"]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for again in (lambda: api.vote(workspace, "log", "Say hi", ["Hello there!", "Hi"], checkpoints, [1, 1]),
                  lambda: api.vote(workspace, "log", "Say hi", ["Hi", "Hello there!"], checkpoints[::-1], [1, 2])):
        with pytest.raises(StudioError, match="already have your vote") as refused:
            again()   # the same round, whichever column each answer sits in
        assert refused.value.code == "compare.already_voted"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "a refused vote writes nothing"
    # A tie alone is a battle: it makes the dataset (no row), which is listed as it is and refused for training.
    tie = api.vote(workspace, "tie-only", "Say hi", ["Hello there!", "Hi"], checkpoints, [1, 1])
    assert (tie["added_rows"], tie["rows"], tie["votes"]) == (0, 0, 1)
    listed = {d["name"]: d for d in api.list_datasets(workspace)}["tie-only"]
    assert (listed["kind"], listed["rows"], listed["votes"]) == ("preference", 0, 1)
    assert api.leaderboard(workspace, "tie-only")["votes"] == 1
    config = tiny_config(tiny_model, max_steps=1).replace("stage: sft", "stage: dpo").replace("dataset: tiny.jsonl", "dataset: tie-only")
    with pytest.raises(StudioError, match="holds votes but no preference pair yet"):
        api.prepare_run(workspace, config)


def test_an_older_vote_dataset_without_a_votes_log_still_counts(workspace):
    old = workspace / "datasets" / "old-votes"
    old.mkdir(parents=True)
    pair = lambda chosen, rejected, good, bad: {   # noqa: E731 - a row as votes wrote them before votes.jsonl
        "prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}], "chosen_checkpoint": chosen, "rejected_checkpoint": rejected}
    write_jsonl(old / "data.jsonl", [pair("sft/final", BASE, "a long answer", "short"),
                                     pair("sft/final", BASE, "ok", "a longer one"), pair(BASE, "sft/final", "y", "n")])
    (old / "meta.json").write_text(json.dumps({"kind": "preference", "format": "preference", "rows": 3, "votes": 3}))
    report = api.leaderboard(workspace, ["old-votes"])
    assert report["votes"] == 3 and report["anchor"] == BASE
    assert report["win_rates"]["sft/final"][BASE] == pytest.approx(2 / 3)
    assert report["length_bias"]["battles"] == 2 and report["length_bias"]["longer_won"] == 1
    vote(workspace, "old-votes", "Q2", ["a", "b"], ["sft/final", BASE], [1, 2])   # a logged round beside the old rows
    assert api.leaderboard(workspace, ["old-votes"])["battles"]["sft/final"][BASE] == 4, "no row is counted twice"


def test_the_length_bias_check_on_a_hand_made_case():
    from scipy.stats import binomtest

    # 16 of the 25 decisive votes between answers of different lengths went to the longer one; ties and equal
    # lengths tell nothing about length.
    lengths = [(30, 10, 1.0)] * 10 + [(10, 30, 0.0)] * 6 + [(30, 10, 0.0)] * 9 + [(20, 20, 1.0)] * 4 + [(30, 10, 0.5)] * 3
    bias = length_bias(lengths)
    reference = binomtest(16, 25).proportion_ci(0.95, method="wilson")
    assert (bias["battles"], bias["longer_won"], bias["share"]) == (25, 16, 0.64)
    assert (bias["low"], bias["high"]) == (round(reference.low, 4), round(reference.high, 4))
    assert not bias["beyond_chance"]
    assert length_bias([(30, 10, 1.0)] * 20)["beyond_chance"] and length_bias([])["battles"] == 0
    assert wilson_interval(0, 5)[0] == 0.0
    from pipelines.leaderboard import length_bias_sentence
    assert length_bias_sentence(bias) == "The longer answer won 64% of 25 decisive votes (95%: 45%–80%): not beyond chance."


def test_the_leaderboard_refuses_what_is_no_set_of_vote_datasets_in_one_sentence(workspace):
    from pipelines.data.store import write_dataset

    write_dataset("instructions", workspace, "instruction", "alpaca", [{"messages": []}], "test")
    for datasets, code in (([], "leaderboard.no_datasets"), ([f"d{i}" for i in range(21)], "leaderboard.too_many"),
                           (["../runs"], "paths.bad_name"), (["missing"], "data.no_dataset"),
                           (["instructions"], "leaderboard.not_votes")):
        with pytest.raises(StudioError) as refused:
            api.leaderboard(workspace, datasets)
        assert refused.value.code == code and len(str(refused.value)) < 300


def test_the_compare_tab_shows_the_board_after_a_vote(workspace):
    from studio.leaderboard_view import show_board
    from studio.tabs.compare import cast_ranking

    assert "No votes" in show_board(workspace, "ui-votes")
    streaming = {"prompt": "Say hi", "answers": ["Hel", ""], "complete": False}
    with pytest.raises(StudioError, match="still coming"):   # half an answer is not voted on
        cast_ranking(workspace, "A>B", "ui-votes", streaming, [BASE, "sft/final"])
    asked = {"prompt": "Say hi", "answers": ["Hello!", "Hey"], "settings": {"temperature": 0.7}, "histories": [[], []],
             "column_settings": [{}, {}], "voted": False}
    cast_ranking(workspace, "A>B", "ui-votes", asked, [BASE, "sft/final"])
    shown = show_board(workspace, "ui-votes")
    assert "| 1 | `smollm2-135m-instruct` | 1000 | — | 1 | 1 / 0 / 0 |" in shown
    assert "| 2 · `sft/final` | 0% |  |" in shown, "the win-rate matrix: the row's share over each column"
    assert "The longer answer won 100% of 1 decisive votes" in shown
    with pytest.raises(StudioError, match="already have your vote"):   # the log refuses it, whatever the UI's flag says
        cast_ranking(workspace, "B>A", "ui-votes", asked, [BASE, "sft/final"])


def test_regenerate_throws_the_last_round_away_and_asks_it_again_with_a_new_seed(workspace, monkeypatch):
    import random

    from studio.tabs import compare as tab

    asked_with = {}

    def fake_ask(workspace, prompt, count, blind, max_new, temperature, top_p, seed, system, **columns):
        asked_with.update(prompt=prompt, seed=seed, temperature=temperature, system=system, **columns)
        yield ("chatbots…", "mapping", "asked", "", "")

    monkeypatch.setattr(tab, "ask", fake_ask)
    monkeypatch.setattr(random, "shuffle", lambda order: order.reverse())   # the new deal swaps the two columns
    turn = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]   # noqa: E731
    chatbots = [turn("Hi", "A1") + turn("Why?", "A2"), turn("Hi", "B1") + turn("Why?", "B2"), [], []]
    asked = {"prompt": "Why?", "answers": ["A2", "B2"], "voted": False, "column_settings": [{"top_p": 0.5}, {}],
             "settings": {"max_new_tokens": 32, "temperature": 0.8, "top_p": 0.9, "seed": 3, "system_prompt": "Be kind"}}
    *_, seed = list(tab.regenerate_round(workspace, asked, ["one/final", "two/final"], True, ["", ""], chatbots))[-1]
    assert asked_with["prompt"] == "Why?" and asked_with["seed"] == seed != 3 and asked_with["system"] == "Be kind"
    assert asked_with["previous"] == ["two/final", "one/final"], "blind: dealt anew"
    assert asked_with["chatbots"][:2] == [turn("Hi", "B1"), turn("Hi", "A1")], "each checkpoint keeps its own turns"
    assert asked_with["overrides"] == ["", '{"top_p": 0.5}'], "each checkpoint keeps its own override"
    with pytest.raises(StudioError, match="Ask a question first"):
        list(tab.regenerate_round(workspace, {}, [], False, ["", ""], chatbots))
