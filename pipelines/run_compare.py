"""Runs side by side: several runs' curves on one axis, the settings that differ between them, their final metrics.

What a sweep is read by. Everything comes from the runs' folders (config.yaml, metrics.jsonl, status.json), so a run
still training is compared as it now stands, and a shorter run simply ends earlier on the chart.

The x axis is the step, or the tokens trained on so far: TRL's SFT-like trainers (SFT, pretrain, DPO…) log the
running count as `num_tokens`, so runs of different batch sizes or max lengths line up by how much text they have
seen. An eval record has no count of its own that means the same thing; it takes the training count logged at or
before its step (0 at step 0, before any training).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from pipelines import run_files, runs
from pipelines.errors import StudioError, quote

MIN_RUNS, MAX_RUNS = 2, 8
ALIGNS = ("step", "tokens")
TOKENS_KEY = "num_tokens"
MAX_POINTS = 2000   # per run and metric: a long run is sent as every k-th point
NOT_METRICS = {"step", "epoch", "time", "split", "resumed_from",
               # the trainer's bookkeeping of an eval, not something a run learns
               "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
NOT_SETTINGS = ("name",)   # the run's id: different by definition


def compare_runs(workspace: Path, run_ids: list[str], align: str = "step") -> dict:
    """The runs' metrics aligned by step or by tokens seen, the settings that differ, and each run's final metrics:

    metrics   {metric: {run_id: [[x, value], ...]}} for every metric all the runs logged (train and eval)
    settings  {"train.learning_rate": {run_id: value}} for the config keys whose values differ between the runs
    final     {run_id: {metric: last value, "best_eval_loss": lowest eval_loss}}
    runs      [{run_id, stage, status, steps, max_steps, tokens}] in the order asked
    """
    run_dirs = _checked(workspace, run_ids, align)
    records = {run_id: run_files.read_metrics(run_dir) for run_id, run_dir in run_dirs.items()}
    if align == "tokens":
        without = [run_id for run_id, rows in records.items() if not any(_number(r.get(TOKENS_KEY)) for r in rows)]
        if without:
            raise StudioError("run_compare.no_tokens", runs=", ".join(without))
    series = {run_id: _series(rows, align) for run_id, rows in records.items()}
    shared = set.intersection(*(set(s) for s in series.values()))
    metrics = {metric: {run_id: _thinned(series[run_id][metric]) for run_id in run_dirs} for metric in sorted(shared)}
    configs = {run_id: _flat(yaml.safe_load(runs.load_config(run_dir).to_yaml()) or {})
               for run_id, run_dir in run_dirs.items()}
    return {"align": align, "runs": [_run_row(run_id, run_dir, records[run_id]) for run_id, run_dir in run_dirs.items()],
            "metrics": metrics, "settings": settings_that_differ(configs),
            "final": {run_id: final_metrics(rows) for run_id, rows in records.items()}}


def _checked(workspace: Path, run_ids, align) -> dict[str, Path]:
    """Each run's folder, in the order asked; every input checked before any file is read."""
    if align not in ALIGNS:
        raise StudioError("run_compare.bad_align", value=quote(align), aligns=", ".join(ALIGNS))
    if not isinstance(run_ids, (list, tuple)) or not all(isinstance(r, str) for r in run_ids):
        raise StudioError("run_compare.bad_runs", lowest=MIN_RUNS, highest=MAX_RUNS, value=quote(run_ids))
    unique = list(dict.fromkeys(r.strip() for r in run_ids if r.strip()))
    if not MIN_RUNS <= len(unique) <= MAX_RUNS:
        raise StudioError("run_compare.bad_runs", lowest=MIN_RUNS, highest=MAX_RUNS, value=quote(run_ids))
    return {run_id: runs.run_dir_of(workspace, run_id) for run_id in unique}   # the name checks: no path leaves it


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict], align: str) -> dict[str, list[list]]:
    """{metric: [[x, value], ...]} of one run, x being the step or the tokens trained on by then."""
    series: dict[str, list[list]] = {}
    tokens = 0.0 if align == "tokens" else None   # the training count so far; 0 before the first step
    for record in records:   # in step order (run_files.read_metrics)
        step = record.get("step", 0)
        if align == "tokens" and _number(record.get(TOKENS_KEY)) and record.get("split") != "eval":
            tokens = record[TOKENS_KEY]
        x = step if align == "step" else tokens
        if align == "tokens" and step > 0 and tokens == 0.0:
            continue   # an eval logged before any count: where it stands in tokens is unknown
        for key, value in record.items():
            if key not in NOT_METRICS and _number(value):
                series.setdefault(key, []).append([x, value])
    return series


def _thinned(points: list[list]) -> list[list]:
    stride = max(1, math.ceil(len(points) / MAX_POINTS))
    thinned = points[::stride]
    if thinned and thinned[-1] is not points[-1]:
        thinned.append(points[-1])   # the curve ends where the run ends
    return thinned


def _flat(config: dict, prefix: str = "") -> dict:
    """{"train.learning_rate": 0.0002, ...}: a nested config as dotted keys."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif name not in NOT_SETTINGS:
            flat[name] = value
    return flat


def settings_that_differ(configs: dict[str, dict]) -> dict[str, dict]:
    """{key: {run_id: value}} for the flattened keys whose values are not the same in every run (a key one run
    lacks, such as a stage's own section, reads None there)."""
    keys = list(dict.fromkeys(key for flat in configs.values() for key in flat))
    differ = {}
    for key in keys:
        values = {run_id: flat.get(key) for run_id, flat in configs.items()}
        if len({yaml.safe_dump(v) for v in values.values()}) > 1:
            differ[key] = values
    return differ


def final_metrics(records: list[dict]) -> dict:
    """The last value of every metric a run logged, and its lowest eval_loss as best_eval_loss."""
    final = {}
    for record in records:
        final.update({key: value for key, value in record.items() if key not in NOT_METRICS and _number(value)})
    eval_losses = [r["eval_loss"] for r in records if _number(r.get("eval_loss"))]
    if eval_losses:
        final["best_eval_loss"] = min(eval_losses)
    return final


def _run_row(run_id: str, run_dir: Path, records: list[dict]) -> dict:
    status = runs.refresh_status(run_dir)
    config = runs.load_config(run_dir)
    counts = [r[TOKENS_KEY] for r in records if _number(r.get(TOKENS_KEY))]
    return {"run_id": run_id, "stage": config.stage, "status": status.get("status"),
            "steps": max((r.get("step", 0) for r in records), default=status.get("step", 0)),
            "max_steps": status.get("max_steps", 0), "tokens": counts[-1] if counts else None}


def report_lines(result: dict) -> list[str]:
    """The CLI's view: the runs, the settings that differ, then the final metrics the runs share."""
    ids = [row["run_id"] for row in result["runs"]]
    shown = [*ids, *(str(v) for values in result["settings"].values() for v in values.values())]
    width = min(28, max(12, *(len(s) for s in shown)))   # a model id is read whole up to 28 characters
    head = lambda first: first.ljust(32) + "".join(f" {i[:width]:>{width}}" for i in ids)   # noqa: E731

    def cell(value) -> str:
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)   # a count of tokens, logged as a float
        text = f"{value:.4g}" if isinstance(value, float) else "-" if value is None else str(value)
        return f" {text[:width]:>{width}}"

    lines = [head("run")]
    lines += [f"{key[:32]:32}" + "".join(cell(row[key]) for row in result["runs"])
              for key in ("stage", "status", "steps", "tokens")]
    lines += ["", head("settings that differ")]
    lines += [f"{key[:32]:32}" + "".join(cell(values[i]) for i in ids) for key, values in result["settings"].items()]
    shared = [key for key in result["final"][ids[0]] if all(key in result["final"][i] for i in ids)]
    lines += ["", head("final metrics")]
    lines += [f"{key[:32]:32}" + "".join(cell(result["final"][i][key]) for i in ids) for key in shared]
    return lines
