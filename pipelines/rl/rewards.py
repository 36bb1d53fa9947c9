"""Where an RL stage's reward comes from: a reward checkpoint, a Python reward-function file, declarative rules
(the stage's `rules` setting, pipelines/rl/rule_spec.py), or any of them added.

A reward setting is written `my-rm/final`, `rules.py`, or `my-rm/final + rules.py`. A reward-function file
lies inside the workspace and defines

    def reward(prompts: list[str], completions: list[str]) -> list[float]

It runs in a process of its own (pipelines/rl/rule_worker.py), never in the app's server, and is called on two
samples before a run starts, so an import error, a crash, a hang, a wrong type or a wrong length is one sentence at
Start instead of a crash minutes later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.paths import inside, upload_folder
from pipelines.rl.rule_spec import Rule, parse_rules, rules_score
from pipelines.rl.rule_worker import RuleWorker

# Two samples, not one: a function that returns one score whatever it is given passes a one-sample check.
PROBE = (["Say hi", "Add 2 and 3"], ["Hi there! Hope this helps!", "2 + 3 = 5."])


@dataclass
class RewardSource:
    checkpoint: str | None            # a reward run's checkpoint id
    function_file: Path | None        # a .py file inside the workspace
    rules: tuple[Rule, ...] = ()      # declarative rules (the stage's `rules` setting)

    def describe(self) -> str:
        rules = self.rules and (f"{len(self.rules)} rule" + ("s" if len(self.rules) > 1 else ""))
        return " + ".join(p for p in (self.checkpoint, self.function_file and self.function_file.name, rules) if p)


def parse_reward(spec: str, workspace: Path, file_must_exist: bool = True, rules=None) -> RewardSource:
    """`checkpoint`, `file.py` or `checkpoint + file.py`, with the stage's `rules` (plain data, may be empty) → a
    RewardSource (paths and rules checked, nothing loaded). A reward needs at least one of the three."""
    parts = _parts(spec)
    parsed_rules = tuple(parse_rules(rules))
    if not parts and not parsed_rules:
        raise StudioError("rl.no_reward")
    checkpoint = function_file = None
    for part in parts:
        if part.endswith(".py"):
            if function_file:
                raise StudioError("rl.two_rule_files")
            from pipelines.hosting import check_user_code
            check_user_code(part)   # hosted mode: no visitor's Python unless the operator allows it
            function_file = inside(Path(workspace), part, "reward-function file")
            if function_file.is_relative_to(upload_folder()):   # anyone could have put it there (paths.py)
                raise StudioError("rl.rule_uploaded", file=quote(part))
            if file_must_exist and not function_file.is_file():
                raise StudioError("rl.no_rule_file", file=quote(part), workspace=str(workspace))
        elif checkpoint:
            raise StudioError("rl.two_checkpoints")
        else:
            checkpoint = part
    return RewardSource(checkpoint, function_file, parsed_rules)


def _parts(spec: str | None) -> list[str]:
    return [p.strip() for p in (spec or "").split("+") if p.strip()]


def rule_only(config) -> bool:
    """Whether an RL run scores with rules alone (a rule file and/or declarative rules), no reward model
    (pipelines/signals.py hints differ)."""
    settings = getattr(config, config.stage, None)
    parts = _parts(getattr(settings, "reward", None))
    return (bool(parts) or bool(getattr(settings, "rules", None))) and all(p.endswith(".py") for p in parts)


RUN_COPY_FOLDER = "reward"


def keep_reward_file(source: RewardSource, run_dir: Path) -> RewardSource:
    """Copy the function file into the run folder (once) and point the source at the copy. Runs are created with
    the copy, and the training process scores with it, so editing the file in the workspace does not change a
    queued run or a run half-way (a resume included), and the run folder keeps the rules it was trained on."""
    import os
    import shutil

    if not source.function_file:
        return source
    copy = Path(run_dir) / RUN_COPY_FOLDER / source.function_file.name
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        staged = copy.with_name(f".{copy.name}.{os.getpid()}")   # every process of a multi-GPU run may get here
        shutil.copy2(source.function_file, staged)
        os.replace(staged, copy)
    return RewardSource(source.checkpoint, copy, source.rules)


def reward_for_run(spec: str, workspace: Path, run_dir: Path, rules=None) -> RewardSource:
    """The reward source a training process scores with: the run's own copy of the function file (its rules are
    in its own config.yaml)."""
    source = parse_reward(spec, workspace, file_must_exist=False, rules=rules)
    if not source.function_file:
        return source
    copy = Path(run_dir) / RUN_COPY_FOLDER / source.function_file.name
    if not copy.is_file():   # a run created before runs kept their copy
        return keep_reward_file(parse_reward(spec, workspace, rules=rules), run_dir)
    if not source.function_file.is_file() or copy.read_bytes() != source.function_file.read_bytes():
        print(f"reward: {source.function_file.name} changed or went from the workspace since this run was created; "
              f"the run scores with the copy it was created with ({copy.relative_to(run_dir)}).", flush=True)
    return RewardSource(source.checkpoint, copy, source.rules)


def load_reward_function(path: Path) -> RuleWorker:
    """Start the file's `reward` in a process of its own and check it on the PROBE samples."""
    function = RuleWorker(path)
    try:
        function(*PROBE)
    except StudioError:
        function.close()
        raise
    return function


class RewardScorer:
    """Scores completions with every source of a RewardSource, added together. After each call, `rule_scores`
    holds the declarative rules' part of each score (None without rules), which PPO logs on its own."""

    def __init__(self, source: RewardSource, workspace: Path):
        self.source = source
        self.rule_scores: list[float] | None = None
        self.function = load_reward_function(source.function_file) if source.function_file else None
        self.reward_model = None
        if source.checkpoint:
            from pipelines.models import resolve_model
            from pipelines.scoring import cached_reward_model
            self.reward_model = cached_reward_model(resolve_model(source.checkpoint, workspace))

    def __call__(self, prompts: list[list[dict]], completions: list[str]) -> list[float]:
        """prompts: conversations (lists of turns); completions: the generated answers as text."""
        totals = [0.0] * len(completions)
        if self.reward_model:
            from pipelines.scoring import score_conversations
            model, tokenizer = self.reward_model
            scores = score_conversations(model, tokenizer, [p + [{"role": "assistant", "content": c}]
                                                            for p, c in zip(prompts, completions)])
            totals = [t + s for t, s in zip(totals, scores)]
        if self.function:
            last_user = [next((t["content"] for t in reversed(p) if t["role"] == "user"), "") for p in prompts]
            totals = [t + s for t, s in zip(totals, self.function(last_user, completions))]
        if self.source.rules:
            self.rule_scores = rules_score(list(self.source.rules), completions)
            totals = [t + s for t, s in zip(totals, self.rule_scores)]
        return totals

    def close(self) -> None:
        """Stop the rule's process (it also stops when the scorer is collected, or at exit)."""
        if self.function:
            self.function.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reward_model_margin(source: RewardSource, workspace: Path) -> float | None:
    """How far apart the reward model scored the chosen and rejected answers of its own training pairs (the mean
    `margin` of its last logged steps): the scale against which a policy's score spread is small or large."""
    from pipelines import run_files
    from pipelines.models import CHECKPOINT_ID

    match = CHECKPOINT_ID.match(source.checkpoint or "")
    if not match:   # no reward model, or one from outside the workspace: no training record to read
        return None
    margins = [m["margin"] for m in run_files.read_metrics(Path(workspace) / "runs" / match["run"])
               if m.get("split") == "train" and isinstance(m.get("margin"), (int, float))][-5:]
    return sum(margins) / len(margins) if margins else None


def check_reward(spec: str, workspace: Path, rules=None) -> RewardSource:
    """Everything about a reward setting (and the stage's rules) that can be checked before a run starts."""
    from pipelines.models import check_reward_model, resolve_model

    source = parse_reward(spec, workspace, rules=rules)
    if source.function_file:
        load_reward_function(source.function_file).close()
    if source.checkpoint:
        from pipelines.models import CHECKPOINT_ID
        match = CHECKPOINT_ID.match(source.checkpoint)
        if match and not (Path(workspace) / "runs" / match["run"] / "config.yaml").is_file():
            raise StudioError("rl.no_reward_run", run_id=quote(match["run"]))
        check_reward_model(resolve_model(source.checkpoint, workspace))
    return source
