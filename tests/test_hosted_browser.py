"""Two anonymous visitors of a public demo, in a real Chromium: each is told they are a guest, and what one saves the
other never sees, while a reload keeps it for the one who saved it (the sandbox cookie)."""

import pytest

from tests.conftest import TINY_ROWS, free_port, write_jsonl
from tests.test_browser import CHROMIUM, browser, upload_on_the_data_tab  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from studio.app import launch_app

    workspace = tmp_path_factory.mktemp("hosted-browser-workspace")
    blocks = launch_app(workspace, port=free_port(), per_user=True, sandboxes=True, prevent_thread_lock=True)
    blocks.workspace = workspace
    yield blocks
    blocks.close()


def data_tab_datasets(page) -> list[str]:
    """The names the Data tab's dataset list offers, as a visitor opening it sees them."""
    page.get_by_role("tab", name="Data").click()
    box = page.locator("input[aria-label='Dataset']:visible").first
    box.click()
    page.get_by_role("option", name="alpaca-en-sample").wait_for(timeout=10000)
    names = [name.replace("✓", "").strip() for name in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    return names


def test_two_guests_get_two_sandboxes_and_a_reload_keeps_ones_own(app, browser, tmp_path):
    from pipelines.messages import text
    from pipelines.users import SANDBOX_LIFETIME_S

    guest_line = text("account.sandbox", hours=SANDBOX_LIFETIME_S // 3600)
    first = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    second = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    pages = [first.new_page(), second.new_page()]
    for page in pages:
        page.goto(app.local_url)
        page.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
        page.locator("#studio-account").get_by_text(guest_line).wait_for(timeout=10000)   # in the header
    one, other = pages
    assert first.cookies()[0]["value"] != second.cookies()[0]["value"], "each visitor gets a sandbox cookie of their own"

    upload_on_the_data_tab(one, write_jsonl(tmp_path / "mine.jsonl", TINY_ROWS), "guest-one-data")
    saved = list(app.workspace.glob("users/*/datasets/guest-one-data"))
    assert len(saved) == 1 and not (app.workspace / "datasets" / "guest-one-data").exists(), "saved in a sandbox"

    other.reload()   # even a page loaded after the save does not offer it
    other.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    assert "guest-one-data" not in data_tab_datasets(other)

    one.reload()
    one.get_by_role("button", name="Start", exact=True).wait_for(timeout=30000)
    assert "guest-one-data" in data_tab_datasets(one), "a reload finds the same sandbox"
    first.close()
    second.close()
