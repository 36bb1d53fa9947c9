"""Read a data file (JSON array, JSONL, CSV, TSV, Parquet; plain text or Markdown as documents) into a list of records,
with one clear error when it is not one."""

from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from pathlib import Path

import orjson

from pipelines.errors import StudioError, quote, shorten
from pipelines.messages import Message

MAX_FILE_BYTES = int(os.environ.get("ALIGNMENT_STUDIO_MAX_UPLOAD_MB", "200")) * 1024 * 1024
MAX_FIELD_CHARS = 10 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".md")   # raw documents for continued pretraining: records {"text": ...}
SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", *TEXT_SUFFIXES)
SPLITS = ("file", "blank_lines")   # a text file is one document, or one document per blank-line-separated block
# What a file really is, whatever its name says: the first bytes of formats people upload by mistake.
DISGUISES = ((b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"), (b"\x80", "pickle"), (b"PAR1", "parquet"), (b"%PDF", "pdf"))
MARKUP = (("<!doctype html", "html"), ("<html", "html"), ("<svg", "svg"), ("<?xml", "xml"))   # data.file_is.<what>


def read_records(path: Path, split: str = "file") -> list:
    """The file's records; a .txt or .md file's are its documents, split as `split` says (SPLITS)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise StudioError("data.unsupported_file", file=path.name)
    size = path.stat().st_size
    if size == 0:
        raise StudioError("data.empty_file", file=path.name)
    if size > MAX_FILE_BYTES:
        raise StudioError("data.file_too_large", file=path.name, size=round(size / 2**20), limit=MAX_FILE_BYTES // 2**20)
    with open(path, "rb") as handle:
        _refuse_disguised(path.name, handle.read(512), suffix)
    with paused_gc():
        if suffix in TEXT_SUFFIXES:   # checks its documents' sizes itself, naming the line each starts on
            return read_documents(path.name, path.read_bytes(), split)
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
            raise StudioError("data.disguised", file=name, what=Message(f"data.file_is.{what}"), suffix=suffix[1:].upper())
    if suffix == ".parquet" and not raw.startswith(b"PAR1"):
        raise StudioError("data.not_parquet", file=name)
    head = raw[:512].lstrip().lower()
    for marker, what in MARKUP:
        if head.startswith(marker.encode()):
            raise StudioError("data.markup", file=name, what=Message(f"data.file_is.{what}"))


def check_field_sizes(name: str, records: list) -> None:
    for number, record in enumerate(records, start=1):
        if isinstance(record, dict):
            for key, value in record.items():
                if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                    raise StudioError("data.field_too_large", file=name, row=number, field=shorten(str(key)),
                                      size=round(len(value) / 2**20), limit=MAX_FIELD_CHARS // 2**20)


def _read_parquet(path: Path) -> list:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StudioError("data.bad_parquet", file=path.name, problem=shorten(str(exc))) from None


def _read_text(path: Path, raw: bytes, suffix: str) -> list:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise StudioError("data.not_utf8", file=path.name, line=line) from None
    if suffix in (".csv", ".tsv"):
        return _parse_delimited(path.name, text, "," if suffix == ".csv" else "\t")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudioError("data.bad_json", file=path.name, line=exc.lineno, column=exc.colno, problem=exc.msg) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"data": [...]} and the like
            return lists[0]
        raise StudioError("data.json_object", file=path.name)
    if not isinstance(data, list):
        raise StudioError("data.json_value", file=path.name)
    if not data:
        raise StudioError("data.json_empty", file=path.name)
    return data


def read_documents(name: str, raw: bytes, split: str = "file") -> list[dict]:
    """A text file's documents as records {"text": ...}: the whole file, or each block between blank lines.
    Refused, naming the file and the line: binary content, text that is not UTF-8, nothing but whitespace, or a
    document over MAX_FIELD_CHARS."""
    if split not in SPLITS:
        raise StudioError("data.bad_split", split=quote(split), splits=", ".join(SPLITS))
    if b"\0" in raw:   # no text file holds a NUL byte; an executable, an image or a UTF-16 file does
        raise StudioError("data.binary_text", file=name, line=raw[:raw.index(b"\0")].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise StudioError("data.not_utf8", file=name, line=raw[:exc.start].count(b"\n") + 1) from None
    if not text.strip():
        raise StudioError("data.blank_file", file=name)
    documents = _blocks(text) if split == "blank_lines" else [_whole(text)]
    for line, document in documents:
        if len(document) > MAX_FIELD_CHARS:
            raise StudioError("data.document_too_large", file=name, line=line, size=round(len(document) / 2**20),
                              limit=MAX_FIELD_CHARS // 2**20)
    return [{"text": document} for _, document in documents]


def _whole(text: str) -> tuple[int, str]:
    """The file as one document, without the blank lines around it; with the line it starts on."""
    start = len(text) - len(text.lstrip())
    return text[:start].count("\n") + 1, text.strip()


def _blocks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each run of non-blank lines: a paragraph, or a document of a file holding many."""
    blocks, current, start = [], [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, "\n".join(current).strip()))
            current = []
    if current:
        blocks.append((start, "\n".join(current).strip()))
    return blocks


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
                    raise StudioError("data.not_utf8", file=path.name, line=number) from None
                last = not any(rest.strip() for rest in handle)
                raise StudioError("data.bad_jsonl_cut" if last else "data.bad_jsonl", file=path.name, line=number,
                                  problem=exc.msg) from None
    if not records:
        raise StudioError("data.no_rows", file=path.name)
    return records


def _parse_delimited(name: str, text: str, delimiter: str) -> list:
    """CSV/TSV with a header row; quoted fields may hold newlines and delimiters."""
    import csv
    import io

    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise StudioError("data.bad_delimited", file=name, format="CSV" if delimiter == "," else "TSV",
                          problem=shorten(str(exc))) from None
    header = text.splitlines()[0] if text else ""
    if rows and len(rows[0]) == 1:
        other = {"\t": "tabs", ";": "semicolons", ",": "commas"}   # data.single_column.<separator>
        for sign, separator in other.items():
            if sign != delimiter and sign in header:
                raise StudioError(f"data.single_column.{separator}", file=name)
    if not rows:
        raise StudioError("data.header_only", file=name)
    for number, row in enumerate(rows, start=1):
        if None in row:  # more cells than the header has names
            raise StudioError("data.too_many_cells", file=name, row=number)
    return rows
