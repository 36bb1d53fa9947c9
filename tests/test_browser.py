"""What a person sees: a real Chromium drives the app (start a run from the form, watch it finish, Korean UI)."""

import json
import shutil
import socket

import pytest

from tests.conftest import TINY_ROWS, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from studio.app import launch_app

    workspace = tmp_path_factory.mktemp("browser-workspace")
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blocks = launch_app(workspace, port=port, prevent_thread_lock=True)
    blocks.workspace = workspace
    yield blocks
    blocks.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def test_start_a_run_from_the_form_and_watch_it_complete(app, browser, tiny_model):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    start = page.get_by_role("button", name="Start", exact=True)
    start.wait_for(timeout=30000)
    for label, value in (("Model", str(tiny_model)), ("Dataset", "tiny.jsonl")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
    steps = page.get_by_label("Max steps (0 = use epochs)")
    steps.fill("6")
    steps.press("Tab")
    page.wait_for_timeout(500)
    start.click()
    page.get_by_text("✅ completed · 6 / 6").wait_for(timeout=240000)  # generous: CI machines may be busy
    assert page.locator(".js-plotly-plot").count() >= 1, "the loss chart is drawn"
    page.reload()  # the page holds nothing the disk does not: after a refresh the run is still there
    page.get_by_text("✅ completed · 6 / 6").wait_for(timeout=30000)


def test_korean_browsers_get_the_korean_ui(app, browser):
    page = browser.new_page(locale="ko-KR")
    page.goto(app.local_url)
    page.get_by_role("button", name="시작", exact=True).wait_for(timeout=30000)
    assert page.get_by_role("tab", name="채팅").count() == 1
    from pipelines.api import list_runs
    if any(run["status"] == "completed" for run in list_runs(app.workspace)):  # the first test's run
        page.get_by_text("✅ 완료 · 6 / 6").wait_for(timeout=30000)


def test_the_header_language_picker_relabels_every_tab_and_is_remembered(app, browser):
    from pipelines.messages import catalog

    korean_tabs = [catalog("ko")[f"tab.{name}"] for name in ("road", "model", "data", "train", "reward", "chat", "compare", "lens", "export")]
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    assert page.get_by_text("Settings", exact=True).count() == 0, "the studio's picker replaces Gradio's Settings"
    page.get_by_label("한국어").check()
    page.get_by_role("button", name="시작", exact=True).wait_for(timeout=30000)
    assert [tab.inner_text() for tab in page.get_by_role("tab").all()][:len(korean_tabs)] == korean_tabs   # tabs never opened too
    page.get_by_role("tab", name=catalog("ko")["tab.data"]).click()
    page.get_by_role("tab", name=catalog("ko")["data.add"]).wait_for(timeout=10000)
    page.reload()
    page.get_by_role("button", name="시작", exact=True).wait_for(timeout=30000)
    assert page.get_by_label("한국어").is_checked()
    page.get_by_label("English").check()
    page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)


def test_rows_typed_into_the_table_are_checked_and_saved(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("tab", name="Edit as a table").click()
    page.get_by_label("Kind of rows").click()
    page.get_by_role("option", name="preference pairs").click()
    save = page.get_by_role("button", name="Check and save").last
    page.get_by_label("Save as (name)").last.fill("typed")
    for column, text in enumerate(["What is 2+2?", "4", "4"]):
        page.get_by_test_id(f"cell-0-{column}").last.dblclick()
        page.wait_for_timeout(300)
        page.keyboard.type(text)
        page.keyboard.press("Enter")
        page.wait_for_timeout(500)
    save.click()
    page.get_by_text("is identical to chosen").wait_for(timeout=15000)   # the bad row is named, nothing is saved
    assert not (app.workspace / "datasets" / "typed").exists()
    page.get_by_test_id("cell-0-2").last.dblclick()
    page.wait_for_timeout(300)
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    save.click()
    page.get_by_text("typed saved · 1 row · preference pairs").wait_for(timeout=15000)
    row = json.loads((app.workspace / "datasets" / "typed" / "data.jsonl").read_text())
    assert row["chosen"][0]["content"] == "4" and row["rejected"][0]["content"] == "5"


def shown(page, label: str):
    """The input labelled `label` on the tab in view (a tab visited once stays in the page, hidden)."""
    return page.locator(f"input[aria-label='{label}']:visible")


def upload_on_the_data_tab(page, path, name: str) -> None:
    """Save the file at `path` as dataset `name` through the Data tab, as a visitor does (TINY_ROWS: 4 rows)."""
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("tab", name="Add data").click()
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.get_by_label("Save as (name; empty: the file's or Hub dataset's name)").fill(name)
    page.get_by_role("button", name="Check and save").first.click()
    page.get_by_text(f"{name} saved · 4 rows · instructions · read as Alpaca").wait_for(timeout=15000)


def test_a_dataset_saved_on_the_data_tab_reaches_train_only_when_asked(app, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    upload_on_the_data_tab(page, write_jsonl(tmp_path / "fresh.jsonl", TINY_ROWS), "fresh-upload")
    page.get_by_role("tab", name="Train").click()
    dataset = shown(page, "Dataset")
    page.wait_for_timeout(1000)
    assert dataset.input_value() == "alpaca-en-sample", "saving a dataset elsewhere does not change the run's"
    dataset.click()   # the list offers what was saved after the page loaded
    page.get_by_role("option", name="fresh-upload").wait_for(timeout=10000)
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("button", name="Use in Train").click()
    page.get_by_text("The Train tab will now train on fresh-upload.").wait_for(timeout=10000)
    page.get_by_role("tab", name="Train").click()
    assert shown(page, "Dataset").input_value() == "fresh-upload"


def test_a_model_tried_on_the_model_tab_stays_off_the_train_form_until_asked(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    before = shown(page, "Model").input_value()
    page.get_by_role("tab", name="Model", exact=True).click()
    picker = shown(page, "Model")
    picker.fill("no-such-org/no-such-model")
    picker.press("Enter")
    page.wait_for_timeout(1000)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_timeout(500)
    assert shown(page, "Model").input_value() == before
    page.get_by_role("tab", name="Model", exact=True).click()
    page.get_by_role("button", name="Use in Train").click()
    page.get_by_text("The Train tab will now train no-such-org/no-such-model.").wait_for(timeout=10000)
    page.get_by_role("tab", name="Train").click()
    assert shown(page, "Model").input_value() == "no-such-org/no-such-model"


def finished_run(workspace, run_id: str):
    """A completed DPO run of 6 steps as the trainer leaves it on disk: status, config and metrics (no weights)."""
    import time

    from pipelines import run_files

    run = workspace / "runs" / run_id
    (run / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: {run_id}\nstage: dpo\nmodel: smollm2-135m-instruct\ndataset: hh-en-sample\n")
    (run / "train.log").write_text("done\n")
    now = time.time()
    write_jsonl(run / "metrics.jsonl", [{"step": step, "time": now, "split": "train", "loss": 0.7 / step,
                                         "rewards/chosen": step / 10, "rewards/rejected": -step / 10,
                                         "rewards/accuracies": 0.5 + step / 20} for step in range(1, 7)])
    run_files.write_json_atomic(run / "status.json", {"status": "completed", "step": 6, "max_steps": 6, "eta_s": 0,
                                                      "created_at": now, "started_at": now, "ended_at": now,
                                                      "last_metrics": {"loss": 0.12, "step": 6}})


def test_a_korean_browser_gets_korean_errors_charts_and_run_table(app, browser):
    from pipelines.messages import catalog, render

    korean = catalog("ko")
    finished_run(app.workspace, "zz-korean-chart")   # the newest run: the Train tab shows it first
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ko-KR")
    page.goto(app.local_url)
    page.get_by_role("button", name="시작", exact=True).wait_for(timeout=30000)
    chart = page.locator(".js-plotly-plot")
    for title in ("chart.loss", "chart.rewards", "chart.accuracy", "chart.step"):
        chart.get_by_text(korean[title], exact=True).first.wait_for(timeout=30000)
    assert chart.locator("g.legend, g.legend2, g.legend3").count() == 3, "each panel has its own legend"
    table = page.locator(".reading-table, table").filter(has_text="zz-korean-chart").first
    for header in ("train.col.run_id", "train.col.status", "train.col.stage", "train.col.checkpoints"):
        assert table.get_by_text(korean[header], exact=True).count() >= 1, header
    assert table.get_by_text(korean["status.completed"], exact=True).count() >= 1
    rate = page.get_by_label(korean["train.learning_rate"], exact=True)   # 0 passes the box's minimum, not the config's
    rate.fill("0")
    rate.press("Tab")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="시작", exact=True).click()
    page.get_by_text(render("config.not_above", "ko", path="train.learning_rate", minimum=0, value="0.0")).wait_for(timeout=15000)
