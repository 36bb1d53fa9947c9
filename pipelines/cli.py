"""The headless command line: the same runs, in the same layout, without the UI.

    python -m pipelines train config.yaml            validate, create a run, train in the foreground
    python -m pipelines train workspace/runs/<id>    train an existing run directory (what the app launches)
    python -m pipelines create config.yaml           validate and create a run directory without training
                                                     (then: accelerate launch -m pipelines train <run_dir>)
    python -m pipelines resume <run_id>              continue a stopped or interrupted run from its last checkpoint
    python -m pipelines runs                         list runs
    python -m pipelines compare-runs <run>...        2–8 runs side by side: the settings that differ, final metrics
    python -m pipelines leaderboard <dataset>...     the leaderboard of Compare's votes (Bradley–Terry, 95% intervals)
    python -m pipelines stop <run_id>                ask a running run to save a checkpoint and stop
    python -m pipelines prepare-model                fetch and convert the bundled model once
    python -m pipelines stages [stage]               the stages, or one stage's settings with their help
    python -m pipelines job workspace/jobs/<id>      do a job the app started (evaluate, score a dataset)
    python -m pipelines export <checkpoint>          export a checkpoint under exports/, checked by loading it
                                                     back (--format merged | adapter | gguf-f16 | gguf-q8_0 …)
    python -m pipelines export-dataset <name>        a dataset in TRL's columns with a dataset card, under
                                                     exports/datasets/<name>/ (--format jsonl | parquet)
    python -m pipelines push <path> <repo_id>        push an export folder to the Hugging Face Hub, private unless
                                                     --public; the token comes from HF_TOKEN or `hf auth login`
    python -m pipelines add-texts <files…> --name N  save .txt/.md files (or JSONL/CSV/Parquet with a text column) as
                                                     one text dataset for continued pretraining (--split blank_lines)
    python -m pipelines lens <checkpoint> <text>     what the model expected at every token (--compare another
                                                     checkpoint, --top-k 5, --json)
    python -m pipelines judge-label <ckpt> <prompts> sample answers, let a judge pick (--judge, --criteria, --n,
                                                     --name), save a preference dataset; follow the job
    python -m pipelines road [--language ko]         try the road: SFT → DPO and SFT → reward model → PPO on a
                                                     bundled sample with defaults, then the answers side by side
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from functools import partial
from pathlib import Path

from pipelines.config import BUNDLED_MODEL_ID, stage_names
from pipelines.data.files import SPLITS
from pipelines.errors import StudioError
from pipelines.lens import MAX_LENS_CHARS, MAX_TOP_K
from pipelines.road import LANGUAGES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="Alignment Studio, headless.")
    parser.add_argument("--workspace", default="workspace", help="Workspace folder (default ./workspace).")
    # --workspace is accepted after the command too (`python -m pipelines runs --workspace w`).
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--workspace", default=argparse.SUPPRESS, help="Workspace folder (default ./workspace).")
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = partial(commands.add_parser, parents=[shared])
    train = add_command("train", help="Train from a config file or an existing run directory.")
    train.add_argument("target", help="config.yaml (or .json) to start a new run, or a run directory.")
    train.add_argument("--resume", action="store_true", help="Continue from the run's last complete checkpoint.")
    create = add_command("create", help="Validate a config and create its run directory; print the path.")
    create.add_argument("config")
    resume = add_command("resume", help="Resume a stopped or interrupted run in the foreground.")
    resume.add_argument("run_id")
    add_command("runs", help="List runs as JSON lines.")
    compare_runs = add_command("compare-runs", help="Print 2 to 8 runs side by side: the settings that differ "
                               "between them and their final metrics (--json: every aligned curve too).")
    compare_runs.add_argument("run_ids", nargs="+", help="The run ids (as `runs` lists them).")
    compare_runs.add_argument("--align", default="step", choices=("step", "tokens"),
                              help="x of the curves in --json: step (default) or tokens trained on.")
    compare_runs.add_argument("--json", action="store_true", help="Print the API's result as JSON.")
    leaderboard = add_command("leaderboard", help="The Bradley–Terry leaderboard of Compare's votes in one or more "
                              "datasets, with bootstrap 95%% intervals (a tie counts as half a win each).")
    leaderboard.add_argument("datasets", nargs="+", help="Vote datasets (as list_datasets gives them).")
    leaderboard.add_argument("--json", action="store_true", help="Print the API's result as JSON.")
    stop = add_command("stop", help="Ask a run to save a checkpoint and stop.")
    stop.add_argument("run_id")
    add_command("prepare-model", help="Download and convert the bundled model.")
    job = add_command("job", help="Do a job the app or the API started (pipelines/jobs.py), in this process.")
    job.add_argument("job_dir")
    export = add_command("export", help="Export a checkpoint to the workspace's exports/ folder (merged weights, the "
                         "LoRA adapter alone, or GGUF with an Ollama Modelfile), checked by loading it back; print the "
                         "result as JSON.")
    export.add_argument("checkpoint", help="A run's checkpoint id (my-run/final), or any chat model.")
    export.add_argument("--format", default="merged", help="merged (default), adapter, gguf-f16, gguf-q8_0, gguf-bf16, "
                        "gguf-f32, or gguf-q4_K_M where llama-cpp-python is installed.")
    export.add_argument("--dtype", default="float32", help="A merged model's dtype: float32 (default), bfloat16, float16.")
    export.add_argument("--name", help="The export folder's name (default from the checkpoint and format).")
    export_dataset = add_command("export-dataset", help="Write a dataset in TRL's column names, with a dataset card, "
                                 "to the workspace's exports/datasets/<name>/; print the file's path.")
    export_dataset.add_argument("name", help="A dataset name (as list_datasets gives them).")
    export_dataset.add_argument("--format", default="jsonl", choices=("jsonl", "parquet"), help="jsonl (default) or parquet.")
    # No --token: a command line is visible to every user of the machine (ps); the token comes from the environment.
    push = add_command("push", help="Push an export folder to a Hugging Face Hub repo, new or existing, every file in "
                       "one commit; the token comes from HF_TOKEN or `hf auth login`. Print the result as JSON.")
    push.add_argument("path", help="The export folder, relative to the workspace: exports/<name> (a model repo) or "
                      "exports/datasets/<name> (a dataset repo).")
    push.add_argument("repo_id", help="The Hub repo: your-name/repo-name.")
    push.add_argument("--public", action="store_true", help="Make a new repo public (default: private).")
    add_texts = add_command("add-texts", help="Save text files (.txt, .md, or JSONL/JSON/CSV/Parquet with a text column) "
                            "as one text dataset for continued pretraining; print the report as JSON.")
    add_texts.add_argument("files", nargs="+", help="The files; a folder stands for the files in it.")
    add_texts.add_argument("--name", required=True, help="The dataset's name.")
    add_texts.add_argument("--split", default="file", choices=SPLITS,
                           help="file (default): a text file is one document; blank_lines: one per block between blank lines.")
    add_texts.add_argument("--drop-bad-rows", action="store_true", help="Save the good documents and leave out bad ones.")
    add_texts.add_argument("--replace", action="store_true", help="Replace a dataset of the same name.")
    lens = add_command("lens", help="What a model expected at every token of a text: probability, surprisal in bits, "
                       "and its top guesses there.")
    lens.add_argument("checkpoint", help="A model or a run's checkpoint (my-run/final).")
    lens.add_argument("text", help=f"The text (at most {MAX_LENS_CHARS:,} characters).")
    lens.add_argument("--compare", nargs="+", default=[], help="Checkpoints of the same tokenizer to show beside it.")
    lens.add_argument("--top-k", type=int, default=5, help=f"How many guesses per position (1–{MAX_TOP_K}, default 5).")
    lens.add_argument("--json", action="store_true", help="Print the API's result as JSON instead of a table.")
    stages = add_command("stages", help="List the training stages (" + ", ".join(stage_names()) + "), or the "
                         "settings of one, with their defaults, bounds and help.")
    stages.add_argument("stage", nargs="?", choices=stage_names(), help="The stage whose settings to show.")
    road = add_command("road", help="Try the road: SFT → DPO and SFT → reward model → PPO on a bundled sample, "
                       "with defaults; then the base, SFT, DPO and PPO answers side by side.")
    road.add_argument("target", nargs="?", help="A road directory to walk (what the app launches); omit it to start a new road.")
    road.add_argument("--language", choices=LANGUAGES, default="en", help="Which bundled samples (default en).")
    road.add_argument("--model", default=BUNDLED_MODEL_ID, help="The model the road starts from (default the bundled one).")
    road.add_argument("--max-steps", type=int, default=0, help="At most this many steps per stage, for a quick look; "
                      "0 (default) keeps each stage's own.")
    judge_label = add_command("judge-label", help="RLAIF: sample n answers per prompt from a checkpoint, let a judge "
                              "compare every pair in both orders, save the decided pairs as a preference dataset (for "
                              "DPO or reward training); follow the job, then print its summary as JSON.")
    judge_label.add_argument("checkpoint", help="The checkpoint that answers (my-run/final, or any chat model).")
    judge_label.add_argument("prompts", help="A dataset whose last user turns are the prompts (prompts-en-sample).")
    judge_label.add_argument("--judge", default=BUNDLED_MODEL_ID, help="A chat model or checkpoint, a reward "
                             "checkpoint, a rules .py file, or \"rules: [{max_words: 80}]\" (default the bundled model).")
    judge_label.add_argument("--criteria", default="", help="What makes an answer better, in the judge's prompt.")
    judge_label.add_argument("--n", type=int, default=2, help="Answers per prompt, 2–4 (default 2: one pair each).")
    judge_label.add_argument("--name", default="", help="The new dataset's name (default a free judged-… name).")
    judge_label.add_argument("--mode", default="single", choices=("single", "pairwise"),
                             help="A chat judge grades each answer alone (single, default) or both in both orders (pairwise).")
    args = parser.parse_args(argv)
    workspace = Path(args.workspace).resolve()
    try:
        return _dispatch(args, workspace)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args, workspace: Path) -> int:
    from pipelines import api

    if args.command == "train":
        target = Path(args.target)
        if target.is_dir() and (target / "config.yaml").is_file():
            run_dir = target
        elif target.is_file() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise StudioError("cli.create_first")
        elif target.is_file():
            run_dir = api.prepare_run(workspace, target.read_text(encoding="utf-8"))
            print(f"run {run_dir.name} in {run_dir}", flush=True)
        else:
            raise StudioError("cli.bad_target", target=str(args.target))
        return _train(run_dir, args.resume)
    if args.command == "create":
        print(api.prepare_run(workspace, Path(args.config).read_text(encoding="utf-8")))
        return 0
    if args.command == "resume":
        from pipelines import runs
        run_dir = runs.run_dir_of(workspace, args.run_id)
        runs.check_resumable(run_dir)   # as the API's resume: not while active, never a completed run
        return _train(run_dir, resume=True)
    if args.command == "runs":
        for row in api.list_runs(workspace):
            print(json.dumps(row))
        return 0
    if args.command == "compare-runs":
        from pipelines.run_compare import report_lines
        result = api.compare_runs(workspace, args.run_ids, args.align)
        print(json.dumps(result, ensure_ascii=False) if args.json else "\n".join(report_lines(result)))
        return 0
    if args.command == "leaderboard":
        from pipelines.leaderboard import board_lines
        result = api.leaderboard(workspace, args.datasets)
        print(json.dumps(result, ensure_ascii=False) if args.json else "\n".join(board_lines(result, args.datasets)))
        return 0
    if args.command == "stop":
        print(json.dumps(api.stop_run(workspace, args.run_id)))
        return 0
    if args.command == "road":
        return _road(workspace, args.target, args.language, args.model, args.max_steps)
    if args.command == "stages":
        _print_stages(args.stage)
        return 0
    if args.command == "export":
        print(json.dumps(api.export_model(workspace, args.checkpoint, args.format,
                                          {"dtype": args.dtype, "name": args.name}), indent=1, ensure_ascii=False))
        return 0
    if args.command == "export-dataset":
        print(api.export_dataset(workspace, args.name, args.format))
        return 0
    if args.command == "push":
        print(json.dumps(api.push_to_hub(workspace, args.path, args.repo_id, not args.public,
                                         os.environ.get("HF_TOKEN", "")), indent=1, ensure_ascii=False))
        return 0
    if args.command == "add-texts":
        files = [str(f) for path in map(Path, args.files) for f in (sorted(p for p in path.iterdir() if p.is_file())
                                                                     if path.is_dir() else [path])]
        print(json.dumps(api.upload_texts(workspace, files, args.name, args.split, args.drop_bad_rows, args.replace),
                         indent=1, ensure_ascii=False))
        return 0
    if args.command == "lens":
        return _lens(workspace, args.checkpoint, args.compare, args.text, args.top_k, args.json)
    if args.command == "judge-label":
        job_id = api.label_with_judge(workspace, args.checkpoint, args.prompts, args.judge, args.criteria, args.n, args.name,
                                      mode=args.mode)
        return _follow_job(workspace, job_id)
    if args.command == "job":
        from pipelines.jobs import work
        return work(Path(args.job_dir))
    if args.command == "prepare-model":
        from pipelines.bundled import bundled_model_dir
        print(bundled_model_dir())
        return 0
    return 2


def _follow_job(workspace: Path, job_id: str, poll: float = 2.0) -> int:
    """Print a job's progress as it changes, then its summary as JSON; Ctrl-C cancels it."""
    import time

    from pipelines import api

    print(f"job {job_id}", flush=True)
    shown = None
    try:
        while (status := api.job_status(workspace, job_id))["status"] in ("queued", "running"):
            line = f"{status['status']} {status['done']}/{status['total'] or '?'}" + (
                f", {status['eta_s']:.0f} s left" if status.get("eta_s") is not None else "")
            if line != shown:
                print(line, flush=True)
                shown = line
            time.sleep(poll)
    except KeyboardInterrupt:
        api.cancel_job(workspace, job_id)
        print("cancelled", flush=True)
        return 1
    results = api.job_results(workspace, job_id)
    if status["status"] != "completed":
        print(f"job {status['status']}: {status.get('error') or ''}", file=sys.stderr)
        return 1
    print(json.dumps({**results["summary"], "warnings": results["warnings"]}, indent=1, ensure_ascii=False))
    return 0


def _print_stages(name: str | None) -> None:
    """One line per stage, or the settings of one stage (its own section, then the train defaults it changes)."""
    from pipelines.config import describe_settings
    from pipelines.stages import all_stages, get_stage

    if not name:
        for stage in all_stages():
            reward = ", scored by a reward" if stage.takes_reward else ""
            makes = {"chat_model": "a chat model", "reward_model": "a reward model"}.get(stage.output, stage.output)
            print(f"{stage.name:20} trains on {stage.data_kind} rows, makes {makes}{reward}")
        return
    stage = get_stage(name)
    print(f"{name}: trains on {stage.data_kind} rows; defaults: dataset {stage.defaults['dataset']}, "
          + ", ".join(f"train.{k} {v}" for k, v in stage.defaults["train"].items()))
    for setting in describe_settings(name) if stage.settings else []:
        bounds = (f" [{setting['minimum']}, {setting['maximum']}]" if setting["maximum"] is not None else
                  f" ({', '.join(setting['choices'])})" if setting["choices"] else "")
        print(f"  {name}.{setting['name']} = {setting['default']!r}{bounds}\n      {setting['help']}")


def _lens(workspace: Path, checkpoint: str, others: list[str], text: str, top_k: int, as_json: bool) -> int:
    """One line per token: the token, then per checkpoint its probability, surprisal and top guesses there."""
    from pipelines import api

    if others:
        result = api.compare_next_tokens(workspace, [checkpoint, *others], text, top_k)
        tokens = result["tokens"]
    else:
        result = api.next_tokens(workspace, checkpoint, text, top_k)
        tokens = [{**t, "probs": [t["prob"]], "surprisals": [t["surprisal"]], "tops": [t["top"]]} for t in result["tokens"]]
    if as_json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    names = [checkpoint, *others]
    print("token".ljust(16) + "".join(f"| {name[-42:]:42} " for name in names))
    for token in tokens:
        cells = []
        for prob, bits, top in zip(token["probs"], token["surprisals"], token["tops"]):
            guesses = " ".join(repr(guess["token"]) for guess in top[:3])
            cells.append("| " + ("-".ljust(42) if prob is None else f"{prob:6.3f} {bits:5.1f} bits  {guesses}"[:42].ljust(42)) + " ")
        print(repr(token["token"])[:15].ljust(16) + "".join(cells))
    perplexities = result.get("perplexities", [result.get("perplexity")])
    print("perplexity: " + ", ".join(f"{name} {value:.2f}" if value is not None else f"{name} -"
                                     for name, value in zip(names, perplexities)))
    return 0


def _train(run_dir: Path, resume: bool) -> int:
    from pipelines import run_files
    from pipelines.train import is_main_process, train_run

    if resume:  # resuming by hand answers any stop request a killed process left behind
        (Path(run_dir) / run_files.STOP_REQUEST_FILE).unlink(missing_ok=True)
    with _also_logged_to(Path(run_dir) / "train.log"):
        try:
            status = train_run(run_dir, resume=resume)
        finally:
            if is_main_process():   # this run's place is free: the next queued run may start
                from pipelines.run_queue import dispatch
                dispatch(Path(run_dir).resolve().parent.parent)
    return 0 if status in ("completed", "stopped") else 1


def _road(workspace: Path, target: str | None, language: str, model: str, max_steps: int) -> int:
    from pipelines import road

    if target:   # the app launched this road: its stdout already is road.log
        road_dir = Path(target).resolve()
        road.road_dir_of(road_dir.parent.parent, road_dir.name)   # refuses a folder that is not a road
        return 0 if road.walk(road_dir) in ("completed", "stopped") else 1
    road_dir = road.create_road(workspace, language, model, max_steps)
    print(f"road {road_dir.name} in {road_dir}", flush=True)
    with _also_logged_to(road_dir / "road.log"):
        status = road.walk(road_dir)
    if status != "completed":
        report = road.road_status(workspace, road_dir.name)
        print(f"road {status}{': ' + report['error'] if report.get('error') else ''}", flush=True)
        return 0 if status == "stopped" else 1
    for row in road.compare_road(workspace, road_dir.name):
        print(f"\n### {row['prompt']}")
        for name, answer in row["answers"].items():
            print(f"\n[{name}] {answer}")
    return 0


@contextlib.contextmanager
def _also_logged_to(log_path: Path):
    """In the foreground, print progress and keep train.log as a launched run would have it."""
    try:
        already = os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(log_path))
    except (OSError, ValueError, io.UnsupportedOperation):
        already = False
    if already:  # launched by the app: stdout already is train.log
        yield
        return
    with open(log_path, "a", encoding="utf-8") as log:
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(streams[0], log), _Tee(streams[1], log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = streams


class _Tee(io.TextIOBase):
    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()
