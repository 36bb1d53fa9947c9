"""A merged model folder written as GGUF for llama.cpp, Ollama and LM Studio, by llama.cpp's own converter.

The converter is `convert_hf_to_gguf.py` (with its `conversion/` package and its `gguf-py`) from the llama.cpp
repository: the reference every GGUF reader is tested against, and the only one that keeps up with new
architectures and tokenizers. llama.cpp publishes it in no Python package of its own, so we take it, pinned, from
the source distribution of `llama-cpp-python` on PyPI, which vendors llama.cpp whole: that one archive, checked
against its hash, with only the converter's Python files extracted into the cache, once. Nothing in it is built.
A user with a llama.cpp checkout can point ALIGNMENT_STUDIO_LLAMA_CPP at it instead.

The converter writes f32, f16, bf16 and q8_0. Smaller k-quants (q4_K_M) need llama.cpp's C++ quantizer, which
`llama-cpp-python` exposes when it is installed (`pip install llama-cpp-python`): then q4_K_M is offered too.

It runs as a child process (an argument list, never a shell string), in the export job's own process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from pipelines.errors import StudioError, shorten
from pipelines.paths import cache_dir, file_lock

SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
LLAMA_CPP_ENV = "ALIGNMENT_STUDIO_LLAMA_CPP"   # a llama.cpp checkout whose converter to use instead
CONVERTER_TYPES = ("f16", "q8_0", "bf16", "f32")   # what convert_hf_to_gguf.py writes itself
QUANTIZER_TYPES = ("q4_K_M",)                      # what llama.cpp's quantizer makes from the f16 file
CONVERT_TIMEOUT_S = 3600


def gguf_types() -> tuple[str, ...]:
    """The GGUF types this machine can write: the converter's always, the quantizer's with llama-cpp-python."""
    return CONVERTER_TYPES + (QUANTIZER_TYPES if quantizer_available() else ())


def quantizer_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("llama_cpp") is not None


def converter_dir(progress=print) -> Path:
    """The folder holding convert_hf_to_gguf.py: the user's llama.cpp checkout, or ours in the cache."""
    if os.environ.get(LLAMA_CPP_ENV):
        folder = Path(os.environ[LLAMA_CPP_ENV]).expanduser()
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise StudioError("gguf.checkout_without_converter", path=str(folder), env=LLAMA_CPP_ENV)
        return folder
    target = cache_dir() / "llama.cpp-converter" / SDIST_NAME.removesuffix(".tar.gz")
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with file_lock(cache_dir() / ".llama.cpp-converter.lock"):
        if not (target / "convert_hf_to_gguf.py").is_file():   # another process fetched it while we waited
            _fetch_converter(target, progress)
    return target


def _fetch_converter(target: Path, progress) -> None:
    downloads = cache_dir() / "wheels"
    archive = downloads / SDIST_NAME
    if not archive.is_file():
        progress(f"Downloading llama.cpp's GGUF converter ({SDIST_REQUIREMENT}'s source, 77 MB, once)…")
        downloads.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                   "--disable-pip-version-check", SDIST_REQUIREMENT, "-d", str(downloads)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not archive.is_file():
            last = ((result.stderr or result.stdout).strip().splitlines() or [""])[-1]
            raise StudioError("gguf.no_download", package=SDIST_REQUIREMENT, problem=shorten(last), env=LLAMA_CPP_ENV)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        archive.unlink()
        raise StudioError("gguf.bad_digest", archive=SDIST_NAME, digest=digest[:12])
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.isfile() and m.name.startswith(VENDORED)
                   and m.name[len(VENDORED):].startswith(CONVERTER_FILES)]
        for member in members:
            member.name = member.name[len(VENDORED):]
        sdist.extractall(staging, members=members, filter="data")   # regular files only, inside staging
    os.replace(staging, target)


def convert(model_dir: Path, outfile: Path, gguf_type: str, log: Path) -> None:
    """Write `model_dir` (a merged transformers folder) as one GGUF file of `gguf_type`; the converter's output goes
    to `log`, its last line into the sentence if it fails."""
    if gguf_type in QUANTIZER_TYPES:
        f16 = outfile.with_name(outfile.stem + ".f16-for-quantizing.gguf")
        try:
            convert(model_dir, f16, "f16", log)
            _quantize(f16, outfile, gguf_type)
        finally:
            f16.unlink(missing_ok=True)
        return
    folder = converter_dir()
    command = [sys.executable, str(folder / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(outfile),
               "--outtype", gguf_type]
    env = {**os.environ, "PYTHONPATH": str(folder / "gguf-py")}   # the converter with the gguf-py it was made with
    env.pop("NO_LOCAL_GGUF", None)
    with open(log, "a", encoding="utf-8") as output:
        try:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env, timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StudioError("gguf.timed_out", minutes=CONVERT_TIMEOUT_S // 60) from None
    if result.returncode != 0 or not outfile.is_file():
        raise StudioError("gguf.convert_failed", problem=_last_line(log), log=str(log))


def _quantize(source: Path, target: Path, gguf_type: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0 or not target.is_file():
        raise StudioError("gguf.quantize_failed", type=gguf_type)


def _last_line(log: Path) -> str:
    """The converter's own last words (its error), short."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return shorten(lines[-1] if lines else "no output")
