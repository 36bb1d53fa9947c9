"""Datasets as an editable table: one column per field of a kind, one single-turn row per line.

The app's table sends back plain lists of cells; saving turns them into records and runs the same
checks as an upload, so a row typed in the app is held to the same rules as a row in a file.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.store import load_dataset, save_records
from pipelines.errors import StudioError, quote

MAX_TABLE_ROWS = 5000   # every row travels to the browser

TABLE_COLUMNS = {
    "instruction": ("instruction", "input", "output", "system"),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "prompt_only": ("prompt",),
    "text": ("text",),
}


def columns_of(kind: str) -> tuple[str, ...]:
    if not isinstance(kind, str) or kind not in TABLE_COLUMNS:
        raise StudioError("data.unknown_kind", kind=quote(kind), kinds=", ".join(TABLE_COLUMNS))
    return TABLE_COLUMNS[kind]


def table_of(name: str, workspace: Path) -> dict:
    """A dataset as {kind, columns, rows}; refuses multi-turn rows, which a table of single turns cannot hold."""
    kind, result = load_dataset(name, workspace)
    if len(result.rows) > MAX_TABLE_ROWS:
        raise StudioError("data.table_too_long", name=quote(name), rows=len(result.rows), limit=MAX_TABLE_ROWS)
    rows = []
    for number, row in zip(result.sources, result.rows):
        try:
            rows.append(_cells(kind, row))
        except _MultiTurn as turns:
            raise StudioError("data.table_multi_turn", name=quote(name), row=number, turns=turns.count) from None
    return {"kind": kind, "columns": list(columns_of(kind)), "rows": rows}


def _cells(kind: str, row: dict) -> list:
    if kind == "text":   # a document is one cell, however many lines it has
        return [row["text"]]
    turns = row.get("messages") or row["prompt"]
    system = [t["content"] for t in turns if t["role"] == "system"]
    spoken = [t for t in turns if t["role"] != "system"]
    expected = ["user", "assistant"] if kind == "instruction" else ["user"]
    if [t["role"] for t in spoken] != expected or len(system) > 1 or (system and kind != "instruction"):
        raise _MultiTurn(len(turns))
    user = spoken[0]["content"]
    if kind == "instruction":
        return [user, "", spoken[1]["content"], system[0] if system else ""]
    if kind == "preference":
        return [user, row["chosen"][0]["content"], row["rejected"][0]["content"]]
    if kind == "unpaired":
        return [user, row["completion"][0]["content"], "true" if row["label"] else "false"]
    return [user]


class _MultiTurn(ValueError):
    def __init__(self, count: int):
        super().__init__(count)
        self.count = count


def records_from_table(kind: str, rows: list[list]) -> list[dict]:
    """Cells to records of `kind`. Blank lines at the end (the table's empty input row) are not rows."""
    columns = columns_of(kind)
    rows = [list(row) for row in rows or []]
    while rows and all(_blank(cell) for cell in rows[-1]):
        rows.pop()
    records = []
    for row in rows:
        cells = [("" if _blank(cell) else cell) for cell in row[:len(columns)]]
        cells += [""] * (len(columns) - len(cells))
        record = dict(zip(columns, cells))
        if kind == "instruction" and not record["system"]:
            del record["system"]
        if kind == "unpaired" and isinstance(record["label"], str):
            record["label"] = record["label"].strip()
        records.append(record)
    return records


def save_table(kind: str, rows: list[list], name: str, workspace: Path, drop_bad_rows: bool = False,
               replace: bool = False) -> dict:
    """Check the table's rows as `kind` and save them as dataset `name` (nothing written while a row is bad)."""
    records = records_from_table(kind, rows)
    if not records:
        raise StudioError("data.table_empty")
    from pipelines.hosting import check_data, records_bytes
    check_data(workspace, records_bytes(records), "table")   # hosted mode: bounded as an upload is
    return save_records(records, name, workspace, "table", drop_bad_rows, replace=replace)  # the columns decide the kind


def _blank(cell) -> bool:
    return cell is None or (isinstance(cell, float) and cell != cell) or (isinstance(cell, str) and not cell.strip())
