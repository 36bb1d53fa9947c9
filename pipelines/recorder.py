"""The trainer callback that turns a Trainer into a run directory: metrics, status, stop, atomic checkpoints.

Trainers save checkpoints into a staging folder; once a checkpoint is complete this callback renames
it into checkpoints/, so checkpoints/ only ever holds complete ones — and only finite ones, with room on the disk:

- every step, before the optimizer steps, the gradients are checked: a NaN or infinite loss makes them
  non-finite at that very step, whatever logging_steps is, so no checkpoint is saved from what follows;
- before a save, the weights in memory are checked, and the disk must have room for a checkpoint (the size of the
  previous one, or estimated from the trainable parameters);
- a staged checkpoint whose weights are not all finite is never published (a second guard, after the gradients).
Any of these ends the run `failed` with one sentence (train.py raises `failure`).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines import run_files
from pipelines.messages import Message
from pipelines.stop import StopSignal, _agree_across_ranks, barrier

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")
# A checkpoint holds each trainable parameter in fp32 and, in optimizer.pt, AdamW's two moments of it.
CHECKPOINT_BYTES_PER_TRAINABLE_PARAMETER = 3 * 4
LOWER_THE_LEARNING_RATE = Message("runs.lower_the_learning_rate")


class RunRecorder(TrainerCallback):
    def __init__(self, run_dir: Path, staging_dir: Path, stop: StopSignal, echo: bool = True, stage: str = "",
                 rule_reward: bool = False, keep_checkpoints: int = 0):
        self.run_dir, self.staging_dir, self.stop, self.echo, self.stage = run_dir, staging_dir, stop, echo, stage
        self.rule_reward = rule_reward   # the warning signs' hints differ (pipelines/signals.py)
        self.keep_checkpoints = keep_checkpoints   # train.save_total_limit
        self.records: list[dict] = []                      # the run's metrics so far, for its warning signs
        self.signs_told: set[str] = set()                  # kinds of warning already printed to the log
        self.first_log: tuple[int, float] | None = None   # (step, time) of the first step logged by this process
        self.failure: Message | None = None                # why the run was stopped: a NaN loss, a full disk
        self.bad_gradients: str | None = None              # "nan" or "inf": this step's loss was not finite
        self.saving: str | None = None                     # the checkpoint being written, for a failure to name it
        self.last_record: dict | None = None               # the latest metrics line, for the status file

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_log = None
        self.records = run_files.read_metrics(self.run_dir)   # a resume continues the earlier records
        if state.is_world_process_zero:
            run_files.update_status(self.run_dir, status="running", step=state.global_step, max_steps=state.max_steps)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # The loss is only seen when it is logged; its gradients are here at every step. With fp16 a loss scaler
        # skips steps whose gradients overflowed, so there an inf gradient is no divergence.
        if model is None or self.failure or getattr(args, "fp16", False):
            return
        kind = non_finite_gradients(model)
        if _agree_across_ranks(kind is not None):
            self.bad_gradients = kind or "nan"

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.stop.check():
            control.should_save = True          # the trainer saves a checkpoint, then leaves the loop
            control.should_training_stop = True
            if state.is_world_process_zero:
                run_files.update_status(self.run_dir, status="stopping")
        if self.failure:
            return control
        step, saving = state.global_step, control.should_save
        if self.bad_gradients:
            self._fail(control, Message("runs.loss_not_finite", value=self.bad_gradients, step=step,
                                        not_saved=self._not_saved(step, saving), advice=LOWER_THE_LEARNING_RATE))
        elif saving:
            problem = None
            if model is not None and not weights_finite(model):
                problem = Message("runs.weights_not_finite", step=step, not_saved=self._not_saved(step, True),
                                  advice=LOWER_THE_LEARNING_RATE)
            elif state.is_world_process_zero:
                problem = self.no_room(f"checkpoint-{step}", model)
            if _agree_across_ranks(problem is not None):
                self._fail(control, problem or Message("runs.other_process_not_saved", step=step))
            else:
                self.saving = f"checkpoint-{step}"
        return control

    def no_room(self, what: str, model=None) -> Message | None:
        """Why the disk cannot take `what` (a checkpoint, final/), or None. Its size: the previous checkpoint's,
        or, for the first, estimated from the trainable parameters."""
        last = run_files.last_checkpoint(self.run_dir)
        if last is not None:
            size = run_files.folder_bytes(last)
        elif model is not None:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            size = CHECKPOINT_BYTES_PER_TRAINABLE_PARAMETER * trainable
        else:
            size = 0
        needed = size + run_files.SPARE_BYTES
        free = run_files.free_bytes(self.run_dir)
        if free >= needed:
            return None
        return run_files.disk_full_sentence(self.run_dir, free, Message("runs.not_written", what=what), needed)

    def _not_saved(self, step: int, saving: bool) -> Message:
        kept = run_files.checkpoints_kept(self.run_dir)
        return Message("runs.checkpoint_not_saved", step=step, kept=kept) if saving else \
            Message("runs.stopped_there", kept=kept)

    def _fail(self, control, sentence: Message) -> None:
        """Stop the run at this step with nothing more saved; train.py ends it failed with `sentence`."""
        self.failure, self.saving = sentence, None
        control.should_save = False
        control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss) and self.failure is None:
            # Every rank logs the same reduced loss, so every rank stops here, and nothing is saved from
            # weights that are already broken: the checkpoints before this step stay the last good ones.
            step = state.global_step
            self._fail(control, Message("runs.loss_not_finite", value=str(loss), step=step,
                                        not_saved=self._not_saved(step, control.should_save),
                                        advice=LOWER_THE_LEARNING_RATE))
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
        refused = self._publish_checkpoint(state) if state.is_world_process_zero else None
        if _agree_across_ranks(refused is not None):
            self._fail(control, refused or Message("runs.main_process_not_saved", step=state.global_step))
        self.saving = None
        barrier()

    def _publish_checkpoint(self, state) -> Message | None:
        """Move the staged checkpoint into checkpoints/; a non-finite one is deleted instead, and the sentence
        that says so returned."""
        from pipelines.stages.common import non_finite_tensors

        name = f"checkpoint-{state.global_step}"
        staged, final = self.staging_dir / name, self.run_dir / "checkpoints" / name
        if not staged.is_dir():
            return None
        bad, total = non_finite_tensors(staged)
        if bad:
            shutil.rmtree(staged, ignore_errors=True)
            return Message("runs.weights_not_finite_tensors", step=state.global_step, bad=bad, total=total,
                           not_saved=self._not_saved(state.global_step, True), advice=LOWER_THE_LEARNING_RATE)
        final.parent.mkdir(exist_ok=True)
        if final.exists():  # the same step saved again after a resume: replace it whole
            shutil.rmtree(final)
        os.replace(staged, final)
        if self.echo:
            print(f"saved {final.relative_to(self.run_dir)}", flush=True)
        try:
            deleted = run_files.prune_checkpoints(self.run_dir, self.keep_checkpoints)
        except OSError as exc:   # an old checkpoint that will not go is no reason to fail a run that saved
            deleted = []
            print(f"warning: old checkpoints were not deleted: {exc.strerror or exc}", flush=True)
        if deleted and self.echo:
            print(f"deleted checkpoint-{', checkpoint-'.join(map(str, deleted))} (train.save_total_limit "
                  f"{self.keep_checkpoints})", flush=True)
        return None

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


def non_finite_gradients(model) -> str | None:
    """"nan" or "inf" if any gradient of `model` is not finite (its loss was not), else None: one norm over all of
    them, so one read from the device per step."""
    import torch

    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if not gradients:   # DeepSpeed keeps them elsewhere: the logged loss and the saved weights are checked instead
        return None
    norm = torch.nn.utils.get_total_norm(gradients, error_if_nonfinite=False).item()
    return None if math.isfinite(norm) else str(norm)


def weights_finite(model) -> bool:
    """Whether every trained weight is finite (checked before a save only: one read from the device per tensor)."""
    import torch

    return all(bool(torch.isfinite(p.detach()).all()) for p in model.parameters() if p.requires_grad)


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
