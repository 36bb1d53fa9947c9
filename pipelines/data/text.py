"""Raw text for continued pretraining: the `text` kind, whose rows are exactly `{"text": str}`, one document each.

Documents come from .txt and .md files (a file is one document, or split at blank lines: pipelines/data/files.py)
and from any data file with a `text` column and none of another kind's (pipelines/data/preference.py
is_text_columns); several files of any of these make one corpus. A document is checked like any row: it is text,
not blank, and at most MAX_FIELD_CHARS characters.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.files import MAX_FIELD_CHARS, MAX_FILE_BYTES, read_records
from pipelines.data.formats import Normalised, RowError, _Bad, _text
from pipelines.errors import StudioError, shorten
from pipelines.messages import Message

FORMAT = "text"           # the one format of the kind: named as the kind is
MAX_CORPUS_FILES = 1000   # files in one upload: a folder of documents, not a disk


def normalise_text(records: list) -> Normalised:
    """Each record's `text` as a document row; any other column (id, url, …) is left out."""
    result = Normalised(FORMAT)
    for index, record in enumerate(records, start=1):
        try:
            if not isinstance(record, dict):
                raise _Bad("-", "data.row.not_object", type=type(record).__name__)
            document = _text(record, "text")
            if len(document) > MAX_FIELD_CHARS:
                raise _Bad("text", "data.row.document_too_large", size=round(len(document) / 2**20),
                           limit=MAX_FIELD_CHARS // 2**20)
            result.add(index, {"text": document})
        except _Bad as bad:
            result.errors.append(RowError(index, bad.field, bad.problem))
    return result


def read_corpus(paths: list[Path], split: str = "file") -> tuple[Normalised, list[dict]]:
    """The documents of every file, in order, as one Normalised (its sources count rows across the whole corpus),
    and [{file, documents}]. A bad row is named by its row in its own file, the field by file and column. A file
    that holds another kind of rows is refused, naming it and what it holds."""
    from pipelines.data.preference import detect_kind

    corpus, files = Normalised(FORMAT), []
    for path in map(Path, paths):
        records = read_records(path, split)
        kind = detect_kind(records)
        if kind != "text":
            raise StudioError("data.not_text_file", file=path.name, has=Message(f"data.holds.{kind}"))
        part = normalise_text(records)
        offset = len(corpus.rows)
        corpus.rows.extend(part.rows)
        corpus.sources.extend(range(offset + 1, offset + len(part.rows) + 1))
        corpus.errors.extend(RowError(error.row, f"{path.name}:{error.field}", error.problem) for error in part.errors)
        files.append({"file": path.name, "documents": len(part.rows)})
    return corpus, files


def save_texts(paths: list, name: str | None, workspace: Path, split: str = "file", drop_bad_rows: bool = False,
               replace: bool = False) -> dict:
    """Check uploaded files of documents and save them as one text dataset; the report of save_records plus
    `files` [{file, documents}]. Nothing is written while a row is bad (unless `drop_bad_rows`) or none is usable."""
    from pipelines.data.store import check_new_name, free_name, quality_warnings, write_dataset

    paths = [Path(p) for p in (paths or []) if p]
    if not paths:
        raise StudioError("api.no_file")
    if len(paths) > MAX_CORPUS_FILES:
        raise StudioError("data.too_many_files", count=len(paths), limit=MAX_CORPUS_FILES)
    if name is None or (isinstance(name, str) and not name.strip()):
        name = free_name(paths[0].stem, workspace)
    check_new_name(name, workspace, overwrite=replace)   # before reading what may be many megabytes
    missing = next((p for p in paths if not p.is_file()), None)
    if missing:
        raise StudioError("data.file_missing", file=shorten(missing.name))
    size = sum(p.stat().st_size for p in paths)
    if size > MAX_FILE_BYTES:
        raise StudioError("data.corpus_too_large", size=round(size / 2**20), limit=MAX_FILE_BYTES // 2**20)
    from pipelines.hosting import check_data
    check_data(workspace, size, "file")   # hosted mode: the upload's size and the user's quota
    corpus, files = read_corpus(paths, split)
    corpus.warnings.extend(quality_warnings("text", corpus.rows, corpus.sources))
    report = {"name": name, "kind": "text", **corpus.report(), "files": files, "saved": False}
    if (corpus.errors and not drop_bad_rows) or not corpus.rows:
        return report
    source = shorten(", ".join(f["file"] for f in files))
    write_dataset(name, workspace, "text", FORMAT, corpus.rows, source, files=files, split=split,
                  dropped_rows=len(corpus.errors))
    return {**report, "saved": True}
