"""Experiment trackers: `train.report_to` sends what a run logs to Trackio, TensorBoard, W&B or MLflow as well.

The TRL stages get it as the Trainer's own `report_to`; our own loops (PPO, best-of-N) drive the very callbacks
transformers gives a Trainer for it (pipelines/stages/loop.py). So every stage sends the metrics of metrics.jsonl
at the same steps: MLflow under the same names, the others renamed the way transformers renames them for them
(`rewrite_logs`): `loss` is `train/loss`, `objective/kl` is `train/objective/kl`, `eval_loss` is `eval/loss`.

Each tracker keeps its files in the run folder, unless the operator pointed it elsewhere with its own variable
before the process started:

    tensorboard   runs/<id>/tensorboard/   TENSORBOARD_LOGGING_DIR
    trackio       runs/<id>/trackio/       TRACKIO_DIR (project alignment-studio, run <id>; local, no Space)
    wandb         runs/<id>/wandb/         WANDB_DIR (online needs `wandb login`; WANDB_MODE=offline stays local)
    mlflow        runs/<id>/mlruns/        MLFLOW_TRACKING_URI (a file:// store; experiment alignment-studio)

Nothing here imports a tracker (whether one is installed is asked of importlib), so the config and the form can
read TRACKERS without loading any of them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pipelines.errors import StudioError

TRACKERS = ("none", "trackio", "tensorboard", "wandb", "mlflow")
PROJECT = "alignment-studio"     # trackio's project, W&B's and MLflow's experiment: one per studio, a run per run
PACKAGES = {"trackio": "trackio", "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}   # pip names


def _run_folders(run_dir: Path) -> dict[str, dict[str, str]]:
    """Each tracker's environment variables, pointed into the run folder."""
    return {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(run_dir / "tensorboard")},
            "trackio": {"TRACKIO_DIR": str(run_dir / "trackio")},
            "wandb": {"WANDB_DIR": str(run_dir), "WANDB_PROJECT": PROJECT},
            # MLflow 3 keeps its file store (readable by `mlflow ui`) only where it is asked to; a database store
            # would need SQLAlchemy and Alembic, which mlflow-skinny lacks.
            "mlflow": {"MLFLOW_TRACKING_URI": (run_dir / "mlruns").as_uri(), "MLFLOW_EXPERIMENT_NAME": PROJECT,
                       "MLFLOW_ALLOW_FILE_STORE": "true"}}


# What the operator set before this process began wins; what an earlier run of this process set does not (tests
# train several runs in one process).
_OPERATOR_SET = {name: os.environ.get(name) for folders in _run_folders(Path("/")).values() for name in folders}


def chosen(report_to: str) -> list[str]:
    """The trackers a `train.report_to` value names (none: an empty list)."""
    return [] if report_to in ("", "none") else [report_to]


def check_installed(report_to: str) -> None:
    """Refuse a tracker whose package this machine lacks, before a run starts (and again where it trains)."""
    for tracker in chosen(report_to):
        package = PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            raise StudioError("stage.tracker_not_installed", tracker=tracker, package=package)
        if tracker == "wandb" and not wandb_can_log():
            raise StudioError("stage.wandb_not_logged_in")


def wandb_can_log() -> bool:
    """W&B without a key fails at the run's first step, prompting for a login nobody can type: check before, as
    W&B itself does — an API key in the environment or ~/.netrc (what `wandb login` writes), or an offline mode."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def report_to_args(report_to: str, run_dir: Path) -> dict:
    """The TrainingArguments that send a run's logs to its trackers (report_to, its project and run name), with each
    tracker's files pointed into `run_dir`. Call it before the Trainer is built: transformers reads these variables
    when it makes its callbacks, and trackio when it is first imported (each run trains in a process of its own)."""
    check_installed(report_to)
    trackers = chosen(report_to)
    if not trackers:
        return {"report_to": []}
    folders = _run_folders(Path(run_dir))
    for tracker in trackers:
        for name, value in folders[tracker].items():
            if _OPERATOR_SET.get(name) is None:
                os.environ[name] = value
    return {"report_to": trackers, "run_name": Path(run_dir).name, "project": PROJECT}


def trackers_last(callbacks: list) -> list:
    """`callbacks` with the trackers' own at the end, in place (the rest keep their order). A Trainer puts its
    report_to callbacks before the ones it is given; but ours add to each log (tokens/s and MFU, perplexity, the
    preference check) in their on_log, and a tracker must hear the log after they have."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    tracker_types = tuple(INTEGRATION_TO_CALLBACK.values())
    callbacks.sort(key=lambda callback: isinstance(callback, tracker_types))   # stable: False (ours) first
    return callbacks


def loop_callbacks(args) -> list:
    """For our own loops: the callbacks a Trainer made with these TrainingArguments would report through."""
    if not args.report_to:
        return []
    from transformers.integrations import get_reporting_integration_callbacks

    return [callback() for callback in get_reporting_integration_callbacks(args.report_to)]
