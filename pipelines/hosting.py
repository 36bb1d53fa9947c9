"""Hosted limits: what one visitor may spend on a server shared by many (`python launch.py --hosted`, and on by
itself on a Hugging Face Space, where SPACE_ID is set).

Off by default: `python launch.py` on one's own machine has no limits, and every check here returns at once.
Hosted, the limits travel in the ALIGNMENT_STUDIO_HOSTED environment variable as JSON (`export`), so the training
processes and jobs the app spawns read the same ones (`current`). Each limit is one check, called where the thing
it bounds is asked for, before anything is written, and refusing in one sentence that says the limit and the way on:

- a run: at most max_steps steps (a run of epochs only is refused: its steps are not known until it runs; best-of-N,
  which trains nothing, may take every prompt once), at most max_active_runs of the user's runs queued or training,
  and a workspace within disk_quota_mb (api.prepare_run, and run_queue.resume for the active runs); at most
  max_wall_minutes of training per process, after which the run saves a checkpoint and stops as at a user's Stop
  (pipelines/stop.py);
- a model (pipelines/models.resolve_model, so training, chat, compare and scoring alike): the bundled model, a
  checkpoint of the user's own runs, or one of allow_models; so no other Hub download happens;
- user code: no Python reward or scorer file unless allow_user_code (pipelines/rl/rewards.parse_reward);
- trackers: only those that write into the run folder (trackio, tensorboard), never the owner's W&B or MLflow;
- data: an upload, a table or a Hub import of at most upload_mb, that fits in the quota. Hub datasets are allowed:
  they are data, not code, and the rows fetched are bounded like an upload.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.messages import Message

HOSTED_ENV = "ALIGNMENT_STUDIO_HOSTED"   # JSON of HostedLimits; set by launch.py --hosted, inherited by children
SPACE_ENV = "SPACE_ID"                   # set by Hugging Face on every Space
MB = 1024 * 1024
COUNTED_FOLDERS = ("runs", "datasets", "jobs", "exports")   # what a user's disk quota counts in their workspace


@dataclass(frozen=True)
class HostedLimits:
    # A free CPU Space trains the bundled model about a step a second: 300 steps is a visible change in minutes.
    max_steps: int = 300
    max_wall_minutes: float = 30.0     # per training process; a resume starts a new one (max_steps bounds the total)
    max_active_runs: int = 2           # per user, queued or training
    disk_quota_mb: int = 2000          # per user: runs, datasets, jobs and exports
    upload_mb: int = 20                # one upload, table or Hub import
    allow_models: tuple[str, ...] = ()   # besides the bundled model and the user's own checkpoints
    allow_user_code: bool = False      # Python reward and scorer files

    @classmethod
    def from_dict(cls, data: dict) -> "HostedLimits":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "allow_models" in values:
            values["allow_models"] = tuple(values["allow_models"] or ())
        return cls(**values)


def current() -> HostedLimits | None:
    """The limits this process serves under, or None when it is not hosted."""
    value = os.environ.get(HOSTED_ENV, "").strip()
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    # A value that does not read was still meant to host: the default limits, never none.
    return HostedLimits.from_dict(data) if isinstance(data, dict) else HostedLimits()


def export(limits: HostedLimits | None) -> None:
    """Serve this process, and those it spawns, under `limits` (None: no limits)."""
    if limits is None:
        os.environ.pop(HOSTED_ENV, None)
    else:
        os.environ[HOSTED_ENV] = json.dumps(asdict(limits))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """launch.py's --hosted and the limits' options (each defaults to HostedLimits's)."""
    defaults = HostedLimits()
    group = parser.add_argument_group("hosted mode (on by itself when SPACE_ID is set, as on a Hugging Face Space)")
    group.add_argument("--hosted", action="store_true", help="Serve many people: the limits below apply.")
    group.add_argument("--max-steps", type=_positive(int), help=f"Steps a run may train (default {defaults.max_steps}).")
    group.add_argument("--max-wall-minutes", type=_positive(float),
                       help=f"Minutes a run may train before it saves and stops (default {defaults.max_wall_minutes:g}).")
    group.add_argument("--max-active-runs", type=_positive(int),
                       help=f"Runs one user may have queued or training (default {defaults.max_active_runs}).")
    group.add_argument("--disk-quota-mb", type=_positive(int),
                       help=f"Megabytes of runs, datasets, jobs and exports per user (default {defaults.disk_quota_mb}).")
    group.add_argument("--upload-mb", type=_positive(int),
                       help=f"Megabytes of one upload or Hub import (default {defaults.upload_mb}).")
    group.add_argument("--allow-models", help="Models besides the bundled one, comma-separated Hub ids or folders.")
    group.add_argument("--allow-user-code", action="store_true", help="Let users name Python reward and scorer files.")


LIMIT_OPTIONS = {"max_steps": "--max-steps", "max_wall_minutes": "--max-wall-minutes",
                 "max_active_runs": "--max-active-runs", "disk_quota_mb": "--disk-quota-mb",
                 "upload_mb": "--upload-mb", "allow_models": "--allow-models", "allow_user_code": "--allow-user-code"}


def from_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> HostedLimits | None:
    """The limits launch.py's arguments ask for: hosted with --hosted or on a Space, else None. A limit given
    without hosting is a mistake (it would silently do nothing): parser.error, or ValueError without a parser."""
    given = {name: getattr(args, name) for name in LIMIT_OPTIONS if getattr(args, name, None) not in (None, False)}
    if not (getattr(args, "hosted", False) or os.environ.get(SPACE_ENV)):
        if given:
            problem = f"{', '.join(LIMIT_OPTIONS[n] for n in given)}: limits of hosted mode only; add --hosted."
            if parser:
                parser.error(problem)
            raise ValueError(problem)
        return None
    if "allow_models" in given:
        # A folder as a full path: the training processes run in another working folder (pipelines/runs.spawn).
        given["allow_models"] = tuple(str(Path(m).expanduser().resolve()) if m.startswith((".", "/", "~")) else m
                                      for m in (m.strip() for m in given["allow_models"].split(",")) if m)
    return HostedLimits(**given)


def _positive(kind):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"{value!r} must be above 0")
        return number
    parse.__name__ = kind.__name__
    return parse


# --- the checks: each returns at once when not hosted ---

# Trackers that write into the run folder only. W&B and MLflow would log a visitor's run to the server owner's
# account or tracking server, with the owner's credentials.
LOCAL_TRACKERS = ("none", "trackio", "tensorboard")


def check_run(workspace: Path, config) -> None:
    """A new run of `config` in `workspace`: its steps, the user's active runs, the user's disk."""
    limits = current()
    if limits is None:
        return
    from pipelines.stages import get_stage
    steps = config.train.max_steps
    # 0 trains for train.epochs, steps unknown until it runs: refused. Best-of-N trains nothing, and its 0 means
    # every prompt once, bounded by its dataset (itself bounded as an upload) and by the training time.
    if steps <= 0 and get_stage(config.stage).output != "datasets":
        raise StudioError("hosting.steps_unbounded", limit=limits.max_steps)
    if steps > limits.max_steps:
        raise StudioError("hosting.too_many_steps", steps=steps, limit=limits.max_steps)
    if config.train.report_to not in LOCAL_TRACKERS:
        raise StudioError("hosting.remote_tracker", tracker=config.train.report_to, trackers=", ".join(LOCAL_TRACKERS))
    check_active_runs(workspace)
    check_disk(workspace)


def check_active_runs(workspace: Path) -> None:
    """One more run queued for the user of `workspace` (a start or a resume)."""
    limits = current()
    if limits is None:
        return
    from pipelines import run_queue, runs
    active = sum(run_queue.holds_place(runs.refresh_status(d)) for d in runs.list_run_dirs(workspace))
    if active >= limits.max_active_runs:
        raise StudioError("hosting.too_many_active", limit=limits.max_active_runs)


ACTIVE_JOBS = 1   # per user in hosted mode: an evaluation or scoring job takes the CPU a run would train on


def check_job(workspace: Path) -> None:
    """A new job (Evaluate, scoring) for the user of `workspace`: one at a time, and room on their quota."""
    limits = current()
    if limits is None:
        return
    from pipelines import jobs
    active = sum(jobs.refresh_status(d).get("status") in jobs.ACTIVE for d in jobs.list_job_dirs(workspace))
    if active >= ACTIVE_JOBS:
        raise StudioError("hosting.too_many_jobs", limit=ACTIVE_JOBS)
    check_disk(workspace)


def check_disk(workspace: Path, adding: int = 0, refusal: str = "hosting.quota_upload") -> None:
    """The user's runs, datasets, jobs and exports, with `adding` bytes more, within the quota (`refusal`: the
    sentence for what would not fit: data, by default, or an export)."""
    limits = current()
    if limits is None:
        return
    from pipelines.run_files import megabytes
    used, quota = used_bytes(workspace), limits.disk_quota_mb * MB
    if used + adding <= quota and (adding or used < quota):
        return
    if adding:
        raise StudioError(refusal, size=megabytes(adding), used=megabytes(used), quota=megabytes(quota))
    raise StudioError("hosting.quota_full", used=megabytes(used), quota=megabytes(quota))


def used_bytes(workspace: Path) -> int:
    """What the quota counts: the sizes of the files under the workspace's runs, datasets, jobs and exports."""
    total = 0
    for name in COUNTED_FOLDERS:
        for path in (Path(workspace) / name).rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += path.stat().st_size
            except OSError:   # a file deleted while counted (a checkpoint pruned, a staging folder swapped)
                continue
    return total


def check_data(workspace: Path, size: int, fix: str) -> None:
    """Data of `size` bytes to be saved as a dataset (fix: "file", "rows" or "table", what to make smaller)."""
    limits = current()
    if limits is None:
        return
    from pipelines.run_files import megabytes
    if size > limits.upload_mb * MB:
        raise StudioError("hosting.data_too_big", size=megabytes(size), limit=limits.upload_mb,
                          fix=Message(f"hosting.smaller_{fix}"))
    check_disk(workspace, size)


def records_bytes(records: list) -> int:
    """The size of rows as the dataset would keep them (JSON lines), for check_data."""
    return sum(len(json.dumps(r, ensure_ascii=False, default=str).encode()) + 1 for r in records)


def check_model(spec: str, workspace: Path) -> None:
    """`spec` names the bundled model, a checkpoint of the user's own runs, or an allowed model."""
    limits = current()
    if limits is None:
        return
    from pipelines.config import BUNDLED_MODEL_ID
    from pipelines.models import CHECKPOINT_ID
    if spec == BUNDLED_MODEL_ID or spec in limits.allow_models:
        return
    if (match := CHECKPOINT_ID.fullmatch(spec)) and (Path(workspace) / "runs" / match["run"] / "config.yaml").is_file():
        return
    if any(_same_folder(spec, allowed) for allowed in limits.allow_models):   # a run pins a folder's full path
        return
    raise StudioError("hosting.model_not_allowed", model=quote(spec),
                      models=", ".join((BUNDLED_MODEL_ID, *limits.allow_models)))


def _same_folder(spec: str, allowed: str) -> bool:
    if not spec.startswith((".", "/", "~")) and not allowed.startswith((".", "/", "~")):
        return False
    try:
        return Path(spec).expanduser().resolve() == Path(allowed).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def check_user_code(file: str) -> None:
    """`file`, a Python reward or scorer file, may run."""
    limits = current()
    if limits is not None and not limits.allow_user_code:
        raise StudioError("hosting.no_user_code", file=quote(file))


def wall_deadline() -> float | None:
    """When a training process that starts now must stop (time.time()), or None."""
    limits = current()
    return time.time() + 60 * limits.max_wall_minutes if limits else None


def wall_time_reached() -> Message:
    limits = current() or HostedLimits()
    return Message("hosting.wall_time", minutes=limits.max_wall_minutes)
