"""The plain-Python surface of the studio: every UI action and API endpoint is one of these calls.

Arguments and results are plain data (str, dict, list), so the Gradio app, `gradio_client`, the CLI
and tests all use the same functions. Errors a user can cause are raised as StudioError.

The functions marked @endpoint are the public API: studio/app.py registers each under its own name, with its
signature (less `workspace`) and docstring, and the README's table lists them (tests/test_readme_api.py). Their
names, arguments, order and defaults do not change; later issues only add. The rest serve the studio's tabs
(streaming chat and compare, the table columns) and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipelines import run_files, run_queue, runs
from pipelines.config import BUNDLED_MODEL_ID, RunConfig, parse_config_text
from pipelines.errors import StudioError, quote, shorten
from pipelines.messages import Message, has_message, text
from pipelines.stages import get_stage

ENDPOINTS: list = []   # the public API, in the order it is registered and documented


def endpoint(fn):
    """Mark `fn(workspace, ...)` as a public API endpoint named after it."""
    ENDPOINTS.append(fn)
    return fn


def prepare_run(workspace: Path, config_text: str) -> Path:
    """Validate a config against its model and data, then create the run directory (nothing is started).
    What is worth knowing but not wrong (duplicates, rows max_length would cut) goes into its status as warnings."""
    config = parse_config_text(config_text)
    from pipelines import hosting
    hosting.check_run(workspace, config)   # hosted mode: its steps, the user's active runs and disk
    source, warnings = check_startable(workspace, config)
    free = run_files.free_bytes(next(p for p in (Path(workspace), *Path(workspace).parents) if p.exists()))
    if free < run_files.SPARE_BYTES:   # not even a run folder fits: refuse before writing one
        raise StudioError("api.disk_full", free=run_files.megabytes(free))
    if source.kind == "local":  # the training process runs elsewhere (cwd): pin the folder the user meant
        config.model = source.base
    run_dir = runs.create_run(workspace, config, {"warnings": warnings})
    if get_stage(config.stage).takes_reward:   # the rules it was checked with are the rules it trains on
        from pipelines.rl.rewards import keep_reward_file, parse_reward
        settings = getattr(config, config.stage)
        keep_reward_file(parse_reward(settings.reward, workspace, rules=settings.rules), run_dir)
    return run_dir


def check_startable(workspace: Path, config: RunConfig):
    """Everything that can be checked before a process is spent on it: hardware, model, context, data.
    Returns the model source and the data's warnings."""
    from pipelines.data.store import load_dataset, load_stage_rows, stage_rows
    from pipelines.models import best_device, check_generative, resolve_model
    from pipelines.stages.common import check_hardware
    from pipelines.trackers import check_installed

    source = resolve_model(config.model, workspace)
    check_hardware(config, best_device(), source)
    check_installed(config.train.report_to)   # train.report_to: its tracker's package
    check_generative(source)
    kind, data = load_dataset(config.dataset, workspace)
    stage = get_stage(config.stage)
    rows = stage_rows(config.dataset, kind, data.rows, config.stage)
    if config.eval_dataset:
        load_stage_rows(config.eval_dataset, workspace, config.stage)
    if stage.takes_reward:
        from pipelines.rl.rewards import check_reward
        settings = getattr(config, config.stage)
        check_reward(settings.reward, workspace, settings.rules)   # a function file is imported and tried on a sample
        if config.eval_dataset:
            raise StudioError("check.no_eval_for_rl", stage=config.stage.upper())
    stage_warnings = stage.check_start(config, rows) if stage.check_start else []
    from pipelines.models import check_context_length, hidden_size
    model_config = _model_config(source)
    check_context_length(config.train.max_length, model_config)
    width = hidden_size(model_config)
    if config.peft.method != "full" and width and config.peft.r > width:
        raise StudioError("api.rank_above_width", r=config.peft.r, width=width)
    return source, (data.warnings + stage_warnings + _length_warnings(source, kind, data, config.train.max_length)
                    + _memory_warnings(config, model_config))


def _memory_warnings(config: RunConfig, model_config) -> list[Message]:
    """On the CPU, refuse a run whose estimated peak (pipelines/models.estimate_training_memory) is beyond the
    machine's whole memory (a container's limit: pipelines/space.memory); warn when it is beyond what is free now."""
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
    from pipelines.space import memory
    total, free = (value / 1024 ** 3 for value in memory())
    fixes = Message("api.memory_fixes_full" if config.peft.method == "full" else "api.memory_fixes")
    if estimate > total:
        raise StudioError("api.memory_beyond_total", needed=estimate, device=device, total=total, fixes=fixes)
    if estimate > free:
        return [Message("api.memory_beyond_free", needed=estimate, device=device, free=free, fixes=fixes)]
    return []


def _length_warnings(source, kind: str, data, max_length: int) -> list[dict]:
    """Rows the run's max_length would cut, counted with the model's own tokenizer and chat template."""
    from pipelines.data.stats import length_stats
    from pipelines.models import check_chat_template, load_tokenizer

    if kind == "text":   # documents are packed into blocks, never cut, and need no chat template (a base model has none)
        return []
    tokenizer = load_tokenizer(source)
    check_chat_template(tokenizer, source.spec)   # every dataset is normalised to conversations, rendered by it
    return length_stats(kind, data.format, data.rows, tokenizer, max_length)["warning_messages"]   # kept as codes


def _model_config(source):
    from transformers import AutoConfig

    from pipelines.models import trust_remote_code
    try:
        return AutoConfig.from_pretrained(source.base, trust_remote_code=trust_remote_code())
    except OSError as exc:
        raise StudioError("api.no_model_config", model=quote(source.spec), problem=shorten(str(exc))) from None


@endpoint
def list_stages(workspace: Path) -> list[dict]:
    """Every training stage, in road order: stage, data_kind (the rows it trains on), output (chat_model,
    reward_model or datasets), takes_reward, defaults (dataset, train settings), and settings of its own section
    [{name, type, default, help, choices, minimum, maximum}]."""
    from pipelines.config import describe_settings
    from pipelines.stages import all_stages
    return [{"stage": stage.name, "data_kind": stage.data_kind, "output": stage.output,
             "takes_reward": stage.takes_reward, "defaults": stage.defaults,
             "settings": describe_settings(stage.name) if stage.settings else []} for stage in all_stages()]


@endpoint
def start_run(workspace: Path, config: str) -> str:
    """Validate a run config (YAML or JSON text), create the run and queue it: it trains in its own process as soon
    as a place is free (pipelines/run_queue.py); returns the run id."""
    run_dir = prepare_run(workspace, config)
    run_queue.start(run_dir)
    return run_dir.name


@endpoint
def run_status(workspace: Path, run_id: str) -> dict:
    """A run's run_id, status, queue_position, step, max_steps, eta_s, last_metrics, error, checkpoints (steps),
    has_final, warnings, datasets (what a rejection-sampling run saved) and throughput (peak_gflops, dtype, device,
    tokens_per_second)."""
    run_dir = runs.run_dir_of(workspace, run_id)
    run_queue.dispatch(workspace)   # a place freed by a run that died is taken as soon as anyone looks
    status = runs.refresh_status(run_dir)
    said = runs.status_texts(status)   # its error and warnings in the visitor's language
    return {
        "run_id": run_id, "status": status.get("status"), "queue_position": run_queue.queue_position(run_dir, status),
        "step": status.get("step", 0),
        "max_steps": status.get("max_steps", 0), "eta_s": status.get("eta_s"),
        "last_metrics": status.get("last_metrics") or {}, "error": said["error"],
        "checkpoints": run_files.checkpoint_steps(run_dir), "has_final": (run_dir / "final").is_dir(),
        "warnings": said["warnings"] + _live_warnings(run_dir),
        "datasets": status.get("datasets") or {},   # what a rejection-sampling run saved: {"best": ..., "pairs": ...}
        # the measured peak, its precision and the mean tokens/s so far (pipelines/throughput.py); {} before training
        "throughput": status.get("throughput") or {},
    }


def _live_warnings(run_dir: Path) -> list[str]:
    from pipelines.rl.rewards import rule_only
    from pipelines.signals import warning_signs
    try:
        config = runs.load_config(run_dir)
    except StudioError:
        return []
    return warning_signs(config.stage, run_files.read_metrics(run_dir), rule_only(config))


@endpoint
def run_metrics(workspace: Path, run_id: str) -> list[dict]:
    """Every logged step of a run, in step order: step, split and the metrics logged at it."""
    return run_files.read_metrics(runs.run_dir_of(workspace, run_id))


@endpoint
def compare_runs(workspace: Path, run_ids: list[str], align: str = "step") -> dict:
    """2 to 8 runs side by side: align ("step" or "tokens", the tokens trained on, which SFT-like runs log), runs
    (run_id, stage, status, steps, max_steps, tokens), metrics ({metric: {run_id: [[x, value], ...]}} for the
    metrics every run logged), settings ({"train.learning_rate": {run_id: value}} for the config keys that differ)
    and final ({run_id: {metric: last value, best_eval_loss}})."""
    from pipelines.run_compare import compare_runs as compared
    return compared(workspace, run_ids, align)


def run_log(workspace: Path, run_id: str, lines: int = 40) -> str:
    """The last `lines` lines of a run's training log."""
    return run_files.tail(runs.run_dir_of(workspace, run_id) / "train.log", lines)


@endpoint
def stop_run(workspace: Path, run_id: str) -> dict:
    """Cancel a queued run, or ask a training one to save a checkpoint and stop: run_id, status, and a message
    saying which happened."""
    run_dir = runs.run_dir_of(workspace, run_id)
    was = runs.refresh_status(run_dir).get("status")
    status = run_queue.stop(run_dir).get("status")
    if was not in run_files.ACTIVE_STATES:
        state = f"status.{was}"
        message = text("api.nothing_to_stop", run_id=run_id, status=Message(state) if has_message(state) else str(was))
    elif was == "queued" and status == "stopped":
        message = text("api.cancelled_before_start", run_id=run_id)
    else:
        message = text("api.will_stop", run_id=run_id)
    return {"run_id": run_id, "status": status, "message": message}


@endpoint
def resume_run(workspace: Path, run_id: str) -> dict:
    """Queue a stopped, failed or interrupted run to go on from its last complete checkpoint: run_id, status, and a
    message saying from where and when."""
    run_dir = runs.run_dir_of(workspace, run_id)
    status = run_queue.resume(run_dir)
    if status.get("status") == "failed":   # the launch was refused (a full disk): say why
        raise StudioError(runs.error_of(status) or Message("api.not_restarted", run_id=run_id))
    last = run_files.last_checkpoint(run_dir)
    when = Message("api.when_turn" if run_queue.is_waiting(status) else "api.when_now")
    message = (text("api.resumes_from", run_id=run_id, checkpoint=last.name, when=when) if last else
               text("api.resumes_from_kept", run_id=run_id, when=when))
    return {"run_id": run_id, "status": status.get("status"), "message": message}


@endpoint
def list_runs(workspace: Path) -> list[dict]:
    """Every run in the workspace, newest first: run_id, status, stage, model, dataset, step, max_steps and more."""
    run_queue.dispatch(workspace)
    return [runs.summary(run_dir) for run_dir in runs.list_run_dirs(workspace)]


CHECKPOINT_KINDS = ("any", "chat", "reward")


@endpoint
def list_checkpoints(workspace: Path, kind: str = "any") -> list[str]:
    """Model ids: the base models (bundled and those runs started from), then each run's final model and
    checkpoints. kind "chat": only those that generate (no reward model's); "reward": only reward models'."""
    if kind not in CHECKPOINT_KINDS:
        raise StudioError("api.bad_checkpoint_kind", kinds=", ".join(CHECKPOINT_KINDS), kind=quote(kind))
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


@endpoint
def describe_model(workspace: Path, model: str) -> dict:
    """Parameters, dtype, device, context length, chat template and training-memory estimate of a model."""
    from pipelines.models import describe_model as describe
    return describe(model, workspace)


@endpoint
def list_datasets(workspace: Path) -> list[dict]:
    """Datasets a run can use, bundled samples and saved ones: name, kind, format, rows, source."""
    from pipelines.data.store import list_datasets as listing
    return listing(workspace)


@endpoint
def upload_dataset(workspace: Path, file: str, name: str, drop_bad_rows: bool = False,
                   columns: dict | str | None = "", replace: bool = False) -> dict:
    """Check a data file (JSON, JSONL, CSV, TSV, Parquet; through the API, sent with gradio_client.handle_file) and
    save it as a named dataset; returns kind, format, rows, errors [{row, field, message}], warnings, saved.
    columns maps fields to file columns ("output=answer"). An existing dataset of that name is replaced only when
    asked (`replace`): runs may be reading it."""
    from pipelines.data.store import save_upload
    if not file:
        raise StudioError("api.no_file")
    return save_upload(Path(file), name, workspace, drop_bad_rows, columns, replace)


@endpoint
def upload_texts(workspace: Path, files: list[str], name: str, split: str = "file", drop_bad_rows: bool = False,
                 replace: bool = False) -> dict:
    """Check documents for continued pretraining (.txt and .md files, or JSONL, JSON, CSV, Parquet files with a
    text column; several at once, sent with gradio_client.handle_file) and save them as one text dataset. split:
    "file" (a text file is one document) or "blank_lines" (a document per block between blank lines). Returns the
    report of upload_dataset plus files [{file, documents}]."""
    from pipelines.data.text import save_texts
    if not files:
        raise StudioError("api.no_file")
    return save_texts([files] if isinstance(files, str) else list(files), name, workspace, split, drop_bad_rows, replace)


@endpoint
def import_hub_dataset(workspace: Path, repo_id: str, config: str | None, split: str, name: str,
                       max_rows: int = 10_000, drop_bad_rows: bool = False, columns: dict | str | None = "",
                       replace: bool = False) -> dict:
    """Fetch up to max_rows rows of a Hugging Face Hub dataset, check them and save them as a named dataset; the
    same report as upload_dataset."""
    from pipelines.data.hub import import_hub_dataset as fetch_and_save
    return fetch_and_save(repo_id, config, split, name, workspace, max_rows, drop_bad_rows, columns, replace)


@endpoint
def preview_dataset(workspace: Path, name: str, model: str, n: int = 3) -> list[dict]:
    """The first n rows of a dataset rendered through a model's chat template: messages, text, tokens, loss_tokens
    and segments (marked loss where the tokens are trained on)."""
    from pipelines.data.store import dataset_kind, preview
    tokenizer = _tokenizer_for(workspace, model, dataset_kind(name, workspace))
    return preview(name, workspace, tokenizer, max(1, min(int(n), 50)))


@endpoint
def dataset_stats(workspace: Path, name: str, model: str, max_length: int = 512) -> dict:
    """Rows, kind, format, token lengths through a model's chat template, and how many rows and tokens max_length
    would cut. For a text dataset: documents, total_tokens, characters, tokens_per_char (what the model's tokenizer
    spends on the language) and the blocks of max_length tokens the documents pack into; no template."""
    from pipelines.data.stats import length_stats
    from pipelines.data.store import load_dataset
    if not 1 <= int(max_length) <= 1_000_000:
        raise StudioError("api.bad_max_length")
    kind, data = load_dataset(name, workspace)
    stats = length_stats(kind, data.format, data.rows, _tokenizer_for(workspace, model, kind), int(max_length))
    return {"name": name, **stats}


@endpoint
def dataset_table(workspace: Path, name: str) -> dict:
    """A dataset of single-turn rows as an editable table: kind, columns, rows."""
    from pipelines.data.table import table_of
    return table_of(name, workspace)


def table_columns() -> dict[str, list[str]]:
    """The columns of an editable table, by kind of rows (instruction, preference, …)."""
    from pipelines.data.table import TABLE_COLUMNS
    return {kind: list(columns) for kind, columns in TABLE_COLUMNS.items()}


@endpoint
def save_table(workspace: Path, kind: str, rows: list[list], name: str, drop_bad_rows: bool = False,
               replace: bool = False) -> dict:
    """Check rows typed or edited in a table (columns as dataset_table gives them for the kind) and save them as a
    named dataset; the same report as upload_dataset."""
    from pipelines.data.table import save_table as check_and_save
    return check_and_save(kind, rows, name, workspace, drop_bad_rows, replace)


@endpoint
def deduplicate_dataset(workspace: Path, name: str, new_name: str, near: bool = True, threshold: float = 0.8) -> dict:
    """Save a copy of a dataset without exact and (optionally) near duplicates; the original stays as it is."""
    from pipelines.data.tools import deduplicate
    return deduplicate(name, workspace, new_name, near, float(threshold))


@endpoint
def filter_dataset(workspace: Path, name: str, new_name: str, model: str, min_tokens: int = 0,
                   max_tokens: int | None = 512) -> dict:
    """Save a copy of a dataset keeping rows whose token length (model's chat template) is within [min_tokens,
    max_tokens] (no upper bound when max_tokens is 0 or null)."""
    from pipelines.data.tools import filter_by_length
    return filter_by_length(name, workspace, new_name, _template_tokenizer(workspace, model), int(min_tokens or 0),
                            int(max_tokens) if max_tokens else None)


@endpoint
def split_dataset(workspace: Path, name: str, new_name: str, eval_fraction: float = 0.1, seed: int = 42) -> dict:
    """Save <new_name>-train and <new_name>-eval; rows sharing a prompt stay on one side."""
    from pipelines.data.tools import split
    return split(name, workspace, new_name, float(eval_fraction), int(seed))


def _tokenizer_for(workspace: Path, model: str, kind: str):
    """The tokenizer rows of `kind` go through: raw documents need no chat template (a base model has none)."""
    if kind != "text":
        return _template_tokenizer(workspace, model)
    from pipelines.models import load_tokenizer, resolve_model
    return load_tokenizer(resolve_model(model, workspace))


def _template_tokenizer(workspace: Path, model: str):
    """The tokenizer of `model`, which must have a chat template to render rows with."""
    from pipelines.models import check_chat_template, load_tokenizer, resolve_model
    tokenizer = load_tokenizer(resolve_model(model, workspace))
    check_chat_template(tokenizer, model)
    return tokenizer


@endpoint
def score(workspace: Path, reward_checkpoint: str, prompt: str, responses: list[str]) -> list[float]:
    """The reward a reward-run checkpoint gives each response to the prompt (text is re-tokenised by the reward
    model), one number per response."""
    from pipelines.scoring import score as reward_scores
    return reward_scores(workspace, reward_checkpoint, prompt, list(responses or []))


@endpoint
def evaluate_reward(workspace: Path, reward_checkpoint: str, dataset: str, limit: int = 500) -> dict:
    """Held-out accuracy, margins and length correlation of a reward checkpoint on a preference dataset (at most
    5000 pairs): checkpoint, dataset, pairs, accuracy, margins, mean_margin, length_correlation, warnings (one when
    the pairs are the reward run's own training data). Runs as a job (start_job "evaluate_reward") and waits for it."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "evaluate_reward", {"checkpoint": reward_checkpoint, "dataset": dataset,
                                                             "limit": limit})
    return {**results["summary"], "warnings": results["warnings"]}


@endpoint
def score_dataset(workspace: Path, reward_checkpoint: str, dataset: str, limit: int = 1000) -> list[dict]:
    """Every answer of a dataset (at most 10000 rows) with the reward a reward checkpoint gives it, best first:
    prompt, answer, side, reward. Runs as a job (start_job "score_dataset") and waits for it."""
    from pipelines import jobs
    spec = {"checkpoint": reward_checkpoint, "dataset": dataset, "limit": limit}
    return jobs.run_to_end(workspace, "score_dataset", spec)["rows"]


@endpoint
def run_samples(workspace: Path, run_id: str) -> list[dict]:
    """The generations an RL run recorded while it trained (step, prompt, response, score), oldest first."""
    samples: list[dict] = []
    for record in run_files.read_jsonl(runs.run_dir_of(workspace, run_id) / "samples.jsonl"):
        if "resumed_from" in record:   # a resume: what was sampled after its checkpoint was redone
            samples = [s for s in samples if s["step"] <= record["resumed_from"]]
        else:
            samples.append(record)
    return samples


def chat_stream(workspace: Path, checkpoint: str, message: str, history: list[dict] | None = None,
                settings: dict | None = None) -> Iterator:
    """chat's reply as it grows: each a pipelines.inference.Reply, its text and, on the last, whether generation
    stopped at max_new_tokens (cut) instead of at the end of the turn."""
    from pipelines.inference import chat_stream as replies
    return replies(workspace, checkpoint, message, history, settings)


def plain_turns(history: list | None) -> list[dict]:
    """A conversation as the browser sends it back (content may be a list of parts) as plain {role, content} turns
    of the user and the assistant: what chat, compare and a vote take it as."""
    from pipelines.inference import plain_turns as turns
    return turns(history)


@endpoint
def chat(workspace: Path, checkpoint: str, message: str, history: list[dict], settings: dict) -> str:
    """One chat reply from a checkpoint; history is a list of {role, content}; settings: max_new_tokens,
    temperature, top_p, system_prompt, seed."""
    from pipelines.inference import chat as reply
    return reply(workspace, checkpoint, message, history, settings)


def compare_stream(workspace: Path, checkpoints: list[str], prompt: str, settings: dict | None = None,
                   histories: list[list[dict]] | None = None, column_settings: list[dict] | None = None) -> Iterator:
    """compare's answers as they grow, one pipelines.inference.Reply per column (its text, and whether it was cut
    at max_new_tokens); histories are each column's earlier turns, column_settings its overrides of settings."""
    from pipelines.compare import compare_stream as answers
    return answers(workspace, list(checkpoints or []), prompt, settings, histories, column_settings)


def compare_notice(workspace: Path, checkpoints: list[str]) -> str:
    """One sentence when these checkpoints' bases do not fit in the model memory together, else ""."""
    from pipelines.compare import compare_notice as notice
    return notice(workspace, list(checkpoints or []))


@endpoint
def compare(workspace: Path, checkpoints: list[str], prompt: str, settings: dict | None = None) -> list[str]:
    """One answer per checkpoint to the same prompt (LoRA checkpoints of one base in one batched pass); settings as
    chat's."""
    from pipelines.compare import compare as answers
    return answers(workspace, list(checkpoints or []), prompt, settings or {})


@endpoint
def next_tokens(workspace: Path, checkpoint: str, text: str, top_k: int = 5) -> dict:
    """What a model expected at every position of a text: per token its probability, surprisal (bits), rank and the
    top_k tokens it expected there; `next` after the last token; the text's perplexity."""
    from pipelines.lens import next_tokens as lens
    return lens(workspace, checkpoint, text, top_k)


@endpoint
def compare_next_tokens(workspace: Path, checkpoints: list[str], text: str, top_k: int = 5) -> dict:
    """next_tokens for 2 to 4 checkpoints of one tokenizer side by side, with `delta` per token: how many bits more
    the last checkpoint expects it than the first."""
    from pipelines.lens import compare_next_tokens as lens
    return lens(workspace, list(checkpoints or []), text, top_k)


@endpoint
def pair_logratios(workspace: Path, policy: str, reference: str, prompt: str, chosen: str, rejected: str,
                   beta: float = 0.1) -> dict:
    """What DPO trains on, per answer token: the policy's log-prob minus the reference's, for a chosen and a
    rejected answer, with their sums, the margin (beta × difference) and the DPO loss of the pair."""
    from pipelines.lens import pair_logratios as lens
    return lens(workspace, policy, reference, prompt, chosen, rejected, beta)


@endpoint
def sample_step(workspace: Path, checkpoint: str, prompt: str, generated_ids: list[int] | None = None,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                chat: bool = True, show: int = 10) -> dict:
    """One token of generation, shown: the most likely candidates with their raw probability, after temperature,
    cut by top_k or top_p or kept, and renormalised; the token picked and generated_ids to continue from."""
    from pipelines.lens import sample_step as lens
    return lens(workspace, checkpoint, prompt, generated_ids, temperature, top_k, top_p, seed, chat, show)


@endpoint
def vote(workspace: Path, dataset: str, prompt: str, answers: list[str], checkpoints: list[str],
         ranking: list[int], settings: dict | None = None, histories: list[list[dict]] | None = None,
         column_settings: list[dict] | None = None) -> dict:
    """Append the preference rows a ranking implies (rank per answer: 1 = best, equal = tie, 0 = bad) to a dataset:
    dataset, added_rows, rows, votes, skipped_empty, earlier_turns_differ, why_none, round. Every round, ties too, is
    one line of the dataset's votes.jsonl (the leaderboard's battles); a round already voted is refused. settings:
    those compare was given (their system_prompt goes into each row's prompt); histories: each column's earlier turns
    (shared ones go into the prompt); column_settings: each column's overrides."""
    from pipelines.compare import vote as record
    return record(workspace, dataset, prompt, list(answers or []), list(checkpoints or []),
                  [int(r) for r in ranking or []], settings or {}, histories=histories, column_settings=column_settings)


@endpoint
def leaderboard(workspace: Path, datasets: list[str]) -> dict:
    """A Bradley–Terry leaderboard of the votes in 1–20 vote datasets (a tie counts as half a win each), on an
    Elo-like scale with the most-voted base model at 1000: ratings (best first: checkpoint, rating, low, high as the
    bootstrap 95% interval, battles, wins, ties, losses), win_rates {a: {b: share}}, battles {a: {b: count}}, votes
    (rounds), anchor, ties, length_bias (does the longer answer win more than its share?)."""
    from pipelines.leaderboard import leaderboard as board
    return board(workspace, [datasets] if isinstance(datasets, str) else list(datasets or []))


@endpoint
def evaluate(workspace: Path, checkpoints: list[str], prompts: list[str] | str, scorer: str,
             settings: dict | None = None, rules: list | None = None, background: bool = False, judge: str = "",
             reference: str = "", criteria: str = "") -> dict:
    """Every prompt (a list, or a dataset name) through every checkpoint, each answer scored (reward checkpoint
    and/or rule file, or "", plus declarative rules as in a run's config): rows, means, win_rates, prompts, scorer.
    Runs as a job (start_job "evaluate") and waits; with background true it returns {"job_id"} at once (follow it
    with job_status, read it with job_results). With a judge (as the judge endpoint takes it) and a reference (one
    of the checkpoints), each other checkpoint's answer is judged against the reference's in both orders: rows gain
    `judge` (win, loss, tie) and the result `judge` {judge, reference, results: {checkpoint: {wins, ties, losses,
    win_rate}}}, a tie counting half."""
    from pipelines import jobs
    spec = {"checkpoints": checkpoints, "prompts": prompts, "scorer": scorer, "rules": rules or [],
            "settings": settings or {}, "judge": judge, "reference": reference, "criteria": criteria}
    if background:
        return {"job_id": jobs.start(workspace, "evaluate", spec).name}
    results = jobs.run_to_end(workspace, "evaluate", spec)
    return {"rows": results["rows"], **results["summary"]}


@endpoint
def evaluate_loss(workspace: Path, checkpoints: list[str], dataset: str, limit: int = 500) -> dict:
    """Held-out loss per token and perplexity of each checkpoint on a dataset's first `limit` rows (at most 2000):
    instruction rows with the loss on the assistant tokens (as SFT trains), text rows on every token (as
    pretraining). Returns dataset, kind, rows, max_length, loss_on, checkpoints ({checkpoint: {loss, perplexity,
    tokens, rows}}) and warnings. Runs as a job (start_job "evaluate_loss") and waits for it."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "evaluate_loss", {"checkpoints": checkpoints, "dataset": dataset,
                                                           "limit": limit})
    return {**results["summary"], "warnings": results["warnings"]}


@endpoint
def start_job(workspace: Path, kind: str, spec: dict) -> str:
    """Start a long job in a process of its own and return its id; follow it with job_status, stop it with
    cancel_job, read what it found with job_results. kind and spec: "evaluate" {checkpoints, prompts (a list or a
    dataset name), scorer, settings}; "score_dataset" {checkpoint, dataset, limit}; "evaluate_reward" {checkpoint,
    dataset, limit}; "evaluate_loss" {checkpoints, dataset, limit, max_length}, the arguments of the endpoints of
    those names."""
    from pipelines import jobs
    return jobs.start(workspace, kind, spec).name


@endpoint
def job_status(workspace: Path, job_id: str) -> dict:
    """A job's job_id, kind, status (queued, running, completed, failed, cancelled, interrupted), done and total
    rows, eta_s, error, warnings, created_at, started_at, finished_at and spec."""
    from pipelines import jobs
    return jobs.status_of(jobs.job_dir_of(workspace, job_id))


@endpoint
def cancel_job(workspace: Path, job_id: str) -> dict:
    """Stop a queued or running job (its whole process group); returns its job_status, `cancelled` unless it had
    already ended."""
    from pipelines import jobs
    job_dir = jobs.job_dir_of(workspace, job_id)
    jobs.cancel(job_dir)
    return jobs.status_of(job_dir)


@endpoint
def list_jobs(workspace: Path, kind: str = "") -> list[dict]:
    """Every job in the workspace (of `kind`, when given), newest first, each as job_status gives it."""
    from pipelines import jobs
    listed = [jobs.status_of(job_dir) for job_dir in jobs.list_job_dirs(workspace)]
    return [status for status in listed if not kind or status["kind"] == kind]


@endpoint
def job_results(workspace: Path, job_id: str) -> dict:
    """What a job found: job_id, kind, status, rows (those written so far while it runs; a score_dataset job's
    best first once complete), summary (once complete: means and win_rates, or accuracy and margins), warnings and
    files (the results as CSV and JSONL on the server)."""
    from pipelines import jobs
    return jobs.results_of(jobs.job_dir_of(workspace, job_id))


@endpoint
def export_model(workspace: Path, checkpoint: str, format: str = "merged", options: dict | None = None) -> dict:
    """Export a checkpoint to workspace/exports/<name>, checked by loading it back (a job; this waits for it).
    format: "merged" (its adapters merged into the base, or a full fine-tune as it is), "adapter" (the LoRA adapter
    alone), or "gguf-f16", "gguf-q8_0", "gguf-bf16", "gguf-f32" (and "gguf-q4_K_M" with llama-cpp-python) — one
    GGUF file with an Ollama Modelfile. options: dtype (float32, bfloat16, float16: a merged model's), name.
    Returns path (relative to the workspace), files, bytes, format, dtype and verified (same_replies, prompts,
    token_agreement, tolerance, ok)."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "export", {"checkpoint": checkpoint, "format": format, "options": options})
    return {**results["summary"], "warnings": results["warnings"]}


@endpoint
def push_to_hub(workspace: Path, path: str, repo_id: str, private: bool = True, token: str = "") -> dict:
    """Push an export folder to the Hugging Face Hub repo repo_id (owner/name), new or existing, private unless
    private is false, every file in one commit (a job; this waits for it). path is relative to the workspace:
    exports/<name> (an export_model folder) goes to a model repo, exports/datasets/<name> (an export_dataset folder)
    to a dataset repo. token: one with write access, used for this push only and never stored; empty: the server's
    HF_TOKEN or `hf auth login` (never on a shared server). Returns url, repo_id, repo_type, files, bytes, private."""
    from pipelines import jobs
    from pipelines.hub_push import TOKEN_ENV
    spec = {"path": path, "repo_id": repo_id, "private": private}
    return jobs.run_to_end(workspace, "push_to_hub", spec, secrets={TOKEN_ENV: token or ""})["summary"]


def start_push(workspace: Path, path: str, repo_id: str, private: bool = True, token: str = "") -> str:
    """push_to_hub as a job to follow (the Data and Export tabs): its id; the token reaches the job's process only."""
    from pipelines import jobs
    from pipelines.hub_push import TOKEN_ENV
    spec = {"path": path, "repo_id": repo_id, "private": private}
    return jobs.start(workspace, "push_to_hub", spec, secrets={TOKEN_ENV: token or ""}).name


@endpoint
def export_dataset(workspace: Path, name: str, format: str = "jsonl") -> str:
    """A dataset as one file in TRL's column names (messages; prompt, chosen, rejected; prompt, completion, label;
    prompt), format "jsonl" or "parquet"; the caller receives the file. It is kept with a dataset card in
    workspace/exports/datasets/<name>/, the folder push_to_hub takes as a dataset repo."""
    from pipelines.data.export import export_dataset as write
    return str(write(workspace, name, format))


def list_exports(workspace: Path) -> list[dict]:
    """The finished exports, newest first (the Export tab's list)."""
    from pipelines.export import list_exports as listed
    return listed(workspace)


def free_models(workspace: Path | None = None) -> int:
    """Drop the cached chat and reward models loaded from `workspace`'s runs (None: every one); return how many
    were freed."""
    from pipelines.inference import free_models as free_cached_models
    return free_cached_models(Path(workspace).resolve() if workspace else None)


@endpoint
def run_probes(workspace: Path, run_id: str) -> dict:
    """Probe prompts' greedy answers at each checkpoint save of a run: {"steps": [...], "rows": [{"prompt",
    "answers": {step: answer}}]}."""
    from pipelines.probes import probe_grid
    return probe_grid(runs.run_dir_of(workspace, run_id))


@endpoint
def start_road(workspace: Path, language: str = "en", model: str = BUNDLED_MODEL_ID, max_steps: int = 0) -> str:
    """Try the road: SFT → DPO and SFT → reward model → PPO from model on the bundled sample of language (en or
    ko), each stage with its defaults (max_steps 0) or at most max_steps steps, in its own process; returns the
    road id."""
    from pipelines import road
    road_dir = road.create_road(workspace, language, model, max_steps)
    road.launch_road(road_dir)
    return road_dir.name


@endpoint
def road_status(workspace: Path, road_id: str) -> dict:
    """A road's status, error, each step's run (step, stage, run_id, status, progress, max_steps, eta_s), its
    held-out prompts and the checkpoints to compare (base, sft, dpo, ppo as they complete)."""
    from pipelines import road
    return road.road_status(workspace, road_id)


@endpoint
def stop_road(workspace: Path, road_id: str) -> dict:
    """Stop a road: its current run saves a checkpoint and stops, and no later step starts."""
    from pipelines import road
    return road.stop_road(workspace, road_id)


@endpoint
def continue_road(workspace: Path, road_id: str) -> dict:
    """Walk a stopped, failed or interrupted road again, keeping the steps that completed."""
    from pipelines import road
    return road.continue_road(workspace, road_id)


@endpoint
def list_roads(workspace: Path) -> list[dict]:
    """Every road in the workspace, newest first: road_id, language, status, created_at."""
    from pipelines import road
    return road.list_roads(workspace)


@endpoint
def judge(workspace: Path, judge: str, prompt: str, answers: list[str], criteria: str = "", template: str = "",
          mode: str = "single") -> dict:
    """An AI judge's verdict on two answers to a prompt, asked in both orders: winner ("a", "b", or null when the
    orders disagree or tie), orders ([{first, p_first}] for a first, then b first), agree, p_a and judge. judge: a
    chat checkpoint or model, a reward checkpoint, a rules .py file, or declarative rules written "rules:
    [{max_words: 80}]". A chat judge's mode: "single" grades each answer alone (template with {criteria} {prompt}
    {answer}; no position bias), "pairwise" shows both ({answer_1} {answer_2}); template "" is the mode's default in
    the visitor's language."""
    from pipelines.judge import judge_answers
    return judge_answers(workspace, judge, prompt, answers, criteria, template, mode=mode)


@endpoint
def label_with_judge(workspace: Path, checkpoint: str, prompts: list[str] | str, judge: str, criteria: str = "",
                     n: int = 2, name: str = "", template: str = "", mode: str = "single") -> str:
    """Sample n answers (2–4) per prompt (a list, or a dataset name) from checkpoint, let the judge compare every
    pair in both orders (mode as judge's), and save the pairs it decided as the preference dataset name ("" a free one), ready for DPO
    and reward training; pairs whose orders disagree are dropped and counted. A job: returns its id (job_status,
    cancel_job, job_results; its summary says dataset, pairs_judged, verdicts_kept, agreement_rate, seconds)."""
    from pipelines import jobs
    spec = {"checkpoint": checkpoint, "prompts": prompts, "judge": judge, "criteria": criteria, "n": n, "name": name,
            "template": template, "mode": mode}
    return jobs.start(workspace, "label_with_judge", spec).name


@endpoint
def judge_agreement(workspace: Path, dataset: str, judge: str, criteria: str = "", mode: str = "single") -> dict:
    """How far a judge agrees with people: its verdict on every pair of a votes (preference) dataset, each shown in
    a seeded random order, against the people's choice. Returns pairs, verdicts, coverage (the share with a
    verdict), agreement (over those), kappa (Cohen's), seconds and rows. A job that this waits for; start_job
    "judge_agreement" {dataset, judge, criteria, mode} follows it instead."""
    from pipelines import jobs
    results = jobs.run_to_end(workspace, "judge_agreement", {"dataset": dataset, "judge": judge, "criteria": criteria,
                                                                  "mode": mode})
    return {**results["summary"], "rows": results["rows"]}
