"""Read a data file (JSON array or JSONL) into a list of records, with one clear error when it is not one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipelines.errors import StudioError

MAX_FILE_BYTES = int(os.environ.get("ALIGNMENT_STUDIO_MAX_UPLOAD_MB", "200")) * 1024 * 1024
SUFFIXES = (".json", ".jsonl")


def read_records(path: Path) -> list:
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise StudioError(f"{path.name}: unsupported file type; upload a .json (array of rows) or .jsonl (one row per line) file.")
    size = path.stat().st_size
    if size == 0:
        raise StudioError(f"{path.name} is empty.")
    if size > MAX_FILE_BYTES:
        raise StudioError(f"{path.name} is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit "
                          "(set ALIGNMENT_STUDIO_MAX_UPLOAD_MB to raise it).")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise StudioError(f"{path.name} is not valid UTF-8 text (line {line}); save it as UTF-8.") from None
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(path.name, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudioError(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"data": [...]} and the like
            return lists[0]
        raise StudioError(f"{path.name} holds a JSON object; expected an array of rows like [{{...}}, {{...}}].")
    if not isinstance(data, list):
        raise StudioError(f"{path.name} holds a single JSON value; expected an array of rows.")
    if not data:
        raise StudioError(f"{path.name} holds an empty array: there are no rows.")
    return data


def _parse_jsonl(name: str, text: str) -> list:
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            last = number == len(lines) or not any(l.strip() for l in lines[number:])
            hint = " (the last line looks cut off)" if last else ""
            raise StudioError(f"{name}: line {number} is not valid JSON{hint}: {exc.msg}.") from None
    if not records:
        raise StudioError(f"{name} has no rows.")
    return records
