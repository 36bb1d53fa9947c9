"""Try the road: InstructGPT's road (SFT → reward model → PPO) and DPO's shortcut (SFT → DPO) in one go.

On a bundled sample (English or Korean), every stage with its defaults: SFT on the instruction sample, then DPO
on the preference sample, a reward model on the same pairs and PPO against it, each from the SFT model. Each
step is an ordinary run (its own directory, curves, stop and resume); the road only chains them:

    workspace/roads/<road_id>/status.json   status, pid, the run id of each step, the held-out prompts
    workspace/roads/<road_id>/road.log      what the road process printed

`python -m pipelines road` walks it in the foreground and then prints the four models' answers side by side;
the app launches `python -m pipelines road <road_dir>` as its own process, as it launches runs, and its Road tab
opens Compare with base, SFT, PPO and DPO on the held-out prompts. A road whose process died reads as
`interrupted`; walking it again skips the steps that completed and resumes the one that stopped.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

import yaml

from pipelines import run_files, run_queue, runs
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.errors import StudioError, quote
from pipelines.messages import Message, has_message
from pipelines.paths import check_name, file_lock

LANGUAGES = ("en", "ko")
STEP_POLL_S = 1.0
PROGRESS_EVERY_S = 30
MAX_ROAD_STEPS = 10_000

# (step, stage, the step whose final model it starts from, dataset sample kind). DPO comes before the reward model
# so that the shortcut's answer is there to look at while the longer road still trains.
STEPS = (
    ("sft", "sft", None, "alpaca"),
    ("dpo", "dpo", "sft", "preference"),
    ("reward", "reward", "sft", "preference"),
    ("ppo", "ppo", "sft", "prompts"),
)

# Questions on topics that neither language's samples cover (tests/test_road.py checks), for Compare at the end.
# bench/preference_outcome.py asks all of the English ones.
HELD_OUT_PROMPTS = {
    "en": [
        "Explain what a mortgage is.",
        "How do I grow tomatoes on a balcony?",
        "Suggest a weekend project for learning Python.",
        "How do I teach my dog to sit?",
        "What is a solar eclipse?",
        "How does a bicycle stay upright?",
        "How do I sharpen a kitchen knife?",
        "What is the difference between a hurricane and a tornado?",
        "How can I get better at chess?",
        "What causes rust on metal?",
        "How do I choose a ripe watermelon?",
        "How do I patch a small hole in a wall?",
        "Why do we have time zones?",
        "How do I start birdwatching?",
        "How can I make a small flat feel bigger?",
        "Explain how a thermostat works.",
        "How can I learn to draw?",
        "How do I keep an indoor cat entertained?",
        "Why do some people snore?",
        "How do I fix a dripping tap?",
        "How do I start composting at home?",
        "What does a project manager do?",
        "How do I learn to juggle?",
        "How do I make pizza dough at home?",
        "How can I take better photos with my phone?",
        "Why do we dream?",
        "What is the difference between a violin and a viola?",
        "How do I plan a birthday party for a ten-year-old?",
        "What is a pension, and why should I have one?",
        "How do I clean my laptop keyboard?",
    ],
    "ko": [
        "베란다에서 토마토를 키우는 방법을 알려 주세요.",
        "일식은 왜 일어나나요?",
        "강아지에게 앉는 법을 가르치려면 어떻게 하나요?",
        "체스를 더 잘 두려면 어떻게 해야 하나요?",
        "잘 익은 수박을 고르는 방법은 무엇인가요?",
        "시간대는 왜 있나요?",
        "좁은 방을 더 넓어 보이게 하려면 어떻게 하나요?",
        "주택담보대출이 무엇인지 설명해 주세요.",
    ],
}
COMPARE_PROMPTS = 4   # of the held-out prompts, how many the road's end shows side by side
# Words that say nothing of a prompt's topic: a held-out prompt may share these with a sample row.
STOP_WORDS = set("a an and are at be can do does for from how i in is it me my of on or should so some the this to "
                 "we what when which who why with you your give explain tell make get have has there that "
                 "start learn better good best way keep home difference between "
                 "왜 어떻게 하나요 해야 하려면 있나요 무엇인가요 무엇인지 뭔지 알려 주세요 방법을 방법은 설명해 쉽게 더 잘 "
                 "일어나나요".split())

ROAD_INTERRUPTED = Message("road.interrupted")


def roads_root(workspace: Path) -> Path:
    root = Path(workspace) / "roads"
    root.mkdir(parents=True, exist_ok=True)
    return root


def road_dir_of(workspace: Path, road_id: str) -> Path:
    check_name(road_id, "road id")
    road_dir = roads_root(workspace) / road_id
    if not (road_dir / "status.json").is_file():
        raise StudioError("road.not_found", road_id=quote(road_id))
    return road_dir


def step_config(road: dict, step: str, run_ids: dict) -> dict:
    """The run config of one step: the stage's defaults, the bundled sample of the road's language, and the model
    (and, for PPO, the reward model) of the steps before it."""
    _, stage, start_from, sample = next(s for s in STEPS if s[0] == step)
    config = {"name": f"{road['road_id']}-{step}", "stage": stage, "dataset": f"{sample}-{road['language']}-sample",
              "model": f"{run_ids[start_from]}/final" if start_from else road["model"]}
    if stage == "ppo":
        config["ppo"] = {"reward": f"{run_ids['reward']}/final"}
    if road.get("max_steps"):
        config["train"] = {"max_steps": road["max_steps"]}
    return config


def create_road(workspace: Path, language: str = "en", model: str = BUNDLED_MODEL_ID, max_steps: int = 0) -> Path:
    """The road's directory with a `queued` status; nothing is trained yet. max_steps 0 keeps each stage's default
    (a smaller number gives a quick, rough look)."""
    from pipelines.models import check_generative, resolve_model

    if language not in LANGUAGES:
        raise StudioError("road.bad_language", languages=", ".join(LANGUAGES), language=quote(str(language)[:20]))
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 0 <= max_steps <= MAX_ROAD_STEPS:
        raise StudioError("road.bad_max_steps", maximum=MAX_ROAD_STEPS)
    if not isinstance(model, str) or not model.strip():
        raise StudioError("road.no_model")
    source = resolve_model(model.strip(), workspace)
    check_generative(source)
    model = source.base if source.kind == "local" else model.strip()   # each step's process has its own cwd
    road_dir = runs.new_folder(roads_root(workspace), f"road-{language}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    road_id = road_dir.name
    run_files.write_json_atomic(road_dir / "status.json", {
        "road_id": road_id, "language": language, "model": model, "max_steps": max_steps, "status": "queued",
        "pid": None, "error": None, "error_message": None,
        "steps": {step: None for step, *_ in STEPS}, "prompts": HELD_OUT_PROMPTS[language][:COMPARE_PROMPTS],
        "created_at": time.time(), "updated_at": time.time()})
    return road_dir


def launch_road(road_dir: Path) -> int:
    """Walk the road in its own process (an argument list, never a shell string); return its pid."""
    (road_dir / run_files.STOP_REQUEST_FILE).unlink(missing_ok=True)
    process = runs.spawn(["road", str(road_dir)], road_dir / "road.log")
    # Unless the child already reported itself running, the road is queued.
    run_files.update_status(road_dir, only_if=lambda now: now.get("status") not in run_files.ACTIVE_STATES or
                            now.get("pid") is None, status="queued", pid=process.pid,
                            pid_started=runs.process_start_time(process.pid), error=None, error_message=None)
    return process.pid


def walk(road_dir: Path) -> str:
    """Train every step not yet completed, in order, in this process's foreground; return the road's final status.
    A step that ends stopped or failed ends the road the same way, with the step's own error."""
    with file_lock(road_dir / ".walk.lock", wait=False) as sole:
        if not sole:
            print(f"error: road {road_dir.name} is already being walked by another process.", flush=True)
            return run_files.read_status(road_dir).get("status", "unknown")
        return _walk_locked(road_dir)


def _walk_locked(road_dir: Path) -> str:
    road = run_files.update_status(road_dir, status="running", pid=os.getpid(),
                                   pid_started=runs.process_start_time(os.getpid()), error=None,
                                   error_message=None)
    try:
        return _walk_steps(road_dir, road)
    except StudioError as exc:   # a step that cannot start (its model or data went missing): the road says why
        print(f"error: {exc}", flush=True)
        return _finish(road_dir, "failed", error=exc)


def _walk_steps(road_dir: Path, road: dict) -> str:
    workspace = road_dir.parent.parent
    run_ids = dict(road.get("steps") or {})
    for step, *_ in STEPS:
        if (road_dir / run_files.STOP_REQUEST_FILE).exists():
            return _finish(road_dir, "stopped")
        run_dir = _step_run(workspace, road_dir, road, step, run_ids)
        if run_dir is None:   # already completed
            continue
        print(f"road: {step} is run {run_dir.name}", flush=True)
        _wait_for(run_dir, road_dir)
        status = runs.refresh_status(run_dir)
        if status.get("status") != "completed":
            print(f"road: {step} ended {status.get('status')}", flush=True)
            return _finish(road_dir, "stopped" if status.get("status") == "stopped" else "failed",
                           error=None if status.get("status") == "stopped" else _step_failure(step, run_dir, status))
    return _finish(road_dir, "completed")


def _wait_for(run_dir: Path, road_dir: Path) -> None:
    """Until the step's run ends, printing its progress now and then; a stop asked of the road meanwhile (even
    before this step's run was on record) reaches the run."""
    printed = time.monotonic()
    while (status := runs.refresh_status(run_dir)).get("status") in run_files.ACTIVE_STATES:
        if (road_dir / run_files.STOP_REQUEST_FILE).exists() and status.get("status") != "stopping":
            run_queue.stop(run_dir)
        run_queue.dispatch(run_dir.parent.parent)   # the step may wait in the queue behind a run that died
        if time.monotonic() - printed > PROGRESS_EVERY_S:
            eta = status.get("eta_s")
            print(f"road: {run_dir.name} step {status.get('step', 0)}/{status.get('max_steps', 0)}"
                  + (f", about {eta / 60:.0f} min left" if eta else ""), flush=True)
            printed = time.monotonic()
        time.sleep(STEP_POLL_S)


def _step_run(workspace: Path, road_dir: Path, road: dict, step: str, run_ids: dict) -> Path | None:
    """The launched run of `step`: a new one, the earlier one resumed, or None when it already completed."""
    from pipelines.api import prepare_run

    if run_ids.get(step):
        run_dir = runs.runs_root(workspace) / run_ids[step]
        status = runs.refresh_status(run_dir).get("status") if (run_dir / "config.yaml").is_file() else None
        if status == "completed":
            return None
        if status in run_files.ACTIVE_STATES:   # still training from an earlier walk: wait for it
            return run_dir
        if status and runs.why_not_resumable(run_dir, {"status": status}) is None:
            run_queue.resume(run_dir)
            return run_dir
    config = step_config(road, step, run_ids)
    run_dir = prepare_run(workspace, yaml.safe_dump(config, allow_unicode=True))
    run_ids[step] = run_dir.name
    run_files.update_status(road_dir, steps=dict(run_ids))
    run_queue.start(run_dir)
    return run_dir


def _step_failure(step: str, run_dir: Path, status: dict) -> Message:
    """Why the road ended with a step: the step's run, its state and its own error."""
    error, state = runs.error_of(status), f"status.{status.get('status')}"
    facts = {"step": step, "run_id": run_dir.name,
             "status": Message(state) if has_message(state) else str(status.get("status"))}
    return Message("road.step_failed", error=error, **facts) if error else Message("road.step_ended", **facts)


def _finish(road_dir: Path, status: str, error: Message | StudioError | None = None) -> str:
    run_files.update_status(road_dir, status=status, finished_at=time.time(), **run_files.error_fields(error))
    return status


def refresh_road(road_dir: Path) -> dict:
    """The road's status, with a road whose process died marked `interrupted` (never 'running' forever)."""
    return runs.refresh_status(road_dir, ROAD_INTERRUPTED)


def road_status(workspace: Path, road_id: str) -> dict:
    """The road and each step's run: status, step, max_steps, ETA; and, once completed, the checkpoints to compare."""
    road_dir = road_dir_of(workspace, road_id)
    road = refresh_road(road_dir)
    steps = []
    for step, stage, *_ in STEPS:
        run_id = (road.get("steps") or {}).get(step)
        run_dir = runs.runs_root(workspace) / run_id if run_id else None
        run = runs.refresh_status(run_dir) if run_dir and (run_dir / "config.yaml").is_file() else {}
        steps.append({"step": step, "stage": stage, "run_id": run_id, "status": run.get("status", "waiting"),
                      "progress": run.get("step", 0), "max_steps": run.get("max_steps", 0), "eta_s": run.get("eta_s"),
                      "error": runs.status_texts(run)["error"]})
    checkpoints = {"base": road.get("model", BUNDLED_MODEL_ID), **{s["step"]: f"{s['run_id']}/final" for s in steps
                                                 if s["step"] != "reward" and s["status"] == "completed"}}
    return {"road_id": road_id, "language": road.get("language"), "status": road.get("status"),
            "error": runs.status_texts(road)["error"], "steps": steps, "prompts": road.get("prompts", []),
            "checkpoints": checkpoints}


def stop_road(workspace: Path, road_id: str) -> dict:
    """Stop the road after its current step: that run saves a checkpoint and stops, and no later step starts."""
    road_dir = road_dir_of(workspace, road_id)
    road = refresh_road(road_dir)
    if road.get("status") in run_files.ACTIVE_STATES:
        (road_dir / run_files.STOP_REQUEST_FILE).touch()
        run_files.update_status(road_dir, only_if=lambda now: now.get("status") in run_files.ACTIVE_STATES,
                                status="stopping")
        for run_id in (road.get("steps") or {}).values():
            if run_id and (runs.runs_root(workspace) / run_id / "config.yaml").is_file():
                run_queue.stop(runs.runs_root(workspace) / run_id)
    return road_status(workspace, road_id)


def continue_road(workspace: Path, road_id: str) -> dict:
    """Walk a stopped, failed or interrupted road again: completed steps are kept, a stopped step resumes."""
    road_dir = road_dir_of(workspace, road_id)
    with file_lock(road_dir / ".launch.lock"):
        status = refresh_road(road_dir).get("status")
        if status in run_files.ACTIVE_STATES:
            raise StudioError("road.still_active", road_id=quote(road_id), status=Message(f"status.{status}"))
        if status == "completed":
            raise StudioError("road.already_completed", road_id=quote(road_id))
        launch_road(road_dir)
    return road_status(workspace, road_id)


def list_roads(workspace: Path) -> list[dict]:
    """Every road of the workspace, newest first: id, language, status."""
    dirs = [p for p in roads_root(workspace).iterdir() if (p / "status.json").is_file()]
    rows = [refresh_road(p) for p in dirs]
    return [{"road_id": r.get("road_id"), "language": r.get("language"), "status": r.get("status"),
             "created_at": r.get("created_at")} for r in sorted(rows, key=lambda r: r.get("created_at", 0), reverse=True)]


def compare_road(workspace: Path, road_id: str, max_new_tokens: int = 128) -> list[dict]:
    """Greedy answers of base, SFT, DPO and PPO (those that completed) to the road's held-out prompts:
    [{"prompt", "answers": {name: answer}}]."""
    from pipelines.compare import compare

    report = road_status(workspace, road_id)
    names = [name for name in ("base", "sft", "dpo", "ppo") if name in report["checkpoints"]]
    rows = []
    for prompt in report["prompts"]:
        answers = compare(workspace, [report["checkpoints"][n] for n in names], prompt,
                          {"temperature": 0, "max_new_tokens": max_new_tokens})
        rows.append({"prompt": prompt, "answers": dict(zip(names, answers))})
    return rows


def content_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower())) - STOP_WORDS


def closest_sample_rows(language: str) -> dict[str, tuple[float, str]]:
    """For each held-out prompt of `language`: the share of its content words that the closest row of that
    language's samples shares, and that row. A held-out prompt is a sample row word for word at 1.0."""
    import json

    from pipelines.paths import ASSETS_DIR

    seen = []
    for sample in ("alpaca", "preference", "prompts"):
        for row in json.loads((ASSETS_DIR / "datasets" / f"{sample}-{language}-sample.json").read_text(encoding="utf-8")):
            seen.append(" ".join(filter(None, (row.get("instruction"), row.get("input"), row.get("prompt")))))
    closest = {}
    for prompt in HELD_OUT_PROMPTS[language]:
        words = content_words(prompt)
        closest[prompt] = max((len(words & content_words(row)) / len(words), row) for row in seen)
    return closest
