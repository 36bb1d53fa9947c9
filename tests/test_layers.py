"""The layering rules: the UI never imports torch; the pipelines never import gradio."""

import ast
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_importing_the_studio_loads_no_torch():
    code = ("import sys, studio, studio.app; heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]; "
            "print(heavy); raise SystemExit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pipelines_never_import_gradio():
    for path in (REPO_ROOT / "pipelines").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "gradio" for n in names), f"{path} imports gradio"


def test_studio_never_imports_torch_directly():
    for path in (REPO_ROOT / "studio").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for heavy in ("torch", "transformers", "trl", "peft"):
            assert f"import {heavy}" not in text and f"from {heavy}" not in text, f"{path} imports {heavy}"


def test_the_app_is_not_opened_to_other_machines_without_a_password():
    import pytest

    sys.path.insert(0, str(REPO_ROOT))
    from launch import parse_args
    assert parse_args([]).host == "127.0.0.1"
    for argv in (["--share"], ["--host", "0.0.0.0"], ["--auth", "nopassword"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    assert parse_args(["--host", "0.0.0.0", "--auth", "me:secret"]).host == "0.0.0.0"


def test_the_password_can_stay_out_of_ps_and_the_queue_size_is_bounded(tmp_path, monkeypatch):
    import pytest

    sys.path.insert(0, str(REPO_ROOT))
    from launch import parse_args
    secret = tmp_path / "login"
    secret.write_text("me:from-a-file\n", encoding="utf-8")
    assert parse_args(["--host", "0.0.0.0", "--auth-file", str(secret)]).logins == {"me": "from-a-file"}
    monkeypatch.setenv("ALIGNMENT_STUDIO_AUTH", "me:from-the-environment")
    assert parse_args(["--host", "0.0.0.0"]).logins == {"me": "from-the-environment"}
    assert parse_args([]).max_parallel_runs == 1
    for argv in (["--max-parallel-runs", "0"], ["--auth-file", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit):
            parse_args(argv)
