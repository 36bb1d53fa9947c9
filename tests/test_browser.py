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


def test_the_settings_language_switch_turns_the_ui_korean(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    page.get_by_text("Settings").last.click()
    page.get_by_label("Language").click()
    page.get_by_role("option", name="한국어").click()
    page.get_by_role("button", name="시작", exact=True).wait_for(timeout=10000)


def test_rows_typed_into_the_table_are_checked_and_saved(app, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page.goto(app.local_url)
    page.get_by_role("tab", name="Data").click()
    page.get_by_role("tab", name="Edit as a table").click()
    page.get_by_label("Kind of rows").click()
    page.get_by_role("option", name="preference").click()
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
    page.get_by_text("typed · 1 rows · preference").wait_for(timeout=15000)
    row = json.loads((app.workspace / "datasets" / "typed" / "data.jsonl").read_text())
    assert row["chosen"][0]["content"] == "4" and row["rejected"][0]["content"] == "5"
