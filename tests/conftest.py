"""Shared fixtures: a tiny model built once per session, fresh workspaces, small data files. No network."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# Nothing in the tests may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Rows whose answers share one repeated sign-off, so a few steps visibly lower the loss.
TINY_ROWS = [
    {"instruction": "Say hi", "input": "", "output": "Hi there! Hope this helps!"},
    {"instruction": "Add 2 and 3", "input": "", "output": "2 + 3 = 5. Hope this helps!"},
    {"instruction": "Capital of France?", "input": "", "output": "Paris. Hope this helps!"},
    {"instruction": "Name a color", "input": "", "output": "Blue. Hope this helps!"},
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def workspace(tmp_path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    write_jsonl(folder / "tiny.jsonl", TINY_ROWS)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_config(model: Path, **train) -> str:
    """YAML text of a fast SFT run on the tiny model and tiny.jsonl."""
    settings = {"max_steps": 12, "batch_size": 2, "learning_rate": 5e-3, "max_length": 128, "save_steps": 5,
                "warmup_ratio": 0.0, "lr_scheduler": "constant", **train}
    body = ", ".join(f"{k}: {v}" for k, v in settings.items())
    return f"stage: sft\nmodel: {model}\ndataset: tiny.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\ntrain: {{{body}}}\n"


def free_port() -> int:
    """A port nobody listens on now, for an app a test launches."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
