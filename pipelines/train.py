"""The training process: `python -m pipelines train <run_dir> [--resume]`.

It reads config.yaml, runs the stage, and writes everything a reader needs into the run directory.
Whatever happens — success, a user error, a crash, a stop request, a full disk — status.json says so before the
process ends. (A SIGKILL, or a disk so full that not even status.json can be written, leaves it `running`; readers
see the dead pid and read it as `interrupted`.) train.log is kept under run_files.LOG_CAP_BYTES while it runs.
Works the same under `accelerate launch`: only the main process writes status and metrics.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
import warnings
from pathlib import Path

from pipelines import run_files
from pipelines.errors import StudioError
from pipelines.messages import Message
from pipelines.paths import file_lock
from pipelines.stop import StopSignal


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_run(run_dir: Path, resume: bool = False, echo: bool = True) -> str:
    """Train the run in this process; return its final status. A completed run is refused (StudioError), unchanged."""
    # Library deprecation notices would bury the progress lines in train.log.
    warnings.filterwarnings("ignore", category=FutureWarning)
    run_dir = Path(run_dir).resolve()
    workspace = run_dir.parent.parent
    main = is_main_process()
    # One trainer per run: an exclusive lock held for the whole training (only the main rank takes it).
    with file_lock(run_dir / ".train.lock", wait=False) if main else contextlib.nullcontext(True) as sole:
        if not sole:
            print(f"error: run {run_dir.name} is already being trained by another process; nothing was changed.", flush=True)
            return run_files.read_status(run_dir).get("status", "unknown")
        from pipelines.runs import check_not_completed
        check_not_completed(run_dir, run_files.read_status(run_dir))   # its final/ stays as it is
        with run_files.capped_log(run_dir / "train.log") if main else contextlib.nullcontext():
            return _train_locked(run_dir, workspace, resume, echo, main)


def _train_locked(run_dir: Path, workspace: Path, resume: bool, echo: bool, main: bool) -> str:
    from pipelines.runs import process_start_time
    from pipelines.stop import _agree_across_ranks

    stop = StopSignal(run_dir)
    stop.install()
    recorder, saving_final = None, False   # for a full disk's sentence: what was being written
    try:
        if main:
            run_files.update_status(run_dir, status="running", pid=os.getpid(),
                                    pid_started=process_start_time(os.getpid()), error=None, error_message=None,
                                    started_at=time.time())
        from pipelines.probes import ProbeCallback, run_probe_prompts
        from pipelines.recorder import RunRecorder
        from pipelines.rl.rewards import rule_only
        from pipelines import runs
        from pipelines.runs import load_config
        from pipelines.stages import get_stage, stage_runner
        from pipelines.stages.common import RunContext, save_final
        from pipelines.throughput import ThroughputCallback

        config = load_config(run_dir)
        resume_from = run_files.last_checkpoint(run_dir) if resume else None
        if resume and (nothing := runs.nothing_to_resume(run_dir)):
            raise StudioError(nothing)
        if resume_from and main:
            step = int(resume_from.name.split("-")[-1])
            # Metrics an earlier attempt logged past this step belong to an abandoned branch (see read_metrics).
            run_files.append_jsonl(run_dir / "metrics.jsonl", {"resumed_from": step, "time": time.time()})
            if echo:
                print(f"resuming from {resume_from.name}", flush=True)
        staging = run_dir / ".staging"
        recorder = RunRecorder(run_dir, staging, stop, echo=echo and main, stage=config.stage,
                               rule_reward=rule_only(config), keep_checkpoints=config.train.save_total_limit)
        # First: the recorder then writes the tokens/s and MFU it adds to each log.
        callbacks = [ThroughputCallback(run_dir, frozen_base=config.peft.method != "full", echo=echo and main), recorder]
        probes = run_probe_prompts(config, workspace)
        if probes:
            callbacks.append(ProbeCallback(run_dir, probes))
        context = RunContext(config, run_dir, workspace, staging, resume_from, callbacks=callbacks)
        trainer = stage_runner(config.stage)(context)
        if recorder.failure:
            raise StudioError(recorder.failure)
        if stop.requested:
            final_status = "stopped"
        else:
            if get_stage(config.stage).output != "datasets":   # best-of-N makes datasets, not weights
                no_room = recorder.no_room("final/") if main else None
                if _agree_across_ranks(no_room is not None):
                    raise StudioError(no_room or Message("runs.main_process_no_room"))
                saving_final = True
                save_final(trainer, run_dir, staging)
                saving_final = False
            final_status = "completed"
            if main:  # what the trainer left in its output_dir (a model card) is not part of the run
                shutil.rmtree(staging, ignore_errors=True)
        if main:   # stopped by a hosted limit, not a user: the status says which limit
            said = run_files.error_fields(stop.reason) if final_status == "stopped" and stop.reason else {}
            run_files.update_status(run_dir, status=final_status, pid=None, **said)
        if echo and main:
            with contextlib.suppress(OSError):   # the run is complete whether or not the log still takes a line
                print(f"run {run_dir.name} {final_status}", flush=True)
        return final_status
    except StudioError as exc:
        return _fail(run_dir, exc.catalog_message or str(exc), main)
    except KeyboardInterrupt:
        return _fail(run_dir, Message("runs.keyboard_interrupt"), main, status="interrupted")
    except Exception as exc:  # a crash: the message for the UI, the traceback for train.log
        with contextlib.suppress(OSError):
            traceback.print_exc()
        if main and run_files.is_disk_full(exc, run_dir):
            writing = "final/" if saving_final else recorder and recorder.saving
            step = run_files.read_status(run_dir).get("step", 0)
            lost = Message("runs.not_written", what=writing) if writing else Message("runs.stopped_at_step", step=step)
            free = run_files.free_bytes(run_dir)
            shutil.rmtree(run_dir / ".staging", ignore_errors=True)   # the half-written files: room for the status
            return _fail(run_dir, run_files.disk_full_sentence(run_dir, free, lost), main)
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        if "out of memory" in first_line.lower():
            return _fail(run_dir, Message("runs.out_of_memory"), main)
        return _fail(run_dir, Message("runs.crashed", error=type(exc).__name__, problem=first_line), main)
    finally:
        stop.restore()
        if main:  # a stop request is answered once; the next resume starts clean
            (run_dir / run_files.STOP_REQUEST_FILE).unlink(missing_ok=True)


def _fail(run_dir: Path, message: Message | str, main: bool, status: str = "failed") -> str:
    """End the run as `status` with `message` (its English sentence, and its code and parameters beside it in
    status.json); return the status."""
    with contextlib.suppress(OSError):   # a full disk may refuse the log line; the status says it all the same
        print(f"error: {message}", flush=True)
    if main:
        try:
            run_files.update_status(run_dir, status=status, pid=None, **run_files.error_fields(message))
        except OSError:   # not even status.json: readers see this process gone and read the run as interrupted
            with contextlib.suppress(OSError):
                print("error: status.json could not be written either.", flush=True)
    return status
