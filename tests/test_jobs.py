"""Long jobs (pipelines/jobs.py) leave the server: each runs in a process of its own, writes its progress and results
as it goes, can be cancelled, and a killed one reads true on the next look. The blocking endpoints keep their shapes."""

import csv
import os
import shutil
import signal
import socket

import psutil
import pytest

from pipelines import api
from pipelines.errors import StudioError
from tests.conftest import wait_for, write_jsonl
from tests.test_preference_stages import PAIRS, stage_config, trained

PROMPTS = [f"Question number {i}?" for i in range(6)]


def slow_rule(workspace, seconds: float) -> str:
    """A scorer that takes `seconds` per prompt, so a job is seen half-way."""
    (workspace / "slow.py").write_text("import time\n\ndef reward(prompts, completions):\n"
                                       f"    time.sleep({seconds})\n    return [float(len(c)) for c in completions]\n")
    return "slow.py"


def evaluation(tiny_model, scorer: str, prompts=PROMPTS) -> dict:
    return {"checkpoints": [str(tiny_model)], "prompts": prompts, "scorer": scorer, "settings": {"max_new_tokens": 4}}


def processes_running(path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if str(path) in " ".join(process.info["cmdline"] or []) and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def test_a_job_runs_in_its_own_process_and_writes_progress_and_results_as_it_goes(tiny_model, workspace):
    job_id = api.start_job(workspace, "evaluate", evaluation(tiny_model, slow_rule(workspace, 0.7)))
    half_way = wait_for(lambda: 0 < (s := api.job_status(workspace, job_id))["done"] < s["total"] and s, timeout=120,
                        what="the first rows")
    assert half_way["status"] == "running" and half_way["total"] == len(PROMPTS)
    assert half_way["eta_s"] is not None and half_way["eta_s"] > 0
    job_dir = workspace / "jobs" / job_id
    pid = next(p for p in processes_running(job_dir) if "job" in p.info["cmdline"]).pid
    assert pid != os.getpid() and os.getpgid(pid) == pid, "its own process, leading its own group"
    partial = api.job_results(workspace, job_id)
    assert 0 < len(partial["rows"]) < len(PROMPTS) and partial["summary"] == {}, "rows as they come, a summary at the end"

    wait_for(lambda: api.job_status(workspace, job_id)["status"] != "running", timeout=120, what="the job to end")
    status = api.job_status(workspace, job_id)
    assert status["status"] == "completed" and status["done"] == status["total"] == len(PROMPTS), status
    results = api.job_results(workspace, job_id)
    assert [r["prompt"] for r in results["rows"]] == PROMPTS
    assert all(r["score"] == len(r["answer"]) for r in results["rows"])
    assert set(results["summary"]) == {"means", "win_rates", "prompts", "scorer"}
    with open(job_dir / "results.csv", encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["prompt"] for r in table] == PROMPTS and list(table[0]) == ["prompt", "checkpoint", "score", "answer"]
    assert [j["job_id"] for j in api.list_jobs(workspace, "evaluate")] == [job_id], "reopened later from the folder"
    assert api.list_jobs(workspace, "score_dataset") == []


def test_cancel_stops_the_whole_process_group_and_the_status_says_cancelled(tiny_model, workspace):
    job_id = api.start_job(workspace, "evaluate", evaluation(tiny_model, slow_rule(workspace, 2.0), PROMPTS * 5))
    job_dir = workspace / "jobs" / job_id
    wait_for(lambda: api.job_status(workspace, job_id)["done"] >= 1, timeout=120, what="the first rows")
    assert any("rule_worker" in " ".join(p.info["cmdline"]) for p in processes_running(workspace / "slow.py"))
    status = api.cancel_job(workspace, job_id)
    assert status["status"] == "cancelled" and status["eta_s"] is None
    wait_for(lambda: not processes_running(job_dir) and not processes_running(workspace / "slow.py"), timeout=10,
             what="the job and its scorer to end")
    assert api.job_status(workspace, job_id)["status"] == "cancelled", "the job's own last words do not overwrite it"
    assert api.job_results(workspace, job_id)["rows"], "what was scored before the cancel stays readable"
    assert api.cancel_job(workspace, job_id)["status"] == "cancelled", "cancelling twice changes nothing"
    with pytest.raises(StudioError, match="was cancelled"):
        from pipelines import jobs
        jobs.raise_unless_completed(job_dir, jobs.refresh_status(job_dir))


def test_a_killed_job_reads_interrupted_on_the_next_look(tiny_model, workspace):
    job_id = api.start_job(workspace, "evaluate", evaluation(tiny_model, slow_rule(workspace, 2.0), PROMPTS * 5))
    wait_for(lambda: api.job_status(workspace, job_id)["done"] >= 1, timeout=120, what="the first rows")
    job_dir = workspace / "jobs" / job_id
    pid = next(p for p in processes_running(job_dir) if "job" in p.info["cmdline"]).pid
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not processes_running(job_dir), timeout=10, what="the job to die")
    # Under a loaded CI machine this once still read `running` on the very first look; the next looks must not.
    status = wait_for(lambda: (s := api.job_status(workspace, job_id))["status"] != "running" and s, timeout=15,
                      what=f"the killed job {pid} to read interrupted")
    assert status["status"] == "interrupted" and "ended without finishing" in status["error"], status
    assert api.job_results(workspace, job_id)["rows"], "the rows written before the kill are whole"


def test_a_job_is_refused_in_one_sentence_before_anything_starts(tiny_model, workspace):
    with pytest.raises(StudioError, match="Unknown job kind 'train'"):
        api.start_job(workspace, "train", {})
    with pytest.raises(StudioError, match="mapping of its settings"):
        api.start_job(workspace, "evaluate", [1, 2])
    with pytest.raises(StudioError, match="Pick at least one checkpoint"):
        api.start_job(workspace, "evaluate", {"checkpoints": [], "prompts": PROMPTS, "scorer": "x.py"})
    with pytest.raises(StudioError, match="Pick a reward model first"):
        api.start_job(workspace, "score_dataset", {"dataset": "tiny.jsonl"})
    with pytest.raises(StudioError, match="There is no job 'nope'"):
        api.job_status(workspace, "nope")
    assert not (workspace / "jobs").exists() or not list((workspace / "jobs").iterdir()), "a refusal writes nothing"


def test_the_blocking_endpoints_keep_their_shapes_and_warn_about_training_data(tiny_model, workspace):
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    unseen = [{**p, "prompt": p["prompt"] + " Please."} for p in PAIRS]
    write_jsonl(workspace / "unseen.jsonl", unseen)
    write_jsonl(workspace / "mixed.jsonl", PAIRS[:3] + unseen[3:])
    config = "name: rm\n" + stage_config(tiny_model, "reward", max_steps=2)
    checkpoint = f"{trained(workspace, config).name}/final"

    report = api.evaluate_reward(workspace, checkpoint, "pairs.jsonl")
    assert {"checkpoint", "dataset", "pairs", "accuracy", "margins", "mean_margin", "length_correlation",
            "warnings"} <= set(report)
    assert report["pairs"] == len(report["margins"]) == 8 and 0 <= report["accuracy"] <= 1
    assert any("the data reward run rm trained on" in w for w in report["warnings"]), report["warnings"]
    mixed = api.evaluate_reward(workspace, checkpoint, "mixed.jsonl")["warnings"]
    assert any(w.startswith("3 of these 8 pairs are in 'pairs.jsonl'") for w in mixed), mixed
    assert not [w for w in api.evaluate_reward(workspace, checkpoint, "unseen.jsonl", limit=3)["warnings"]
                if "trained on" in w], "held-out pairs are measured without that warning"

    ranked = api.score_dataset(workspace, checkpoint, "pairs.jsonl", limit=3)
    assert len(ranked) == 6 and set(ranked[0]) == {"prompt", "answer", "side", "reward"}
    assert [r["reward"] for r in ranked] == sorted((r["reward"] for r in ranked), reverse=True)
    job = api.list_jobs(workspace, "score_dataset")[0]
    assert [r["reward"] for r in api.job_results(workspace, job["job_id"])["rows"]] == [r["reward"] for r in ranked], \
        "the job's files hold the ranking, best first"
    with pytest.raises(StudioError, match=r"is not a reward model"):
        api.score_dataset(workspace, str(tiny_model), "pairs.jsonl")
    with pytest.raises(StudioError, match="limit is a whole number"):
        api.score_dataset(workspace, checkpoint, "pairs.jsonl", limit="many")

    from pipelines.messages import speaking
    from studio.tabs import reward

    picker, timer = reward.start_reward_job(workspace, "score_dataset", checkpoint, "pairs.jsonl")
    job_id = picker["value"]
    assert timer.active and job_id in [value for _, value in picker["choices"]]
    wait_for(lambda: api.job_status(workspace, job_id)["status"] == "completed", timeout=120, what="the ranking")
    with speaking("ko"):
        picker, cancel, timer, progress, note, histogram, table, files = reward.show_job(workspace, job_id)
    assert progress.startswith("**완료**") and "16 / 16행" in progress, progress
    assert table["value"]["headers"] == ["보상", "구분", "프롬프트", "답변"] and len(table["value"]["data"]) == 16
    assert {row[1] for row in table["value"]["data"]} == {"선택됨", "거절됨"} and not histogram["visible"]
    assert [path.rsplit(".", 1)[1] for path in files["value"]] == ["csv", "jsonl"]
    assert not cancel["interactive"] and not timer.active, "a finished job is not polled"
    assert (f"{job_id} · 완료", job_id) in picker["choices"], "the picker says how it ended"
    picker, _ = reward.start_reward_job(workspace, "evaluate_reward", checkpoint, "pairs.jsonl")
    wait_for(lambda: api.job_status(workspace, picker["value"])["status"] == "completed", timeout=120, what="the accuracy")
    *_, progress, summary, histogram, table, files = reward.show_job(workspace, picker["value"])
    assert "of 8 pairs scored chosen above rejected" in summary and histogram["value"] is not None
    assert not table["visible"] and files["visible"]
    assert "⚠️ This is measured on 'pairs.jsonl', the data reward run rm trained on" in progress, progress


def test_the_progress_line_says_rows_and_minutes_left_never_a_clock_time():
    from pipelines.messages import speaking
    from studio.job_view import progress_line
    running = {"status": "running", "done": 40, "total": 200, "eta_s": 125.0, "error": None, "warnings": []}
    assert progress_line(running) == "**running** · 40 / 200 rows · 2 min left"
    with speaking("ko"):
        assert progress_line(running) == "**실행 중** · 40 / 200행 · 2분 남음"
    loading = {**running, "status": "running", "total": None, "done": 0, "eta_s": None}
    assert "loading the model" in progress_line(loading)
    failed = {**running, "status": "failed", "error": "It broke.", "eta_s": None}
    assert progress_line(failed) == "**failed** · 40 / 200 rows\n\n❌ It broke."


def test_compare_evaluate_starts_a_job_and_shows_its_table_and_summary(tiny_model, workspace):
    from studio.tabs import compare

    (workspace / "rules.py").write_text("def reward(prompts, completions):\n    return [float(len(c)) for c in completions]\n")
    picker, timer = compare.start_evaluation(workspace, "", "Say hi\n\nName a color\n", "rules.py", [str(tiny_model)], 4)
    assert timer.active
    wait_for(lambda: api.job_status(workspace, picker["value"])["status"] == "completed", timeout=120, what="the evaluation")
    _, cancel, timer, progress, summary, chart, table, files = compare.show_evaluation(workspace, picker["value"])
    assert progress == "**completed** · 2 / 2 rows" and not timer.active
    assert summary.startswith("**2 prompts**, scored by rules.py") and chart is not None
    assert table["headers"] == ["prompt", "checkpoint", "score", "answer"]
    assert [row[0] for row in table["data"]] == ["Say hi", "Name a color"] and len(files) == 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_reward_tab_follows_its_job_in_a_browser_and_reopens_it_after_a_reload(tiny_model, workspace):
    from playwright.sync_api import sync_playwright

    from studio.app import launch_app
    from tests.test_browser import ARGS

    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    trained(workspace, "name: rm\n" + stage_config(tiny_model, "reward", max_steps=2))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = launch_app(workspace, port=port, prevent_thread_lock=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200}, locale="en-US")
            page.goto(app.local_url)
            page.get_by_role("tab", name="Reward model").click()
            dataset = page.locator('input[aria-label="Dataset"]:visible').first
            dataset.fill("pairs.jsonl")
            dataset.press("Enter")
            page.get_by_role("button", name="Rank every answer of the dataset by reward").click()
            page.get_by_text("completed · 16 / 16 rows").wait_for(timeout=120000)
            assert page.get_by_role("button", name="Cancel").is_disabled(), "nothing to cancel once it ended"
            assert page.get_by_text("Hi there. Hope this helps!").count() == 1, "the ranked table"
            page.reload()
            page.get_by_role("tab", name="Reward model").click()
            page.get_by_text("completed · 16 / 16 rows").wait_for(timeout=30000)   # reopened from its folder
            browser.close()
    finally:
        app.close()


def test_only_the_newest_ended_jobs_are_kept_and_an_active_one_never_goes(workspace):
    import json
    import time

    from pipelines import jobs

    root = jobs.jobs_root(workspace)
    for n, state in enumerate(["completed", "running", "failed", "cancelled", "completed"]):
        folder = root / f"job-{n}"
        folder.mkdir()
        (folder / jobs.JOB_FILE).write_text(json.dumps({"kind": "evaluate", "spec": {}}))
        (folder / "status.json").write_text(json.dumps({"status": state, "created_at": time.time() + n}))
    assert sorted(jobs.prune(workspace, keep=2)) == ["job-0", "job-2"]
    assert sorted(p.name for p in root.iterdir()) == ["job-1", "job-3", "job-4"]
