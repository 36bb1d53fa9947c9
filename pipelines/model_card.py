"""A model card that tells a checkpoint's road: `README.md` with the Hub's YAML front-matter, then the lineage
(base → SFT → DPO …, each run's stage, data, key settings and steps), the final metrics, the training curves as an
image, the probe answers across steps, and what Evaluate and Compare's votes found about it.

The card is written into `final/` of every run as it finishes (save_final), and into every export (pipelines/
export.py). Its words are in assets/model_card.md.jinja; this module gathers the facts from the run folders.
It is in English, as cards on the Hub are.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines import run_files
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.paths import ASSETS_DIR

TEMPLATE = ASSETS_DIR / "model_card.md.jinja"
CURVES_FILE = "training_curves.png"
BUNDLED_BASE = {"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0"}
SKIPPED_METRICS = {"step", "epoch", "time", "split", "learning_rate", "grad_norm", "num_tokens", "kl_coef",
                   "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}
MAX_METRICS = 8          # per run: a card is read, not searched
ANSWER_CHARS = 240
SETTINGS_SHOWN = ("beta", "loss_type", "kl_coef", "num_generations", "reward", "rules", "ppo_epochs", "n", "alpha")


def lineage(workspace: Path, checkpoint: str) -> tuple[list[dict], str]:
    """The runs that made `checkpoint`, oldest first, and the model the first one started from."""
    from pipelines.models import CHECKPOINT_ID
    from pipelines.runs import load_config

    chain, spec = [], checkpoint
    while (match := CHECKPOINT_ID.fullmatch(spec or "")) and \
            (run_dir := Path(workspace) / "runs" / match["run"]).joinpath("config.yaml").is_file():
        config = load_config(run_dir)
        chain.insert(0, _run_facts(workspace, run_dir, config, spec))
        spec = config.model
        if len(chain) > 50:   # a loop cannot be written by the studio, but a hand-edited config could
            break
    return chain, spec


def _run_facts(workspace: Path, run_dir: Path, config, checkpoint: str) -> dict:
    import dataclasses

    status = run_files.read_status(run_dir)
    section = getattr(config, config.stage, None)
    settings = {k: v for k, v in (dataclasses.asdict(section).items() if dataclasses.is_dataclass(section) else [])
                if k in SETTINGS_SHOWN and v not in ("", None, [], 0)}
    peft = config.peft.method if config.peft.method == "full" else f"{config.peft.method} r={config.peft.r}"
    return {"run_id": run_dir.name, "checkpoint": checkpoint, "stage": config.stage, "model": config.model,
            "dataset": config.dataset, "dataset_source": _dataset_source(workspace, config.dataset),
            "peft": peft, "learning_rate": config.train.learning_rate, "batch_size": config.train.batch_size,
            "settings": settings, "steps": status.get("step", 0), "status": status.get("status"),
            "metrics": run_files.read_jsonl(run_dir / "metrics.jsonl"), "run_dir": run_dir}


def _dataset_source(workspace: Path, dataset: str) -> str:
    meta = Path(workspace) / "datasets" / dataset / "meta.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("source", "")
    except (OSError, ValueError):
        return "bundled sample" if (ASSETS_DIR / "datasets" / f"{dataset}.json").is_file() else ""


def hub_datasets(chain: list[dict]) -> list[str]:
    """Hub ids of the data the runs trained on (an import's source reads `hub:org/name (split)`)."""
    ids = [r["dataset_source"].removeprefix("hub:").split(" ")[0] for r in chain if r["dataset_source"].startswith("hub:")]
    return list(dict.fromkeys(ids))


def base_facts(base: str) -> dict:
    """The base model's Hub id and license, where they are known without the network."""
    if base == BUNDLED_MODEL_ID:
        return dict(BUNDLED_BASE)
    from pipelines.models import HUB_ID
    facts = {"hub_id": base if HUB_ID.fullmatch(base or "") and not Path(base).exists() else None, "license": None}
    readme = Path(base) / "README.md" if Path(base).is_dir() else _cached_readme(base)
    if readme and readme.is_file():
        facts["license"] = _front_matter(readme.read_text(encoding="utf-8", errors="replace")).get("license")
    return facts


def _cached_readme(repo_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id, "README.md")
    return Path(found) if isinstance(found, str) else None


def _front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    try:
        found = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return found if isinstance(found, dict) else {}


def front_matter(chain: list[dict], base: str, kind: str) -> dict:
    """The Hub's card metadata; `kind` is what the folder holds: merged, adapter or gguf."""
    facts = base_facts(base)
    stages = [r["stage"] for r in chain]
    scores = bool(chain) and chain[-1]["stage"] == "reward"   # a reward model scores text, it does not write it
    meta = {"library_name": {"merged": "transformers", "adapter": "peft"}.get(kind),
            "pipeline_tag": "text-classification" if scores else "text-generation",
            "base_model": facts["hub_id"], "license": facts["license"], "datasets": hub_datasets(chain) or None,
            "tags": list(dict.fromkeys(["alignment-studio", *(["trl"] if chain else []), *stages, *(["gguf"] if kind == "gguf" else []),
                                        *(["lora"] if kind == "adapter" else [])]))}
    if kind == "adapter" and facts["hub_id"] and len(chain) == 1:
        meta["base_model_relation"] = "adapter"
    return {k: v for k, v in meta.items() if v}


def final_metrics(chain: list[dict]) -> list[dict]:
    rows = []
    for run in chain:
        last: dict = {}
        for record in run["metrics"]:
            prefix = "eval_" if record.get("split") == "eval" and not any(k.startswith("eval_") for k in record) else ""
            last.update({prefix + k: v for k, v in record.items()
                         if k not in SKIPPED_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)})
        for metric, value in list(last.items())[:MAX_METRICS]:
            rows.append({"run_id": run["run_id"], "metric": metric, "value": f"{value:.4g}"})
    return rows


def draw_curves(chain: list[dict], path: Path) -> bool:
    """Each run's loss and its stage's first panel (pipelines/panels.py), one row of plots per run, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")   # no display: a file only
    import matplotlib.pyplot as plt

    from pipelines.messages import Message
    from pipelines.panels import LOSS
    from pipelines.stages import get_stage

    drawn = [(run, [p for p in (LOSS, *get_stage(run["stage"]).panels[:1])
                    if any(k in m for m in run["metrics"] for k in p.keys)]) for run in chain]
    drawn = [(run, panels) for run, panels in drawn if panels]
    if not drawn:
        return False
    columns = max(len(panels) for _, panels in drawn)
    figure, axes = plt.subplots(len(drawn), columns, figsize=(5 * columns, 3 * len(drawn)), squeeze=False)
    for row, (run, panels) in enumerate(drawn):
        for column in range(columns):
            axis = axes[row][column]
            if column >= len(panels):
                axis.axis("off")
                continue
            for key in panels[column].keys:
                points = [(m["step"], m[key]) for m in run["metrics"] if isinstance(m.get(key), (int, float))]
                if points:
                    axis.plot(*zip(*points), label=key)
            axis.set_title(f"{run['stage'].upper()} · {Message(panels[column].title).text('en')}", fontsize=10)
            axis.set_xlabel("step")
            axis.legend(fontsize=7)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def probe_table(chain: list[dict]) -> dict | None:
    from pipelines.probes import probe_grid

    if not chain:
        return None
    grid = probe_grid(chain[-1]["run_dir"])
    if not grid["rows"]:
        return None
    steps = grid["steps"] if len(grid["steps"]) <= 3 else [grid["steps"][0], grid["steps"][len(grid["steps"]) // 2], grid["steps"][-1]]
    return {"run_id": chain[-1]["run_id"], "steps": steps,
            "rows": [{"prompt": cell(row["prompt"]), "answers": [cell(row["answers"].get(s, "")) for s in steps]}
                     for row in grid["rows"]]}


def cell(value) -> str:
    """Text fit for one Markdown table cell: one line, no pipe, not too long."""
    flat = " ".join(str(value).split()).replace("|", "\\|")
    return flat if len(flat) <= ANSWER_CHARS else flat[: ANSWER_CHARS - 1] + "…"


def evaluations(workspace: Path, checkpoint: str) -> list[str]:
    """What Evaluate jobs and Compare's votes found about `checkpoint`, as Markdown paragraphs."""
    return [*_evaluate_results(workspace, checkpoint), *_vote_results(workspace, checkpoint)]


def _evaluate_results(workspace: Path, checkpoint: str) -> list[str]:
    from pipelines import jobs

    paragraphs = []
    root = Path(workspace) / "jobs"
    if not root.is_dir():
        return paragraphs
    for job_dir in jobs.list_job_dirs(workspace):
        if run_files.read_status(job_dir).get("status") != "completed" or jobs.read_job(job_dir).get("kind") != "evaluate":
            continue
        spec, summary = jobs.read_job(job_dir)["spec"], jobs.read_summary(job_dir)
        if checkpoint not in spec.get("checkpoints", []) or not summary.get("means"):
            continue
        rates = summary.get("win_rates", {}).get(checkpoint, {})
        lines = [f"**Evaluate** (`{job_dir.name}`, {summary.get('prompts', '?')} prompts, scored by "
                 f"{spec.get('scorer') or 'rules'}):", "", "| Checkpoint | Mean score | This model wins |", "|---|---:|---:|"]
        for other, mean in summary["means"].items():
            wins = "—" if other == checkpoint else f"{rates.get(other, 0):.0%}"
            lines.append(f"| `{other}` | {mean:.3f} | {wins} |")
        paragraphs.append("\n".join(lines))
        if len(paragraphs) >= 3:
            break
    return paragraphs


def _vote_results(workspace: Path, checkpoint: str) -> list[str]:
    """Pairs people preferred in Compare: how often this checkpoint's answer was chosen, against each other."""
    tally: dict[str, list[int]] = {}
    root = Path(workspace) / "datasets"
    for data in sorted(root.glob("*/data.jsonl")) if root.is_dir() else []:
        for row in run_files.read_jsonl(data):
            chosen, rejected = row.get("chosen_checkpoint"), row.get("rejected_checkpoint")
            if checkpoint == chosen and rejected:
                tally.setdefault(rejected, [0, 0])[0] += 1
            elif checkpoint == rejected and chosen:
                tally.setdefault(chosen, [0, 0])[1] += 1
    if not tally:
        return []
    lines = ["**Votes in Compare** (people picked the better of two answers):", "",
             "| Against | Won | Lost | Win rate |", "|---|---:|---:|---:|"]
    lines += [f"| `{other}` | {won} | {lost} | {won / (won + lost):.0%} |" for other, (won, lost) in sorted(tally.items())]
    return ["\n".join(lines)]


def card_text(workspace: Path, checkpoint: str, kind: str, title: str, usage: str, curves: str | None) -> str:
    """The card of `checkpoint` for a folder holding `kind` (merged, adapter, gguf); `curves` names its image."""
    from jinja2 import Environment

    chain, base = lineage(workspace, checkpoint)
    base_label = BUNDLED_BASE["hub_id"] if base == BUNDLED_MODEL_ID else (base_facts(base)["hub_id"] or Path(base).name)
    runs = [{"stage_name": r["stage"].upper(), "run_id": r["run_id"], "steps": r["steps"],
             "started_from": cell(chain[i - 1]["checkpoint"] if i else base_label),
             "data": cell(r["dataset"] + (f" ({r['dataset_source']})" if r["dataset_source"] else "")),
             "settings": cell(", ".join([r["peft"], f"lr {r['learning_rate']:g}", f"batch {r['batch_size']}",
                                         *(f"{k} {_short(v)}" for k, v in r["settings"].items())]))}
            for i, r in enumerate(chain)]
    summary = (f"`{checkpoint}`, exported as {kind}." if chain else f"`{checkpoint}` ({base_label}) as it is, not trained in the studio, exported as {kind}.")
    environment = Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return environment.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        front_matter=yaml.safe_dump(front_matter(chain, base, kind), sort_keys=False, allow_unicode=True),
        title=title, summary=summary, base_label=base_label, lineage=runs,
        road=" → ".join([base_label, *[r["stage"].upper() for r in chain]]), metrics=final_metrics(chain),
        curves=curves, probes=probe_table(chain), evaluations=evaluations(workspace, checkpoint), usage=usage)


def _short(value) -> str:
    return cell(value if not isinstance(value, list) else f"{len(value)} rules")[:60]


def write_card(workspace: Path, checkpoint: str, folder: Path, kind: str, title: str, usage: str) -> Path:
    """README.md (and the curves image it shows) in `folder`."""
    chain, _ = lineage(workspace, checkpoint)
    curves = CURVES_FILE if chain and draw_curves(chain, folder / CURVES_FILE) else None
    path = folder / "README.md"
    path.write_text(card_text(workspace, checkpoint, kind, title, usage, curves), encoding="utf-8")
    return path


def usage_text(kind: str, repo: str, gguf_file: str | None = None) -> str:
    """How to load what the folder holds, as a Markdown code block."""
    if kind == "gguf":
        return (f"With llama.cpp: `llama-cli -m {gguf_file} -cnv`. With Ollama, from this folder: "
                f"`ollama create my-model -f Modelfile`, then `ollama run my-model`.")
    if kind == "adapter":
        return ("```python\nfrom peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
                f"model = AutoPeftModelForCausalLM.from_pretrained(\"{repo}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{repo}\")\n```")
    return ("```python\nfrom transformers import pipeline\n\n"
            f"chat = pipeline(\"text-generation\", model=\"{repo}\")\n"
            "print(chat([{\"role\": \"user\", \"content\": \"Hello!\"}], max_new_tokens=64)[0][\"generated_text\"])\n```")


def write_run_card(run_dir: Path, folder: Path) -> None:
    """The card of a run's final model, written into `folder` (final/ being staged) as the run finishes. A card is
    worth having, not worth a run: if it cannot be written, the log says why and the run finishes all the same."""
    import traceback

    kind = "adapter" if (folder / "adapter_config.json").is_file() else "merged"
    checkpoint = f"{run_dir.name}/final"
    try:
        write_card(run_dir.parent.parent, checkpoint, folder, kind, run_dir.name, usage_text(kind, run_dir.name))
    except Exception:   # noqa: BLE001 — a missing plotting font or an odd metric must not fail a finished run
        print(f"The model card of {checkpoint} could not be written:\n{traceback.format_exc(limit=3)}", flush=True)
