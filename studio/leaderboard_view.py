"""The leaderboard of Compare's votes as Markdown: the ratings table, a compact win-rate matrix and the length-bias
line (pipelines/leaderboard.py computes them; this only draws)."""

from __future__ import annotations

from pathlib import Path

from pipelines import api
from pipelines.errors import StudioError
from pipelines.leaderboard import code_text, interval_text, length_bias_sentence, summary_sentence
from pipelines.messages import text
from pipelines.paths import check_name


def show_board(workspace: Path, dataset: str) -> str:
    """The board of one votes dataset, or one sentence saying why there is none yet (a passive view: a name being
    typed, or a dataset that holds no votes, is said in place rather than raised)."""
    name = (dataset or "").strip()
    if not name:
        return text("leaderboard.no_datasets")
    try:
        check_name(name, "dataset name")
        if not (Path(workspace) / "datasets" / name / "meta.json").is_file():
            return text("leaderboard.empty", datasets=code_text(name))
        report = api.leaderboard(workspace, [name])
    except StudioError as error:
        return error.text()
    return board_markdown(report, [name])


def board_markdown(report: dict, datasets: list[str]) -> str:
    names = ", ".join(code_text(name) for name in datasets)
    if not report["votes"]:
        return text("leaderboard.empty", datasets=names)
    if len(report["ratings"]) < 2:
        return text("leaderboard.one_checkpoint")
    columns = ("rank", "checkpoint", "rating", "interval", "battles", "wtl")
    lines = [f"### {text('leaderboard.title')}", summary_sentence(report, datasets), "",
             "| " + " | ".join(text(f"leaderboard.col.{c}") for c in columns) + " |", "|---:|---|---:|---:|---:|---:|"]
    for rank, entry in enumerate(report["ratings"], 1):
        lines.append(f"| {rank} | {_cell(entry['checkpoint'])} | {entry['rating']:.0f} | "
                     f"{interval_text(entry, report['anchor'])} | {entry['battles']} | "
                     f"{entry['wins']} / {entry['ties']} / {entry['losses']} |")
    lines += ["", length_bias_sentence(report["length_bias"]), "", *win_rate_matrix(report)]
    return "\n".join(lines)


def win_rate_matrix(report: dict) -> list[str]:
    """Rows and columns in board order; a column is headed by its rank alone, so four checkpoints fit one line."""
    order = [entry["checkpoint"] for entry in report["ratings"]]
    lines = [text("leaderboard.win_rates"), "",
             "| | " + " | ".join(str(rank) for rank in range(1, len(order) + 1)) + " |",
             "|---|" + "---:|" * len(order)]
    for rank, a in enumerate(order, 1):
        row = report["win_rates"].get(a, {})
        cells = ["" if a == b else f"{row[b]:.0%}" if b in row else "—" for b in order]
        lines.append(f"| {rank} · {_cell(a)} | " + " | ".join(cells) + " |")
    return lines


def _cell(name: str) -> str:
    """A checkpoint name as literal text in a table cell (a vote through the API may carry any characters; a "|"
    would end the cell even inside a code span)."""
    return code_text(name.replace("|", "/"))
