"""The trainer callback that turns a Trainer into a run directory: metrics, status, stop, atomic checkpoints.

Trainers save checkpoints into a staging folder; once a checkpoint is complete this callback renames
it into checkpoints/, so checkpoints/ only ever holds complete ones.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines import run_files
from pipelines.stop import StopSignal, barrier

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")


class RunRecorder(TrainerCallback):
    def __init__(self, run_dir: Path, staging_dir: Path, stop: StopSignal, echo: bool = True, stage: str = "",
                 rule_reward: bool = False):
        self.run_dir, self.staging_dir, self.stop, self.echo, self.stage = run_dir, staging_dir, stop, echo, stage
        self.rule_reward = rule_reward   # the warning signs' hints differ (pipelines/signals.py)
        self.records: list[dict] = []                      # the run's metrics so far, for its warning signs
        self.signs_told: set[str] = set()                  # kinds of warning already printed to the log
        self.first_log: tuple[int, float] | None = None   # (step, time) of the first step logged by this process
        self.diverged: str | None = None                   # why training was stopped for a NaN or infinite loss
        self.last_record: dict | None = None               # the latest metrics line, for the status file

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_log = None
        self.records = run_files.read_metrics(self.run_dir)   # a resume continues the earlier records
        if state.is_world_process_zero:
            run_files.update_status(self.run_dir, status="running", step=state.global_step, max_steps=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop.check():
            control.should_save = True          # the trainer saves a checkpoint, then leaves the loop
            control.should_training_stop = True
            if state.is_world_process_zero:
                run_files.update_status(self.run_dir, status="stopping")
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss) and self.diverged is None:
            # Every rank logs the same reduced loss, so every rank stops here, and nothing is saved from
            # weights that are already broken: the checkpoints before this step stay the last good ones.
            self.diverged = (f"The loss became {loss} at step {state.global_step}; training stopped and nothing after "
                             "the last checkpoint was saved. Lower the learning rate (or raise beta), then resume or restart.")
            control.should_save = False
            control.should_training_stop = True
        if not state.is_world_process_zero:
            return
        if any(key in logs for key in SUMMARY_KEYS):  # the closing summary is not a step
            run_files.update_status(self.run_dir, summary={k: v for k, v in logs.items() if _is_number(v)})
            return
        now = time.time()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": now,
                  "split": "eval" if any(k.startswith("eval_") for k in logs) else "train",
                  **{k: _clean(v) for k, v in logs.items()}}
        run_files.append_jsonl(self.run_dir / "metrics.jsonl", record)
        self.records.append(record)
        # Several logs at one step (training, then eval, then a check at the save) add up on the status line.
        if self.last_record and self.last_record["step"] == record["step"]:
            record = {**self.last_record, **record}
        self.last_record = record
        eta = self._eta(state, now)
        run_files.update_status(self.run_dir, step=state.global_step, max_steps=state.max_steps,
                                last_metrics=record, eta_s=eta)
        if self.echo:
            shown = " ".join(f"{k}={_short(v)}" for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm", "eval_loss"))
            print(f"step {state.global_step}/{state.max_steps} {shown} eta {_duration(eta)}", flush=True)
            self._tell_new_signs()

    def _tell_new_signs(self) -> None:
        """Print each kind of warning sign (pipelines/signals.py) to the log once, when it first shows; the run page
        shows the current ones on its status line."""
        from pipelines.signals import signs_by_kind

        for kind, sentence in signs_by_kind(self.stage, self.records, self.rule_reward).items():
            if kind not in self.signs_told:
                self.signs_told.add(kind)
                print(f"warning: {sentence}", flush=True)

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its part (shards, rng state) before the checkpoint is moved
        if state.is_world_process_zero:
            self._publish_checkpoint(state)
        barrier()

    def _publish_checkpoint(self, state) -> None:
        name = f"checkpoint-{state.global_step}"
        staged, final = self.staging_dir / name, self.run_dir / "checkpoints" / name
        if not staged.is_dir():
            return
        final.parent.mkdir(exist_ok=True)
        if final.exists():  # the same step saved again after a resume: replace it whole
            shutil.rmtree(final)
        os.replace(staged, final)
        if self.echo:
            print(f"saved {final.relative_to(self.run_dir)}", flush=True)

    def _eta(self, state, now: float) -> float | None:
        """Remaining time at the pace since the first logged step (start-up and the first step's warm-up excluded)."""
        if self.first_log is None:
            self.first_log = (state.global_step, now)
            return None
        first_step, first_time = self.first_log
        done = state.global_step - first_step
        if done <= 0 or not state.max_steps:
            return None
        return (now - first_time) / done * max(0, state.max_steps - state.global_step)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clean(value):
    """JSON has no NaN/inf: write them as strings so a reader sees them instead of a broken line."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
