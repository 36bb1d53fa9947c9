"""A leaderboard from Compare's votes: a Bradley–Terry fit (evalica) over every battle, on an Elo-like scale, with
bootstrap 95% intervals, pairwise win rates and a length-bias check.

A vote round (one line of a dataset's votes.jsonl) ranks N answers and so holds N(N−1)/2 battles. A tie, and
"both bad" (all ranks 0), is a battle too and counts as **half a win each** (evalica's tie_weight 0.5); an answer
ranked 0 ("bad") loses to every ranked one. Older vote datasets, written before votes.jsonl, count each of their
preference rows (chosen_checkpoint over rejected_checkpoint) as one decisive battle.

Scale: rating = 1000 + 400·log10(p_i / p_anchor), the anchor being the base model (a checkpoint that is not a
run's) with the most battles, else the geometric mean of all. The intervals are the 2.5th and 97.5th percentiles of
each rating, anchored within each resample, when whole rounds are drawn again with replacement and refit.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import StudioError, quote

MAX_DATASETS = 20
BASE_RATING = 1000.0
SCALE = 400.0
# A tenth of a tie between every two checkpoints: keeps a checkpoint without a win at a finite rating and joins
# checkpoints that never met, while moving a board of a few dozen battles by a few points only.
PRIOR_TIES = 0.1


@dataclass
class Battles:
    """Every battle, grouped by the round it came from (a round is resampled whole: its battles share a prompt)."""
    rounds: list[list[tuple[str, str, float]]] = field(default_factory=list)   # (a, b, a's score: 1, 0.5 or 0)
    lengths: list[tuple[int, int, float]] = field(default_factory=list)        # decisive battles: (len a, len b, score)


def battles_of_ranking(checkpoints: list[str], ranking: list[int]) -> list[tuple[int, int, float]]:
    """(column a, column b, a's score) for every two columns of one ranking (1 = best, equal = tie, 0 = bad)."""
    def score(a: int, b: int) -> float:
        if a == b:
            return 0.5
        if not a or not b:          # 0 is "bad": it loses to any ranked answer
            return 1.0 if a else 0.0
        return 1.0 if a < b else 0.0

    return [(i, j, score(ranking[i], ranking[j]))
            for i in range(len(checkpoints)) for j in range(i + 1, len(checkpoints))]


def read_battles(workspace: Path, datasets: list[str]) -> Battles:
    """The battles of vote datasets: their votes.jsonl rounds, plus their rows that no logged round holds."""
    from pipelines.data.store import datasets_root
    from pipelines.paths import check_name

    if isinstance(datasets, str):
        datasets = [datasets]
    names = list(dict.fromkeys(datasets or []))
    if not names:
        raise StudioError("leaderboard.no_datasets")
    if len(names) > MAX_DATASETS:
        raise StudioError("leaderboard.too_many", count=len(names), limit=MAX_DATASETS)
    battles = Battles()
    for name in names:
        check_name(name, "dataset name")
        folder = datasets_root(workspace) / name
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
        if meta is None:
            raise StudioError("data.no_dataset", name=quote(name))
        if meta.get("kind") != "preference":
            raise StudioError("leaderboard.not_votes", dataset=quote(name))
        for line in _lines(folder / "votes.jsonl"):
            _add_round(battles, line["checkpoints"], line["ranking"], line.get("lengths"))
        for row in _lines(folder / "data.jsonl"):
            # A row of a logged round is in votes.jsonl already; a row from before the log is its own battle.
            if "round" not in row and row.get("chosen_checkpoint") and row.get("rejected_checkpoint"):
                lengths = [len(row["chosen"][0]["content"]), len(row["rejected"][0]["content"])]
                _add_round(battles, [row["chosen_checkpoint"], row["rejected_checkpoint"]], [1, 2], lengths)
    return battles


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _add_round(battles: Battles, checkpoints: list[str], ranking: list[int], lengths: list[int] | None) -> None:
    played = []
    for i, j, score in battles_of_ranking(checkpoints, ranking):
        if checkpoints[i] == checkpoints[j]:
            continue   # a checkpoint beside itself tells nothing about its rating
        played.append((checkpoints[i], checkpoints[j], score))
        if lengths and score != 0.5:
            battles.lengths.append((lengths[i], lengths[j], score))
    battles.rounds.append(played)


def is_base_model(checkpoint: str) -> bool:
    """A checkpoint that is not a run's (`<run>/final`, `<run>/checkpoint-N`): the bundled model or a Hub id."""
    from pipelines.models import CHECKPOINT_ID
    return not CHECKPOINT_ID.fullmatch(checkpoint)


def leaderboard(workspace: Path, datasets: list[str], resamples: int = 1000, seed: int = 0) -> dict:
    """The board of the votes in `datasets` (at most MAX_DATASETS vote datasets): ratings (best first: checkpoint,
    rating, low, high, battles, wins, ties, losses), win_rates ({a: {b: share}}, a tie counting half a win),
    battles ({a: {b: count}}), votes (rounds), anchor, ties ("half a win each") and length_bias."""
    if not isinstance(resamples, int) or not 0 <= resamples <= 10000:
        raise StudioError("leaderboard.bad_resamples", limit=10000)
    return board(read_battles(workspace, datasets), resamples, seed)


def board(battles: Battles, resamples: int = 1000, seed: int = 0) -> dict:
    """leaderboard() of battles already read."""
    players = sorted({name for played in battles.rounds for a, b, _ in played for name in (a, b)})
    bases = [p for p in players if is_base_model(p)]
    counts = _counts(battles, players)
    anchor = max(bases, key=lambda p: (counts["battles"][p], p)) if bases else None
    result = {"ratings": [], "win_rates": {}, "battles": {}, "votes": len(battles.rounds), "anchor": anchor,
              "ties": "half a win each", "length_bias": length_bias(battles.lengths)}
    if len(players) < 2:
        return result
    cells, per_round = _cells(battles, players)
    fit = _Fit(cells, players, anchor)
    ratings = fit(per_round.sum(axis=0))
    rng = np.random.default_rng(seed)
    rounds = len(per_round)
    drawn = np.array([fit(rng.multinomial(rounds, np.full(rounds, 1 / rounds)) @ per_round)
                      for _ in range(resamples)]) if resamples else None   # (resamples, players)
    for index, name in enumerate(players):
        low, high = (np.percentile(drawn[:, index], [2.5, 97.5]) if drawn is not None else (np.nan, np.nan))
        result["ratings"].append({"checkpoint": name, "rating": round(float(ratings[index]), 1),
                                  "low": round(float(low), 1), "high": round(float(high), 1),
                                  "battles": counts["battles"][name], "wins": counts["wins"][name],
                                  "ties": counts["ties"][name], "losses": counts["losses"][name]})
    result["ratings"].sort(key=lambda r: -r["rating"])
    result["win_rates"], result["battles"] = counts["win_rates"], counts["pairs"]
    return result


def _counts(battles: Battles, players: list[str]) -> dict:
    """Battles, wins, ties and losses per checkpoint; battles and win rates (a tie half a win) per pair."""
    tally = {key: {p: 0 for p in players} for key in ("battles", "wins", "ties", "losses")}
    pairs: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, float]] = {}
    for played in battles.rounds:
        for a, b, score in played:
            for me, other, mine in ((a, b, score), (b, a, 1 - score)):
                tally["battles"][me] += 1
                tally["wins" if mine == 1 else "ties" if mine == 0.5 else "losses"][me] += 1
                pairs.setdefault(me, {}).setdefault(other, 0)
                pairs[me][other] += 1
                scores.setdefault(me, {}).setdefault(other, 0.0)
                scores[me][other] += mine
    rates = {a: {b: scores[a][b] / n for b, n in row.items()} for a, row in pairs.items()}
    return {**tally, "pairs": pairs, "win_rates": rates}


def _evalica():
    """evalica, imported safely: the scipy.stats it imports inspects torch when torch is in sys.modules, and fails on
    a torch that another thread (a model loading for Chat) is still importing; waiting for that import to finish
    first avoids it."""
    if "torch" in sys.modules:
        import torch  # noqa: F401  - blocks until the other thread's import of torch is complete
    import evalica
    return evalica


def _cells(battles: Battles, players: list[str]) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The distinct (a, b, outcome) cells every battle falls in, and how many of each cell every round holds:
    a resample then reweighs cells instead of refitting hundreds of separate battles."""
    evalica = _evalica()

    outcome = {1.0: evalica.Winner.X, 0.5: evalica.Winner.Draw, 0.0: evalica.Winner.Y}
    position = {name: i for i, name in enumerate(players)}
    cells: dict[tuple[int, int, int], int] = {}
    entries = []
    for number, played in enumerate(battles.rounds):
        for a, b, score in played:
            key = (position[a], position[b], outcome[score])
            entries.append((number, cells.setdefault(key, len(cells))))
    per_round = np.zeros((len(battles.rounds), len(cells)))   # (rounds, cells)
    for number, cell in entries:
        per_round[number, cell] += 1
    return list(cells), per_round


class _Fit:
    """Anchored Elo-like ratings (players,) of a Bradley–Terry fit (evalica) to weighted cells plus the prior ties;
    the cells are laid out once, so a resample costs one fit."""

    def __init__(self, cells: list[tuple[int, int, int]], players: list[str], anchor: str | None):
        import pandas as pd

        evalica = _evalica()
        count = len(players)
        prior = [(i, j, evalica.Winner.Draw) for i in range(count) for j in range(i + 1, count)]
        self.xs, self.ys, self.winners = (list(column) for column in zip(*cells, *prior))
        self.prior_weights = [PRIOR_TIES] * len(prior)
        self.index = pd.Index(range(count))
        self.anchor = players.index(anchor) if anchor else None
        self.bradley_terry = evalica.bradley_terry

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        fitted = self.bradley_terry(self.xs, self.ys, self.winners, index=self.index,
                                    weights=weights.tolist() + self.prior_weights, tie_weight=0.5, limit=1000)
        strength = np.log10(fitted.scores.reindex(self.index).to_numpy(dtype=np.float64))   # (players,)
        # the mean of the logs is the log of the geometric mean
        reference = strength[self.anchor] if self.anchor is not None else strength.mean()
        return BASE_RATING + SCALE * (strength - reference)


def length_bias(lengths: list[tuple[int, int, float]]) -> dict:
    """Of the decisive battles whose answers differ in length, the share the longer answer won, with its Wilson
    95% interval; beyond_chance when that interval leaves out one half."""
    differ = [(a, b, score) for a, b, score in lengths if a != b and score != 0.5]
    longer_won = sum(1 for a, b, score in differ if (a > b) == (score == 1.0))
    if not differ:
        return {"battles": 0, "longer_won": 0, "share": None, "low": None, "high": None, "beyond_chance": False}
    low, high = wilson_interval(longer_won, len(differ))
    return {"battles": len(differ), "longer_won": longer_won, "share": round(longer_won / len(differ), 4),
            "low": round(low, 4), "high": round(high, 4), "beyond_chance": low > 0.5 or high < 0.5}


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (z of a two-sided 95%): unlike share ± z·se it stays inside
    [0, 1] and keeps its coverage for a few dozen trials. Written out, because importing scipy.stats costs the UI
    process over a second for three lines of arithmetic."""
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * (share * (1 - share) / trials + z * z / (4 * trials * trials)) ** 0.5
    return max(0.0, centre - half), min(1.0, centre + half)


def length_bias_sentence(bias: dict) -> str:
    """The length-bias check in plain words, in the language being spoken."""
    from pipelines.messages import text

    if not bias["battles"]:
        return text("leaderboard.no_length_votes")
    verdict = text("leaderboard.beyond_chance" if bias["beyond_chance"] else "leaderboard.within_chance")
    return text("leaderboard.length_bias", share=f"{bias['share']:.0%}", battles=bias["battles"],
                low=f"{bias['low']:.0%}", high=f"{bias['high']:.0%}", verdict=verdict)


def interval_text(entry: dict, anchor: str | None) -> str:
    """"952–1048", or "—" for the anchor, whose rating is 1000 by definition."""
    if entry["checkpoint"] == anchor or entry["low"] != entry["low"]:   # low != low: NaN, no resamples drawn
        return "—"
    return f"{entry['low']:.0f}–{entry['high']:.0f}"


def code_text(name: str) -> str:
    """A name as a Markdown code span (it renders as typed, whatever its characters; bold around quotes does not
    close before a Hangul particle)."""
    return "`" + name.replace("`", "'")[:80] + "`"


def summary_sentence(report: dict, datasets: list[str]) -> str:
    """How many rounds, from which datasets, what 1000 is and how ties count (Markdown)."""
    from pipelines.messages import text

    names = ", ".join(code_text(name) for name in datasets)
    if report["anchor"]:
        return text("leaderboard.summary", votes=report["votes"], datasets=names, anchor=code_text(report["anchor"]))
    return text("leaderboard.summary_mean", votes=report["votes"], datasets=names)


def board_lines(report: dict, datasets: list[str]) -> list[str]:
    """The board as a plain-text table (the CLI's), then what it counts and the length-bias sentence."""
    from pipelines.messages import text

    headers = [text(f"leaderboard.col.{c}") for c in ("rank", "checkpoint", "rating", "interval", "battles", "wtl")]
    rows = [[str(rank), entry["checkpoint"], f"{entry['rating']:.0f}", interval_text(entry, report["anchor"]),
             str(entry["battles"]), f"{entry['wins']}/{entry['ties']}/{entry['losses']}"]
            for rank, entry in enumerate(report["ratings"], 1)]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (headers, *rows)]
    return [*lines, "", summary_sentence(report, datasets).replace("`", ""), length_bias_sentence(report["length_bias"])]
