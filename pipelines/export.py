"""Taking a model out of the studio: a checkpoint exported to `workspace/exports/<name>/`, checked by loading it back.

Formats:
- `merged`: the base with every adapter of the checkpoint's chain merged in (an SFT adapter, then a DPO adapter on
  it, become one model), or a full fine-tune as it is; safetensors at the chosen dtype, with the tokenizer (its chat
  template included) and the generation config.
- `adapter`: the last LoRA adapter alone, with the tokenizer, for a user who has the base; refused for a chain,
  whose last adapter only makes sense on the models merged before it.
- `gguf-<type>`: one GGUF file for llama.cpp, Ollama and LM Studio (pipelines/gguf_export.py), with an Ollama
  Modelfile beside it (pipelines/ollama.py).
Every folder holds a model card that tells the checkpoint's road (pipelines/model_card.py).

An export is a job (pipelines/jobs.py): its own process, progress, Cancel. It is written into a hidden staging
folder and renamed into place once complete and verified, so a folder under exports/ is always whole.

Verification loads what was written and holds it against the checkpoint as the studio runs it (the last adapter
applied, not merged): greedy replies to a few prompts, and teacher-forced agreement — the share of the reference
reply's tokens that the export also ranks first, given the same text before them — which does not cascade the way
free-running replies do. An export whose agreement is under its type's TOLERANCE fails, and nothing is kept.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from pipelines import run_files
from pipelines.errors import StudioError, quote
from pipelines.messages import Message
from pipelines.paths import check_name

EXPORTS_DIR = "exports"
DTYPES = ("float32", "bfloat16", "float16")
OPTIONS = ("dtype", "name")
# The least share of reference tokens an export must rank first (teacher-forced, on VERIFY_PROMPTS): float32 is the
# same arithmetic in another order; 16-bit rounds every weight once; q8_0 and q4_K_M round far more coarsely.
TOLERANCE = {"float32": 0.99, "float16": 0.97, "bfloat16": 0.9, "f32": 0.99, "f16": 0.97, "bf16": 0.9, "q8_0": 0.9,
             "q4_K_M": 0.7}
VERIFY_PROMPTS = ("What is the capital of France?", "Give three tips for staying healthy.",
                  "한국의 수도는 어디인가요?")
VERIFY_TOKENS = 32
TOKENIZER_CHECK = "Hello, world! 안녕하세요. 123 + 456 = 579\n<|im_end|>"


def exports_root(workspace: Path) -> Path:
    return Path(workspace) / EXPORTS_DIR


def formats() -> tuple[str, ...]:
    from pipelines.gguf_export import gguf_types
    return ("merged", "adapter", *(f"gguf-{t}" for t in gguf_types()))


def gguf_type(format: str) -> str | None:
    return format.removeprefix("gguf-") if format.startswith("gguf-") else None


# ---- the server's side: what was asked, checked before anything is written

def prepare_export(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoint, format (merged, adapter, gguf-f16, gguf-q8_0, …), options {dtype, name}."""
    from pipelines.gguf_export import QUANTIZER_TYPES
    from pipelines.models import check_generative, resolve_model

    checkpoint, format = spec.get("checkpoint"), spec.get("format") or "merged"
    if not isinstance(format, str) or format not in formats():
        if isinstance(format, str) and gguf_type(format) in QUANTIZER_TYPES:
            raise StudioError("export.needs_quantizer", format=format)
        raise StudioError("export.unknown_format", format=quote(format), formats=", ".join(formats()))
    options = _check_options(spec.get("options"))
    source = resolve_model(checkpoint, workspace)
    check_generative(source)
    if format == "adapter" and len(source.adapters) != 1:
        raise StudioError("export.adapter_needs_one" if not source.adapters else "export.adapter_chain",
                          checkpoint=quote(checkpoint))
    name = options.get("name") or default_name(checkpoint, format, options["dtype"])
    check_name(name, "export name")
    if (exports_root(workspace) / name).exists():
        raise StudioError("export.exists", name=quote(name))
    from pipelines.hosting import check_disk
    needed = _bytes_needed(source, format, options["dtype"])
    check_disk(workspace, needed, "hosting.quota_export")   # hosted mode: within the user's quota
    exports_root(workspace).mkdir(parents=True, exist_ok=True)
    free = run_files.free_bytes(exports_root(workspace))
    if free < needed + run_files.SPARE_BYTES:
        raise StudioError("export.disk_full", needed=run_files.megabytes(needed), free=run_files.megabytes(free))
    return {"checkpoint": checkpoint, "format": format, "dtype": options["dtype"], "name": name}, []


def _check_options(options) -> dict:
    if options is not None and not isinstance(options, dict):
        raise StudioError("export.options_not_mapping")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise StudioError("export.unknown_option", option=quote(unknown[0]), options=", ".join(OPTIONS))
    options["dtype"] = options.get("dtype") or "float32"
    if options["dtype"] not in DTYPES:
        raise StudioError("export.bad_dtype", dtype=quote(options["dtype"]), dtypes=", ".join(DTYPES))
    if options.get("name") is not None and not isinstance(options["name"], str):
        raise StudioError("export.bad_name", name=quote(options["name"]))
    options["name"] = (options.get("name") or "").strip()
    return options


def default_name(checkpoint: str, format: str, dtype: str = "float32") -> str:
    """my-run/final as gguf-q8_0 → my-run-final-gguf-q8_0, merged in bfloat16 → my-run-final-merged-bfloat16; a
    folder or a Hub id by its last part."""
    stem = checkpoint if not checkpoint.startswith(("/", ".", "~")) else Path(checkpoint).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:60] or "model"
    return f"{stem}-{format}" + (f"-{dtype}" if format == "merged" and dtype != "float32" else "")


def _bytes_needed(source, format: str, dtype: str) -> int:
    """About what the export writes at its largest: the merged weights (in float32 first, for a GGUF)."""
    from transformers import AutoConfig

    from pipelines.models import count_config_parameters, trust_remote_code

    if format == "adapter":
        return run_files.folder_bytes(Path(source.adapters[-1]))
    try:
        parameters = count_config_parameters(AutoConfig.from_pretrained(source.base, trust_remote_code=trust_remote_code()))
    except (OSError, ValueError):
        return 0
    if gguf_type(format):
        return parameters * (4 + 4)   # the float32 merge it converts, and at most as much again for the GGUF
    return parameters * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


# ---- the job's side: the process that writes and checks the export

STEPS = {"merged": ("reference", "merge", "verify", "card"), "adapter": ("reference", "copy", "verify", "card"),
         "gguf": ("reference", "merge", "convert", "verify", "modelfile", "card")}
COLUMNS = ("step", "detail", "seconds")


class _Steps:
    """The job's Progress, a row per step stamped with the seconds it took: where an export's time goes."""

    def __init__(self, progress):
        self.progress, self.since = progress, time.perf_counter()

    def done(self, step: str, detail: str) -> None:
        now = time.perf_counter()
        self.progress.rows([{"step": step, "detail": detail, "seconds": round(now - self.since, 1)}])
        self.since = now


def run_export(workspace: Path, spec: dict, progress) -> dict:
    import torch

    from pipelines.model_card import usage_text, write_card
    from pipelines.models import load_model, load_tokenizer, resolve_model

    format, name = spec["format"], spec["name"]
    kind = "gguf" if gguf_type(format) else format
    progress.total(len(STEPS[kind]))
    steps = _Steps(progress)
    source = resolve_model(spec["checkpoint"], workspace)
    root = exports_root(workspace)
    final, staging = root / name, root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        tokenizer = load_tokenizer(source)
        reference = load_model(source, dtype=torch.float32, merge_adapters=False).eval()
        expected = _reference_replies(reference, tokenizer)
        steps.done("reference", f"{len(expected)} greedy replies")
        extra: dict = {}
        if kind == "adapter":
            _copy_adapter(source, tokenizer, staging)
            steps.done("copy", "adapter_model.safetensors")
            verified = _check(_load_adapter(source, staging), tokenizer, expected, TOLERANCE["float32"])
            usage = usage_text("adapter", name)
        else:
            target = staging / ".merged" if kind == "gguf" else staging
            _save_merged(source, tokenizer, target, torch.float32 if kind == "gguf" else getattr(torch, spec["dtype"]))
            steps.done("merge", f"{len(source.adapters)} LoRA, {spec['dtype'] if kind == 'merged' else 'float32'}")
            del reference
            if kind == "merged":
                verified = _check(_load_folder(staging), tokenizer, expected, TOLERANCE[spec["dtype"]])
                usage = usage_text("merged", name)
            else:
                extra, verified, usage = _gguf(target, staging, name, gguf_type(format), tokenizer, expected, steps)
        steps.done("verify", _verified_line(verified))
        if not verified["ok"]:
            raise StudioError("export.not_verified", format=format, agreement=f"{verified['token_agreement']:.0%}",
                              tolerance=f"{verified['tolerance']:.0%}")
        write_card(workspace, spec["checkpoint"], staging, kind, name, usage)
        steps.done("card", "README.md")
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
    return {"path": str(final.relative_to(Path(workspace))), "files": files, "bytes": run_files.folder_bytes(final),
            "format": format, "dtype": spec["dtype"] if kind == "merged" else None, "verified": verified,
            "commands": local_commands(final, extra.get("gguf"), kind), **extra}


def local_commands(folder: Path, gguf_name: str | None, kind: str) -> str:
    """How to use the export where it lies: Ollama and llama.cpp for a GGUF file, transformers (or PEFT) else."""
    if gguf_name:
        return (f"ollama create {folder.name} -f {folder / 'Modelfile'}\nollama run {folder.name}\n"
                f"llama-cli -m {folder / gguf_name} -cnv")
    if kind == "adapter":
        return f"from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained(\"{folder}\")"
    return f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"{folder}\")"


def _gguf(merged: Path, staging: Path, name: str, kind: str, tokenizer, expected: list, steps: _Steps):
    from pipelines.gguf_export import convert
    from pipelines.model_card import usage_text
    from pipelines.ollama import modelfile

    gguf_name = f"{name}.gguf"
    convert(merged, staging / gguf_name, kind, staging.parent / f".{name}.convert.log")
    steps.done("convert", gguf_name)
    shutil.rmtree(merged)
    verified = _check(_load_gguf(staging, gguf_name), tokenizer, expected, TOLERANCE[kind])
    verified["tokenizer_same"] = _gguf_tokenizer_same(staging, gguf_name, tokenizer)
    verified["ok"] = verified["ok"] and verified["tokenizer_same"]
    llama = _check_with_llama_cpp(staging / gguf_name, tokenizer, expected)
    if llama is not None:
        verified["llama_cpp"] = llama
    text, has_template = modelfile(gguf_name, tokenizer)
    (staging / "Modelfile").write_text(text, encoding="utf-8")
    steps.done("modelfile", "TEMPLATE" if has_template else "no TEMPLATE")
    warnings = [] if has_template else [Message("export.modelfile_without_template")]
    (staging.parent / f".{name}.convert.log").unlink(missing_ok=True)
    return {"gguf": gguf_name, "modelfile_template": has_template, "warnings": warnings}, verified, \
        usage_text("gguf", name, gguf_name)


def _save_merged(source, tokenizer, folder: Path, dtype) -> None:
    import torch

    from pipelines.models import load_model

    model = load_model(source, dtype=torch.float32, merge_adapters=True).eval()
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)


def _copy_adapter(source, tokenizer, folder: Path) -> None:
    adapter = Path(source.adapters[-1])
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(adapter / file, folder / file)
    tokenizer.save_pretrained(folder)


def _load_folder(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()


def _load_adapter(source, folder: Path):
    """The exported adapter on the checkpoint's base (the adapters before it merged, of which there are none)."""
    import torch
    from peft import PeftModel

    from pipelines.models import ModelSource, load_model

    base = load_model(ModelSource(source.spec, source.kind, source.base), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(folder)).eval()


def _load_gguf(folder: Path, gguf_name: str):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32).eval()


def _gguf_tokenizer_same(folder: Path, gguf_name: str, tokenizer) -> bool:
    """The vocabulary the GGUF carries encodes text as the model's own tokenizer does."""
    from transformers import AutoTokenizer

    carried = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    return carried(TOKENIZER_CHECK)["input_ids"] == tokenizer(TOKENIZER_CHECK)["input_ids"]


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]


def _reference_replies(model, tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, greedy reply ids) of the checkpoint as the studio runs it, for each verification prompt."""
    return [(ids, _greedy(model, tokenizer, ids)) for ids in (_prompt_ids(tokenizer, p) for p in VERIFY_PROMPTS)]


def _greedy(model, tokenizer, ids: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        output = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                do_sample=False, max_new_tokens=VERIFY_TOKENS,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return output[0, len(ids):].tolist()


def _check(model, tokenizer, expected: list, tolerance: float) -> dict:
    """Greedy replies and teacher-forced agreement of `model` with the reference's."""
    import torch

    same, agreeing, counted = 0, 0, 0
    for prompt, reply in expected:
        same += _greedy(model, tokenizer, prompt) == reply
        if not reply:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([prompt + reply])).logits[0]
        ranked_first = logits[len(prompt) - 1: len(prompt) + len(reply) - 1].argmax(-1).tolist()
        agreeing += sum(a == b for a, b in zip(ranked_first, reply))
        counted += len(reply)
    agreement = agreeing / counted if counted else 1.0
    return {"same_replies": same, "prompts": len(expected), "token_agreement": round(agreement, 4),
            "tolerance": tolerance, "ok": agreement >= tolerance}


def _check_with_llama_cpp(path: Path, tokenizer, expected: list) -> dict | None:
    """Where llama-cpp-python is installed: the GGUF in llama.cpp itself, greedy, against the reference replies."""
    from pipelines.gguf_export import quantizer_available

    if not quantizer_available():
        return None
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, verbose=False, seed=0)
    same = 0
    for prompt, reply in expected:
        text = tokenizer.decode(prompt)
        answer = llm.create_completion(text, max_tokens=VERIFY_TOKENS, temperature=0.0, top_k=1)["choices"][0]["text"]
        same += answer.strip() == tokenizer.decode(reply, skip_special_tokens=True).strip()
    return {"same_replies": same, "prompts": len(expected)}


def _verified_line(verified: dict) -> str:
    return f"{verified['same_replies']}/{verified['prompts']} replies, {verified['token_agreement']:.1%} tokens"


def list_exports(workspace: Path) -> list[dict]:
    """The finished exports, newest first: name, path (relative to the workspace), files, bytes."""
    root = exports_root(workspace)
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "datasets"),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    return [{"name": p.name, "path": str(p.relative_to(Path(workspace))), "bytes": run_files.folder_bytes(p),
             "files": sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file())} for p in folders]
