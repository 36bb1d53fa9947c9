"""The plain-Python surface of the studio: every UI action and API endpoint is one of these calls.

Arguments and results are plain data (str, dict, list), so the Gradio app, `gradio_client`, the CLI
and tests all use the same functions. Errors a user can cause are raised as StudioError.
"""

from __future__ import annotations

from pathlib import Path

from pipelines import run_files, run_queue, runs
from pipelines.config import BUNDLED_MODEL_ID, RunConfig, parse_config_text
from pipelines.errors import StudioError, quote
from pipelines.stages import get_stage


def prepare_run(workspace: Path, config_text: str) -> Path:
    """Validate a config against its model and data, then create the run directory (nothing is started).
    What is worth knowing but not wrong (duplicates, rows max_length would cut) goes into its status as warnings."""
    config = parse_config_text(config_text)
    source, warnings = check_startable(workspace, config)
    free = run_files.free_bytes(next(p for p in (Path(workspace), *Path(workspace).parents) if p.exists()))
    if free < run_files.SPARE_BYTES:   # not even a run folder fits: refuse before writing one
        raise StudioError(f"The disk is full ({run_files.megabytes(free)} free): free some space, then start the run.")
    if source.kind == "local":  # the training process runs elsewhere (cwd): pin the folder the user meant
        config.model = source.base
    run_dir = runs.create_run(workspace, config, {"warnings": warnings})
    if get_stage(config.stage).takes_reward:   # the rules it was checked with are the rules it trains on
        from pipelines.rl.rewards import keep_reward_file, parse_reward
        keep_reward_file(parse_reward(getattr(config, config.stage).reward, workspace), run_dir)
    return run_dir


def check_startable(workspace: Path, config: RunConfig):
    """Everything that can be checked before a process is spent on it: hardware, model, context, data.
    Returns the model source and the data's warnings."""
    from pipelines.data.store import load_dataset, load_stage_rows, stage_rows
    from pipelines.models import best_device, check_generative, resolve_model
    from pipelines.stages.common import check_hardware

    check_hardware(config, best_device())
    source = resolve_model(config.model, workspace)
    check_generative(source)
    kind, data = load_dataset(config.dataset, workspace)
    stage = get_stage(config.stage)
    rows = stage_rows(config.dataset, kind, data.rows, config.stage)
    if config.eval_dataset:
        load_stage_rows(config.eval_dataset, workspace, config.stage)
    if stage.takes_reward:
        from pipelines.rl.rewards import check_reward
        check_reward(getattr(config, config.stage).reward, workspace)   # a function file is imported and tried on a sample
        if config.eval_dataset:
            raise StudioError("check.no_eval_for_rl", stage=config.stage.upper())
    stage_warnings = stage.check_start(config, rows) if stage.check_start else []
    from pipelines.models import context_length, hidden_size
    model_config = _model_config(source)
    limit = context_length(model_config)
    if limit and config.train.max_length > limit:
        raise StudioError(f"max_length {config.train.max_length} is beyond the model's context of {limit} tokens; "
                          "lower train.max_length.")
    width = hidden_size(model_config)
    if config.peft.method != "full" and width and config.peft.r > width:
        raise StudioError(f"peft.r {config.peft.r} is above the model's hidden size of {width}: an update that wide "
                          "is no longer low-rank; lower peft.r.")
    return source, (data.warnings + stage_warnings + _length_warnings(source, kind, data, config.train.max_length)
                    + _memory_warnings(config, model_config))


def _memory_warnings(config: RunConfig, model_config) -> list[str]:
    """On the CPU, refuse a run whose estimated peak (pipelines/models.estimate_training_memory) is beyond the
    machine's whole memory; warn when it is beyond what is free now."""
    import psutil

    from pipelines.models import best_device, count_config_parameters, estimate_training_memory, hidden_size
    from pipelines.stages.common import precision_args

    device = best_device()
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    rows = config.train.batch_size * get_stage(config.stage).rows_per_example   # a pair is two answers
    estimate = estimate_training_memory(count_config_parameters(model_config), hidden_size(model_config) or 0,
                                        getattr(text_config, "num_hidden_layers", 0) or 0,
                                        getattr(text_config, "vocab_size", 0) or 0, rows, config.train.max_length,
                                        bf16=any(precision_args(config, device).values()),   # 2 bytes a value
                                        device=device)["full" if config.peft.method == "full" else "lora"]
    if device != "cpu":   # calibrated on the CPU only; asking a GPU would also open a CUDA context in the server
        return []
    memory = psutil.virtual_memory()
    free, total = memory.available / 1024 ** 3, memory.total / 1024 ** 3
    fixes = "lower train.batch_size or train.max_length" + ("" if config.peft.method != "full" else ", or use LoRA")
    if estimate > total:
        raise StudioError(f"This run needs about {estimate:.1f} GB at its peak and the {device} has {total:.1f} GB in "
                          f"all: {fixes}.")
    if estimate > free:
        return [f"This run needs about {estimate:.1f} GB at its peak and the {device} has {free:.1f} GB free now: it "
                f"may run out of memory; {fixes}, or stop other work first."]
    return []


def _length_warnings(source, kind: str, data, max_length: int) -> list[str]:
    """Rows the run's max_length would cut, counted with the model's own tokenizer and chat template."""
    from pipelines.data.stats import length_stats
    from pipelines.models import load_tokenizer

    tokenizer = load_tokenizer(source)
    if not tokenizer.chat_template:  # every dataset is normalised to conversations: they need a template to render
        raise StudioError(f"{source.spec!r} has no chat template, so conversation rows cannot be rendered for it; "
                          "pick an instruct/chat model or one whose tokenizer defines chat_template.")
    return length_stats(kind, data.format, data.rows, tokenizer, max_length)["warnings"]


def _model_config(source):
    from transformers import AutoConfig

    from pipelines.models import trust_remote_code
    try:
        return AutoConfig.from_pretrained(source.base, trust_remote_code=trust_remote_code())
    except OSError as exc:
        raise StudioError(f"Could not read the model config of {source.spec!r}: {str(exc).splitlines()[0]}") from None


def list_stages(workspace: Path) -> list[dict]:
    """Every training stage, in road order: stage, data_kind (the rows it trains on), output (chat_model,
    reward_model or datasets), takes_reward, defaults (dataset, train settings), and settings of its own section
    [{name, type, default, help, choices, minimum, maximum}]."""
    from pipelines.config import describe_settings
    from pipelines.stages import all_stages
    return [{"stage": stage.name, "data_kind": stage.data_kind, "output": stage.output,
             "takes_reward": stage.takes_reward, "defaults": stage.defaults,
             "settings": describe_settings(stage.name) if stage.settings else []} for stage in all_stages()]


def start_run(workspace: Path, config_text: str) -> str:
    """Validate and create a run, and queue it: it trains in its own process as soon as a place is free
    (pipelines/run_queue.py); return the run id."""
    run_dir = prepare_run(workspace, config_text)
    run_queue.start(run_dir)
    return run_dir.name


def run_status(workspace: Path, run_id: str) -> dict:
    run_dir = runs.run_dir_of(workspace, run_id)
    run_queue.dispatch(workspace)   # a place freed by a run that died is taken as soon as anyone looks
    status = runs.refresh_status(run_dir)
    return {
        "run_id": run_id, "status": status.get("status"), "queue_position": run_queue.queue_position(run_dir, status),
        "step": status.get("step", 0),
        "max_steps": status.get("max_steps", 0), "eta_s": status.get("eta_s"),
        "last_metrics": status.get("last_metrics") or {}, "error": status.get("error"),
        "checkpoints": run_files.checkpoint_steps(run_dir), "has_final": (run_dir / "final").is_dir(),
        "warnings": (status.get("warnings") or []) + _live_warnings(run_dir),
        "datasets": status.get("datasets") or {},   # what a rejection-sampling run saved: {"best": ..., "pairs": ...}
    }


def _live_warnings(run_dir: Path) -> list[str]:
    from pipelines.rl.rewards import rule_only
    from pipelines.signals import warning_signs
    try:
        config = runs.load_config(run_dir)
    except StudioError:
        return []
    return warning_signs(config.stage, run_files.read_metrics(run_dir), rule_only(config))


def run_metrics(workspace: Path, run_id: str) -> list[dict]:
    return run_files.read_metrics(runs.run_dir_of(workspace, run_id))


def run_log(workspace: Path, run_id: str, lines: int = 40) -> str:
    return run_files.tail(runs.run_dir_of(workspace, run_id) / "train.log", lines)


def stop_run(workspace: Path, run_id: str) -> dict:
    """Cancel a queued run, or ask a training one to save a checkpoint and stop; `message` says which happened."""
    run_dir = runs.run_dir_of(workspace, run_id)
    was = runs.refresh_status(run_dir).get("status")
    status = run_queue.stop(run_dir).get("status")
    if was not in run_files.ACTIVE_STATES:
        message = f"Run {run_id} is {was}, not training: there is nothing to stop."
    elif was == "queued" and status == "stopped":
        message = f"Run {run_id} was cancelled before it started."
    else:
        message = f"Run {run_id} will save a checkpoint and stop."
    return {"run_id": run_id, "status": status, "message": message}


def resume_run(workspace: Path, run_id: str) -> dict:
    """Queue a stopped, failed or interrupted run to go on from its last checkpoint; `message` says from where."""
    run_dir = runs.run_dir_of(workspace, run_id)
    status = run_queue.resume(run_dir)
    if status.get("status") == "failed":   # the launch was refused (a full disk): say why
        raise StudioError(status.get("error") or f"Run {run_id} could not be started again.")
    last = run_files.last_checkpoint(run_dir)
    start = f"from {last.name}" if last else "from what it kept"
    when = "when its turn in the queue comes" if run_queue.is_waiting(status) else "now"
    return {"run_id": run_id, "status": status.get("status"), "message": f"Run {run_id} resumes {start} {when}."}


def list_runs(workspace: Path) -> list[dict]:
    run_queue.dispatch(workspace)
    return [runs.summary(run_dir) for run_dir in runs.list_run_dirs(workspace)]


CHECKPOINT_KINDS = ("any", "chat", "reward")


def list_checkpoints(workspace: Path, kind: str = "any") -> list[str]:
    """Model ids: the base models (bundled and those runs started from), then each run's checkpoints. kind "chat":
    only those that generate (no reward model's); "reward": only reward models' checkpoints."""
    if kind not in CHECKPOINT_KINDS:
        raise StudioError(f"kind must be one of {', '.join(CHECKPOINT_KINDS)}, not {quote(kind)}.")
    ids = [BUNDLED_MODEL_ID] if kind != "reward" else []
    configs = {}
    for run_dir in runs.list_run_dirs(workspace):
        try:
            configs[run_dir] = runs.load_config(run_dir)
        except StudioError:
            continue
    for config in configs.values():
        model = config.model
        if kind != "reward" and model not in ids and "/checkpoint-" not in model and not model.endswith("/final"):
            ids.append(model)
    for run_dir, config in configs.items():
        is_reward = not get_stage(config.stage).generates
        if (kind == "chat" and is_reward) or (kind == "reward" and not is_reward):
            continue
        if (run_dir / "final").is_dir():
            ids.append(f"{run_dir.name}/final")
        ids.extend(f"{run_dir.name}/checkpoint-{step}" for step in reversed(run_files.checkpoint_steps(run_dir)))
    return ids


def describe_model(workspace: Path, model: str) -> dict:
    from pipelines.models import describe_model as describe
    return describe(model, workspace)


def list_datasets(workspace: Path) -> list[dict]:
    from pipelines.data.store import list_datasets as listing
    return listing(workspace)


def upload_dataset(workspace: Path, file: str, name: str, drop_bad_rows: bool = False,
                   columns: dict | str | None = None, replace: bool = False) -> dict:
    """Check a data file and save it as a named dataset: {kind, format, rows, errors, warnings, saved}.
    An existing dataset of that name is replaced only when asked (`replace`): runs may be reading it."""
    from pipelines.data.store import save_upload
    if not file:
        raise StudioError("No file given; choose a .json, .jsonl, .csv, .tsv or .parquet file to upload.")
    return save_upload(Path(file), name, workspace, drop_bad_rows, columns, replace)


def import_hub_dataset(workspace: Path, repo_id: str, config: str | None, split: str, name: str,
                       max_rows: int = 10_000, drop_bad_rows: bool = False, columns: dict | str | None = None,
                       replace: bool = False) -> dict:
    """Fetch a Hub dataset's rows, check them and save them as a named dataset; the same report as an upload."""
    from pipelines.data.hub import import_hub_dataset as fetch_and_save
    return fetch_and_save(repo_id, config, split, name, workspace, max_rows, drop_bad_rows, columns, replace)


def preview_dataset(workspace: Path, name: str, model: str, n: int = 3) -> list[dict]:
    from pipelines.data.store import preview
    return preview(name, workspace, _template_tokenizer(workspace, model), max(1, min(int(n), 50)))


def dataset_stats(workspace: Path, name: str, model: str, max_length: int = 512) -> dict:
    """Rows, kind, format and token lengths through `model`'s chat template; what `max_length` would cut."""
    from pipelines.data.stats import length_stats
    from pipelines.data.store import load_dataset
    if not 1 <= int(max_length) <= 1_000_000:
        raise StudioError("max_length must be a positive number of tokens.")
    kind, data = load_dataset(name, workspace)
    stats = length_stats(kind, data.format, data.rows, _template_tokenizer(workspace, model), int(max_length))
    return {"name": name, **stats}


def dataset_table(workspace: Path, name: str) -> dict:
    """A dataset as an editable table: {kind, columns, rows}."""
    from pipelines.data.table import table_of
    return table_of(name, workspace)


def save_table(workspace: Path, kind: str, rows: list[list], name: str, drop_bad_rows: bool = False,
               replace: bool = False) -> dict:
    """Check rows typed or edited in a table and save them as a named dataset; the same report as an upload."""
    from pipelines.data.table import save_table as check_and_save
    return check_and_save(kind, rows, name, workspace, drop_bad_rows, replace)


def deduplicate_dataset(workspace: Path, name: str, new_name: str, near: bool = True, threshold: float = 0.8) -> dict:
    from pipelines.data.tools import deduplicate
    return deduplicate(name, workspace, new_name, near, float(threshold))


def filter_dataset(workspace: Path, name: str, new_name: str, model: str, min_tokens: int = 0,
                   max_tokens: int | None = None) -> dict:
    from pipelines.data.tools import filter_by_length
    return filter_by_length(name, workspace, new_name, _template_tokenizer(workspace, model), int(min_tokens or 0),
                            int(max_tokens) if max_tokens else None)


def split_dataset(workspace: Path, name: str, new_name: str, eval_fraction: float = 0.1, seed: int = 42) -> dict:
    from pipelines.data.tools import split
    return split(name, workspace, new_name, float(eval_fraction), int(seed))


def _template_tokenizer(workspace: Path, model: str):
    """The tokenizer of `model`, which must have a chat template to render rows with."""
    from pipelines.models import load_tokenizer, resolve_model
    tokenizer = load_tokenizer(resolve_model(model, workspace))
    if not tokenizer.chat_template:
        raise StudioError(f"{model!r} has no chat template to render rows with; pick an instruct model.")
    return tokenizer


def score(workspace: Path, checkpoint: str, prompt: str, responses: list[str]) -> list[float]:
    """The reward a reward checkpoint gives each response to `prompt`."""
    from pipelines.scoring import score as reward_scores
    return reward_scores(workspace, checkpoint, prompt, list(responses or []))


def evaluate_reward(workspace: Path, checkpoint: str, dataset: str, limit: int = 500) -> dict:
    """Held-out accuracy, margins and length correlation of a reward checkpoint on a preference dataset (at most
    5000 pairs): checkpoint, dataset, pairs, accuracy, margins, mean_margin, length_correlation, warnings (one when
    the pairs are the reward run's own training data). Runs as a job (start_job "evaluate_reward") and waits for it."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "evaluate_reward", {"checkpoint": checkpoint, "dataset": dataset, "limit": limit})
    return {**results["summary"], "warnings": results["warnings"]}


def score_dataset(workspace: Path, checkpoint: str, dataset: str, limit: int = 1000) -> list[dict]:
    """Every answer of a dataset (at most 10000 rows) with the reward a reward checkpoint gives it, best first:
    prompt, answer, side, reward. Runs as a job (start_job "score_dataset") and waits for it."""
    from pipelines import jobs
    return jobs.run_to_end(workspace, "score_dataset", {"checkpoint": checkpoint, "dataset": dataset, "limit": limit})["rows"]


def run_samples(workspace: Path, run_id: str) -> list[dict]:
    """The generations an RL run recorded while it trained (step, prompt, response, score), oldest first."""
    samples: list[dict] = []
    for record in run_files.read_jsonl(runs.run_dir_of(workspace, run_id) / "samples.jsonl"):
        if "resumed_from" in record:   # a resume: what was sampled after its checkpoint was redone
            samples = [s for s in samples if s["step"] <= record["resumed_from"]]
        else:
            samples.append(record)
    return samples


def compare(workspace: Path, checkpoints: list[str], prompt: str, settings: dict | None = None) -> list[str]:
    """One answer per checkpoint to the same prompt; LoRA checkpoints of one base in one batched pass."""
    from pipelines.compare import compare as answers
    from pipelines.inference import check_settings
    check_settings(settings)   # before compare merges them into each column's
    return answers(workspace, list(checkpoints or []), prompt, settings or {})


def vote(workspace: Path, dataset: str, prompt: str, answers: list[str], checkpoints: list[str],
         ranking: list[int], settings: dict | None = None, histories: list[list[dict]] | None = None,
         column_settings: list[dict] | None = None) -> dict:
    """Append the preference rows a ranking of answers implies (1 = best, ties equal, 0 = bad) to a dataset.
    settings["system_prompt"], the columns' shared earlier turns and their overrides go into each row."""
    from pipelines.compare import vote as record
    return record(workspace, dataset, prompt, list(answers or []), list(checkpoints or []),
                  [int(r) for r in ranking or []], settings or {}, histories=histories, column_settings=column_settings)


def evaluate(workspace: Path, checkpoints: list[str], prompts: list[str] | str, scorer: str,
             settings: dict | None = None) -> dict:
    """Every prompt (a list, or a dataset name) through every checkpoint, scored: rows, means, win rates. Runs as a
    job (start_job "evaluate") and waits for it."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "evaluate", {"checkpoints": checkpoints, "prompts": prompts, "scorer": scorer,
                                                      "settings": settings or {}})
    return {"rows": results["rows"], **results["summary"]}


def start_job(workspace: Path, kind: str, spec: dict) -> str:
    """Start a long job in a process of its own and return its id; follow it with job_status, stop it with
    cancel_job, read what it found with job_results. kind and spec: "evaluate" {checkpoints, prompts (a list or a
    dataset name), scorer, settings}; "score_dataset" {checkpoint, dataset, limit}; "evaluate_reward" {checkpoint,
    dataset, limit}, the arguments of the endpoints of those names."""
    from pipelines import jobs
    return jobs.start(workspace, kind, spec).name


def job_status(workspace: Path, job_id: str) -> dict:
    """A job's job_id, kind, status (queued, running, completed, failed, cancelled, interrupted), done and total
    rows, eta_s, error, warnings, created_at, started_at, finished_at and spec."""
    from pipelines import jobs
    return jobs.status_of(jobs.job_dir_of(workspace, job_id))


def cancel_job(workspace: Path, job_id: str) -> dict:
    """Stop a queued or running job (its whole process group); returns its job_status, `cancelled` unless it had
    already ended."""
    from pipelines import jobs
    job_dir = jobs.job_dir_of(workspace, job_id)
    jobs.cancel(job_dir)
    return jobs.status_of(job_dir)


def list_jobs(workspace: Path, kind: str = "") -> list[dict]:
    """Every job in the workspace (of `kind`, when given), newest first, each as job_status gives it."""
    from pipelines import jobs
    listed = [jobs.status_of(job_dir) for job_dir in jobs.list_job_dirs(workspace)]
    return [status for status in listed if not kind or status["kind"] == kind]


def job_results(workspace: Path, job_id: str) -> dict:
    """What a job found: job_id, kind, status, rows (those written so far while it runs; a score_dataset job's
    best first once complete), summary (once complete: means and win_rates, or accuracy and margins), warnings and
    files (the results as CSV and JSONL on the server)."""
    from pipelines import jobs
    return jobs.results_of(jobs.job_dir_of(workspace, job_id))


def free_models() -> int:
    """Drop every cached chat and reward model; return how many were freed."""
    from pipelines.inference import free_models as free_cached_models
    return free_cached_models()


def run_probes(workspace: Path, run_id: str) -> dict:
    """The probe prompts' answers at each checkpoint save: {"steps": [...], "rows": [{"prompt", "answers": {step: answer}}]}."""
    from pipelines.probes import probe_grid
    return probe_grid(runs.run_dir_of(workspace, run_id))


def start_road(workspace: Path, language: str = "en", model: str = BUNDLED_MODEL_ID, max_steps: int = 0) -> str:
    """Try the road: SFT → DPO and SFT → reward model → PPO from `model` on the bundled sample of `language`, with
    defaults (max_steps 0) or a shorter look, in its own process; return the road id."""
    from pipelines import road
    road_dir = road.create_road(workspace, language, model, max_steps)
    road.launch_road(road_dir)
    return road_dir.name


def road_status(workspace: Path, road_id: str) -> dict:
    """The road's status, each step's run (status, step, max_steps, ETA) and, as steps complete, the checkpoints to compare."""
    from pipelines import road
    return road.road_status(workspace, road_id)


def stop_road(workspace: Path, road_id: str) -> dict:
    """Stop a road: its current run saves a checkpoint and stops, and no later step starts."""
    from pipelines import road
    return road.stop_road(workspace, road_id)


def continue_road(workspace: Path, road_id: str) -> dict:
    """Walk a stopped, failed or interrupted road again, keeping the steps that completed."""
    from pipelines import road
    return road.continue_road(workspace, road_id)


def list_roads(workspace: Path) -> list[dict]:
    """Every road in the workspace, newest first."""
    from pipelines import road
    return road.list_roads(workspace)
