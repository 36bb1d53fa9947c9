"""User-written Python (reward rules, scorers) runs in a worker process with a time limit, never in the caller: a
file that exits, hangs or raises is one sentence naming it and the caller lives on; nor may an upload be run."""

import gc
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pipelines import api
from pipelines.errors import StudioError
from pipelines.rl import rule_worker
from pipelines.rl.rewards import check_reward, load_reward_function, parse_reward
from pipelines.rl.rule_worker import RuleWorker
from tests.conftest import wait_for, write_jsonl
from tests.test_ppo import ppo_config

EXITS = "import os\n\ndef reward(prompts, completions):\n    print('giving up')\n    os._exit(7)\n"
LENGTHS = "def reward(prompts, completions):\n    return [float(len(c)) for c in completions]\n"


def rule(workspace, source: str, name: str = "rules.py"):
    path = workspace / name
    path.write_text(source, encoding="utf-8")
    return path


def test_a_rule_that_exits_mid_evaluate_is_one_sentence_and_the_caller_lives_on(tiny_model, workspace):
    # Passes the check at the start of evaluate (a process of its own) and its scorer's first call, then exits:
    # the crash comes in the middle of scoring, from the process evaluate keeps for every prompt.
    rule(workspace, "import os\ncalls = []\n\ndef reward(prompts, completions):\n    calls.append(1)\n"
                    "    if len(calls) > 1:\n        os._exit(7)\n    return [0.0] * len(completions)\n")
    with pytest.raises(StudioError) as error:
        api.evaluate(workspace, [str(tiny_model)], ["Say hi"], "rules.py", {"max_new_tokens": 4})
    assert str(error.value).startswith("rules.py stopped the scorer process: it exited with code 7")
    rule(workspace, LENGTHS)
    report = api.evaluate(workspace, [str(tiny_model)], ["Say hi"], "rules.py", {"max_new_tokens": 4})
    assert report["rows"][0]["score"] == len(report["rows"][0]["answer"]), "the caller still works"


def test_a_rule_that_exits_is_refused_at_start_and_quotes_its_last_words(tiny_model, workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(16)])
    rule(workspace, EXITS)
    with pytest.raises(StudioError, match=r"^rules.py stopped the scorer process: it exited with code 7 "
                                          r"\(it printed last: 'giving up'\)"):
        api.prepare_run(workspace, ppo_config(tiny_model))
    assert not (workspace / "runs").exists() or not list((workspace / "runs").iterdir())


def test_a_rule_returning_one_score_for_two_answers_is_refused_at_start(workspace):
    rule(workspace, "def reward(prompts, completions):\n    return [1.0]\n")
    with pytest.raises(StudioError, match="returned 1 scores for 2 completions"):
        check_reward("rules.py", workspace)


def workers() -> list[psutil.Process]:
    """This process's live rule workers (a zombie would count: it is not reaped)."""
    return [c for c in psutil.Process().children() if "pipelines.rl.rule_worker" in " ".join(c.cmdline())]


@pytest.mark.parametrize("source, limit", [
    ("import time\n\ndef reward(prompts, completions):\n    print('thinking')\n    time.sleep(3600)\n", "CALL_SECONDS"),
    ("while True:\n    pass\n", "START_SECONDS"),
])
def test_a_rule_that_hangs_is_stopped_after_the_limit(workspace, monkeypatch, source, limit):
    monkeypatch.setattr(rule_worker, limit, 1)
    with pytest.raises(StudioError, match=r"^rules.py did not answer within 1 s; the scorer process was stopped"):
        load_reward_function(rule(workspace, source))
    assert not workers(), "killed and reaped"


def test_processes_a_rule_started_end_with_its_worker(workspace, tmp_path, monkeypatch):
    marker = tmp_path / "grandchild.pid"
    monkeypatch.setattr(rule_worker, "CALL_SECONDS", 1)
    rule(workspace, f"import subprocess, time\n\ndef reward(prompts, completions):\n"
                    f"    child = subprocess.Popen(['sleep', '300'])\n    open({str(marker)!r}, 'w').write(str(child.pid))\n"
                    f"    time.sleep(3600)\n")
    with pytest.raises(StudioError, match="did not answer within 1 s"):
        load_reward_function(workspace / "rules.py")
    grandchild = int(marker.read_text())
    deadline = time.time() + 5
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
        assert time.time() < deadline, "the rule's own child outlived its worker"
        time.sleep(0.1)


def test_a_rule_that_raises_is_its_exception_in_one_line_and_its_process_serves_on(workspace):
    source = "def reward(prompts, completions):\n    if len(completions) == 3:\n        1 / 0\n    return [0.0] * len(completions)\n"
    with load_reward_function(rule(workspace, source)) as worker:
        with pytest.raises(StudioError) as error:
            worker(["a"] * 3, ["b"] * 3)
        assert str(error.value) == "rules.py's reward raised ZeroDivisionError: division by zero."
        assert worker(["a"], ["b"]) == [0.0]


def test_a_good_rule_scores_through_one_worker_and_its_prints_do_not_break_the_replies(workspace):
    source = ("import os, sys\nprint('loading', flush=True)\nos.write(1, b'straight to fd 1\\n')\n\n"
              "def reward(prompts, completions):\n    print('scoring', completions)\n    sys.stdout.write('{\"scores\": [9]}')\n"
              "    return [len(p) + len(c) for p, c in zip(prompts, completions)]\n")
    worker = load_reward_function(rule(workspace, source))
    process = worker.process
    assert worker(["ab", "c"], ["xyz", ""]) == [5.0, 1.0]
    assert worker(["a"] * 200, ["bb"] * 200) == [3.0] * 200
    assert worker.process is process and process.poll() is None, "one process for every call"
    wait_for(lambda: any("scoring" in line for line in worker.output), timeout=10,
             what="what it printed to be passed on, not lost")   # it comes on stderr, read by a thread
    del worker, process
    gc.collect()
    assert not workers(), "an unclosed worker is stopped and reaped once nobody holds it"


def test_a_rule_file_that_crashes_quotes_at_most_80_characters_of_its_output(workspace):
    source = "import os\nprint('x' * 500, flush=True)\nos._exit(3)\n"
    with pytest.raises(StudioError) as error:
        RuleWorker(rule(workspace, source))
    assert f"'{'x' * 80}'" in str(error.value) and "x" * 81 not in str(error.value)
    assert "exited with code 3" in str(error.value)


def test_the_upload_folder_is_gradios(tmp_path, monkeypatch):
    from gradio.utils import get_upload_folder

    from pipelines.paths import upload_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert upload_folder() == Path(get_upload_folder()).resolve()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    assert upload_folder() == Path(get_upload_folder()).resolve()


def test_an_uploaded_file_is_never_a_reward_rule(workspace, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(workspace / "uploads"))
    (workspace / "uploads").mkdir()
    rule(workspace, LENGTHS, "uploads/evil.py")
    with pytest.raises(StudioError, match="lies in the folder uploads go to"):
        parse_reward("uploads/evil.py", workspace)
    assert parse_reward("rules.py", workspace, file_must_exist=False).function_file == workspace / "rules.py"


def test_the_app_refuses_a_workspace_that_holds_the_upload_folder_or_lies_in_it(tmp_path, monkeypatch, capsys):
    import launch
    from studio.app import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "workspace" / "uploads"))
    with pytest.raises(StudioError, match="lie one inside the other"):
        build_app(tmp_path / "workspace")
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # as `--workspace /tmp`, beside gradio's /tmp/gradio
    with pytest.raises(SystemExit) as exit_code:
        launch.parse_args(["--workspace", str(tmp_path)])
    assert exit_code.value.code == 2 and "lie one inside the other" in capsys.readouterr().err
    assert launch.parse_args(["--workspace", str(tmp_path.parent / "apart")]).workspace, "a workspace beside it is fine"
