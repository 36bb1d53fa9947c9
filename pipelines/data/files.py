"""Read a data file (JSON array, JSONL, CSV, TSV, Parquet) into a list of records, with one clear error when it is not one."""

from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from pathlib import Path

import orjson

from pipelines.errors import StudioError

MAX_FILE_BYTES = int(os.environ.get("ALIGNMENT_STUDIO_MAX_UPLOAD_MB", "200")) * 1024 * 1024
MAX_FIELD_CHARS = 10 * 1024 * 1024
SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")
# What a file really is, whatever its name says: the first bytes of formats people upload by mistake.
DISGUISES = ((b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "a gzip archive"), (b"\x80", "a Python pickle"),
             (b"PAR1", "a Parquet file"), (b"%PDF", "a PDF document"))
MARKUP = (("<!doctype html", "an HTML page"), ("<html", "an HTML page"), ("<svg", "an SVG image"), ("<?xml", "an XML document"))


def read_records(path: Path) -> list:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise StudioError(f"{path.name}: unsupported file type; upload .json, .jsonl, .csv, .tsv or .parquet.")
    size = path.stat().st_size
    if size == 0:
        raise StudioError(f"{path.name} is empty.")
    if size > MAX_FILE_BYTES:
        raise StudioError(f"{path.name} is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit "
                          "(set ALIGNMENT_STUDIO_MAX_UPLOAD_MB to raise it).")
    with open(path, "rb") as handle:
        _refuse_disguised(path.name, handle.read(512), suffix)
    with paused_gc():
        if suffix == ".parquet":
            records = _read_parquet(path)
        elif suffix == ".jsonl":  # line by line: the whole file is never held twice (bytes and text) in memory
            records = _parse_jsonl(path)
        else:
            records = _read_text(path, path.read_bytes(), suffix)
    if size > MAX_FIELD_CHARS or suffix == ".parquet":  # a smaller text file cannot hold such a field; Parquet is compressed
        check_field_sizes(path.name, records)
    return records


@contextmanager
def paused_gc():
    """Creating 100k row dicts makes the cyclic garbage collector rescan them again and again; rows hold no
    cycles, so it can wait until they are built."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _refuse_disguised(name: str, raw: bytes, suffix: str) -> None:
    for magic, what in DISGUISES:
        if raw.startswith(magic) and not (suffix == ".parquet" and magic == b"PAR1"):
            raise StudioError(f"{name} is {what}, not {suffix[1:].upper()} data; upload the data file itself.")
    if suffix == ".parquet" and not raw.startswith(b"PAR1"):
        raise StudioError(f"{name} is not a Parquet file (it lacks the PAR1 header).")
    head = raw[:512].lstrip().lower()
    for marker, what in MARKUP:
        if head.startswith(marker.encode()):
            raise StudioError(f"{name} is {what}, not data; upload JSON, JSONL, CSV, TSV or Parquet rows.")


def check_field_sizes(name: str, records: list) -> None:
    for number, record in enumerate(records, start=1):
        if isinstance(record, dict):
            for key, value in record.items():
                if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                    raise StudioError(f"{name}: row {number}, field '{key}' holds {len(value) / 2**20:.0f} MB of text, "
                                      "over the 10 MB a field may hold; split or shorten it.")


def _read_parquet(path: Path) -> list:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StudioError(f"{path.name} could not be read as Parquet: {str(exc).splitlines()[0]}.") from None


def _read_text(path: Path, raw: bytes, suffix: str) -> list:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise StudioError(f"{path.name} is not valid UTF-8 text (line {line}); save it as UTF-8.") from None
    if suffix in (".csv", ".tsv"):
        return _parse_delimited(path.name, text, "," if suffix == ".csv" else "\t")
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


def _parse_jsonl(path: Path) -> list:
    """One JSON value per line. Only "\n" ends a line: U+2028 and friends are legal inside JSON strings."""
    records = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a byte-order mark, as Windows editors write
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))   # the standard json module's equal, twice as fast
            except json.JSONDecodeError as exc:        # orjson's error is a json.JSONDecodeError too
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    raise StudioError(f"{path.name} is not valid UTF-8 text (line {number}); save it as UTF-8.") from None
                last = not any(rest.strip() for rest in handle)
                hint = " (the last line looks cut off)" if last else ""
                raise StudioError(f"{path.name}: line {number} is not valid JSON{hint}: {exc.msg}.") from None
    if not records:
        raise StudioError(f"{path.name} has no rows.")
    return records


def _parse_delimited(name: str, text: str, delimiter: str) -> list:
    """CSV/TSV with a header row; quoted fields may hold newlines and delimiters."""
    import csv
    import io

    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise StudioError(f"{name} is not valid {'CSV' if delimiter == ',' else 'TSV'}: {exc}.") from None
    header = text.splitlines()[0] if text else ""
    if rows and len(rows[0]) == 1:
        other = {"\t": "tabs (save it as .tsv)", ";": "semicolons (save it with commas)", ",": "commas (save it as .csv)"}
        for sign, advice in other.items():
            if sign != delimiter and sign in header:
                raise StudioError(f"{name} has a single column: its header is separated by {advice}.")
    if not rows:
        raise StudioError(f"{name} has a header but no rows.")
    for number, row in enumerate(rows, start=1):
        if None in row:  # more cells than the header has names
            raise StudioError(f"{name}: row {number} has more cells than the header; check quoting and the delimiter.")
    return rows
