"""The files of one run directory, read and written safely.

    workspace/runs/<run_id>/
      config.yaml     what was asked
      status.json     queued | running | stopping | completed | failed | stopped | interrupted, pid, error
      metrics.jsonl   one JSON object per logged step, appended and flushed
      train.log       the training process's stdout/stderr
      checkpoints/    checkpoint-<step>/ (moved here only once complete)
      final/          the finished model or adapter + tokenizer

Writers replace whole files atomically (temp file + os.replace) or append one flushed line, so a
reader, or a process killed at any instant, never sees half a record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from pipelines.errors import StudioError
from pipelines.messages import Message
from pipelines.paths import file_lock

ACTIVE_STATES = ("queued", "running", "stopping")
STOP_REQUEST_FILE = "stop_requested"
PROGRESS_FILE = "kept.jsonl"   # rejection sampling's results so far: what it resumes from, as others from a checkpoint
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def write_json_atomic(path: Path, data: dict) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # unique per writer
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, ensure_ascii=False, indent=1))
        os.replace(tmp, path)
    except BaseException:   # a full disk fails the write (often only at close): leave no empty temp file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"status": "unknown"}


def error_fields(error) -> dict:
    """status.json's `error` and `error_message` for `error` (a Message, a StudioError, a sentence, or None): the
    English sentence, and beside it the catalog code and parameters when it has them, so that a reader can show it
    in the visitor's language (pipelines/runs.py, status_texts)."""
    message = error.catalog_message if isinstance(error, StudioError) else error
    return {"error": str(error) if error is not None else None,
            "error_message": message.to_dict() if isinstance(message, Message) else None}


def update_status(run_dir: Path, only_if: Callable[[dict], bool] | None = None, **changes) -> dict:
    """Apply `changes` to status.json under the lock; with `only_if`, only when it holds for the current status
    (so a reader's "interrupted" never overwrites the "completed" a trainer has just written)."""
    # Serialised between the UI's threads and the training process.
    with file_lock(run_dir / ".status.lock"):
        status = read_status(run_dir)
        if only_if is not None and not only_if(status):
            return status
        status.update(changes, updated_at=time.time())
        write_json_atomic(run_dir / "status.json", status)
        return status


def append_jsonl(path: Path, record: dict) -> None:
    # One write of one whole line, flushed: after SIGKILL the OS still holds every line written.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line of a JSONL file; a torn last line (killed mid-write) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(run_dir: Path) -> list[dict]:
    """Every logged record in step order (records of one step in the order they were logged), as the run's
    history now stands.

    One step may log several records (the training loss, an eval, a reward run's length check at a save): all
    are kept. A resume appends a `{"resumed_from": step}` marker: records an earlier attempt logged after that
    step belong to a branch that was abandoned, so they are dropped from the view (the file keeps them).
    """
    records: list[dict] = []
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        if "resumed_from" in record:
            records = [r for r in records if r.get("step", 0) <= record["resumed_from"]]
        else:
            records.append(record)
    return sorted(records, key=lambda r: r.get("step", 0))   # stable: a step's records keep their order


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints, oldest first (incomplete ones never reach checkpoints/)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := CHECKPOINT_DIR.match(p.name)) and p.is_dir())


def last_checkpoint(run_dir: Path) -> Path | None:
    steps = checkpoint_steps(run_dir)
    return run_dir / "checkpoints" / f"checkpoint-{steps[-1]}" if steps else None


def tail(path: Path, max_lines: int = 40, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    # tqdm-style carriage returns: keep only the last state of each line.
    lines = [line.split("\r")[-1] for line in text.splitlines()]
    return "\n".join(lines[-max_lines:])


def can_resume(run_dir: Path) -> bool:
    return last_checkpoint(run_dir) is not None or (run_dir / PROGRESS_FILE).is_file()


# Disk space. A full disk must cost the run one true sentence, never a checkpoint or the app.

MB = 1024 * 1024
SPARE_BYTES = 1 * MB   # what a run writes besides a checkpoint around a save: status, metrics and log lines


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size < 10 * MB else f"{size / MB:.0f} MB"


def disk_full_sentence(run_dir: Path, free: int, lost: Message, needed: int | None = None) -> Message:
    """The one sentence of a run that met a full disk; `lost` says what was not written (Message("runs.not_written",
    what="checkpoint-5")), `needed` what it would have taken when that was known beforehand."""
    then = Message("runs.then_resume" if checkpoint_steps(run_dir) else "runs.then_start_again")
    facts = {"free": megabytes(free), "lost": lost, "kept": checkpoints_kept(run_dir), "then": then}
    if needed:
        return Message("runs.disk_full_needed", needed=megabytes(needed), **facts)
    return Message("runs.disk_full", **facts)


def checkpoints_kept(run_dir: Path) -> Message:
    """What a failure leaves of the run's checkpoints, for its sentence."""
    return Message("runs.checkpoints_intact" if checkpoint_steps(run_dir) else "runs.no_checkpoint_yet")


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error` came from a full disk. Not every writer says so: torch's checkpoint writer fails with
    "unexpected pos 64 vs 0", safetensors with its own error, so a disk left with no room counts too."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return free_bytes(folder) < SPARE_BYTES
    except OSError:
        return False


# train.log: a chatty reward file once wrote 42 MB in 16 s. The log keeps its head (settings, first steps) and its
# latest lines, with one line in between saying how much was cut.

LOG_CAP_BYTES = 10 * MB
LOG_HEAD_BYTES = 1 * MB
LOG_TAIL_BYTES = 4 * MB     # kept at each cut: room to grow again before the next one
LOG_CHECK_SECONDS = 1.0
_CUT_LINE = re.compile(rb"\[\xe2\x80\xa6 (\d+) bytes of this log were cut here")


def cap_log(path: Path, cap: int = LOG_CAP_BYTES, head: int = LOG_HEAD_BYTES, tail_bytes: int = LOG_TAIL_BYTES) -> int:
    """If the log at `path` is larger than `cap`, cut its middle in place: keep the first `head` and the last
    `tail_bytes` bytes (whole lines), and put one line between saying how much is gone. Returns the bytes cut now.

    In place, not a new file, because the training process and its children keep writing to the open file; they
    append (O_APPEND), so after the cut their lines go on at its new end. A line another process writes in the
    instant between reading the tail and writing it back can be lost; the training process's own wait (capped_log)."""
    try:
        with open(path, "r+b") as log:
            size = os.fstat(log.fileno()).st_size
            if size <= cap:
                return 0
            start = log.read(head + 512)
            earlier = _CUT_LINE.search(start)
            if earlier:   # cut before: the head ends where that line begins
                keep, cut_before = earlier.start(), int(earlier.group(1))
                cut_from = start.index(b"\n", earlier.start()) + 1
            else:
                newline = start.rfind(b"\n", 0, head)
                keep = cut_from = newline + 1 if newline >= 0 else head
                cut_before = 0
            tail_start = max(cut_from, size - tail_bytes)
            log.seek(tail_start)
            tail = log.read()   # to the end as it is now: lines appended since the size was read included
            newline = tail.find(b"\n")
            tail_from = newline + 1 if tail_start > cut_from and 0 <= newline < len(tail) - 1 else 0   # whole lines
            cut = tail_start + tail_from - cut_from
            if cut <= 0:
                return 0
            note = (f"[… {cut_before + cut} bytes of this log were cut here ({megabytes(cut_before + cut)}), to keep "
                    f"train.log under {megabytes(cap)}; its start and its latest lines are kept …]\n").encode()
            log.truncate(keep)
            log.seek(keep)
            log.write(note + tail[tail_from:])
            return cut
    except FileNotFoundError:
        return 0


class _HeldWhileCut:
    """sys.stdout or sys.stderr, each write waiting while a cut runs: a line this process writes (its last one, "run …
    completed", or a reward worker's output it passes on) is never lost in the cut's window."""

    def __init__(self, stream, lock: threading.RLock):
        self._stream, self._lock = stream, lock

    def write(self, text):
        with self._lock:
            return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def capped_log(path: Path):
    """While the block runs, keep the log at `path` under LOG_CAP_BYTES (see cap_log), checking every second. This
    process's own writes wait for a cut; those of other processes (ranks under accelerate) keep cap_log's window."""
    done, cutting = threading.Event(), threading.RLock()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_HeldWhileCut(stream, cutting) for stream in streams)

    def cut() -> None:
        with cutting, contextlib.suppress(OSError):
            for stream in streams:   # what waits in a buffer goes in before the tail is read
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            cap_log(path)

    def watch() -> None:
        while not done.wait(LOG_CHECK_SECONDS):
            cut()

    watcher = threading.Thread(target=watch, daemon=True, name="cap-train-log")
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        cut()
        sys.stdout, sys.stderr = streams


def prune_checkpoints(run_dir: Path, keep: int) -> list[int]:
    """Delete the oldest checkpoints beyond `keep` (0: keep all), never the newest (what a resume starts from) nor
    the one with the best eval loss (the latest eval at or before its step); return the steps deleted."""
    steps = checkpoint_steps(run_dir)
    if keep <= 0 or len(steps) <= keep:
        return []
    evals = sorted((r["step"], r["eval_loss"]) for r in read_metrics(run_dir) if isinstance(r.get("eval_loss"), (int, float)))
    loss_at = {s: next((loss for step, loss in reversed(evals) if step <= s), None) for s in steps}
    scored = [s for s in steps if loss_at[s] is not None]
    protected = {steps[-1], *([min(scored, key=lambda s: loss_at[s])] if scored else [])}
    deleted = []
    for step in steps:
        if len(steps) - len(deleted) <= max(keep, len(protected)):
            break
        if step not in protected:
            # Renamed out of checkpoints/ first, so no reader ever sees a half-deleted checkpoint.
            doomed = run_dir / f".deleting-checkpoint-{step}"
            shutil.rmtree(doomed, ignore_errors=True)   # one an earlier crash left half-deleted
            os.replace(run_dir / "checkpoints" / f"checkpoint-{step}", doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            deleted.append(step)
    return deleted
