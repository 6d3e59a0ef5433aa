"""The review page end to end in a real headless browser (Chromium driven by Playwright).

On a small fitted synthetic session: the page loads, a frame shows all its views, the reject
key marks the frame, review.json holds the decision and a following export leaves that frame
out. Skipped, saying why, only where Playwright or a Chromium is missing (``scripts/setup.sh``
installs both).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from handanno.annotate.export_freihand import export_labels
from handanno.data.freihand_io import read_freihand
from handanno.data.review_io import read_review
from handanno.review.app import create_app, make_review_server

from .conftest import CAMERAS

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e .[test])")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1400, "height": 900}
READY = "body[data-ready='1']"


def _ready(frame: str) -> str:
    """The selector that matches once ``frame`` is shown with every view drawn."""
    return f"body[data-frame='{frame}'][data-ready='1']"
TIMEOUT_MS = 30_000  # a busy 2-core machine; the page is ready in well under a second when idle


def _chromium() -> str:
    for name in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if name and Path(name).is_file():
            return name
    pytest.skip("no Chromium found (/usr/bin/chromium, or chromium on PATH): scripts/setup.sh installs Debian's")


class Served:
    """The review page of one session served on a free local port from a thread."""

    def __init__(self, root: Path) -> None:
        self.server = make_review_server(create_app(root), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = _chromium()
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory(prefix="handanno-chromium-") as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
        )
        yield ctx
        ctx.close()


def _open(browser, served: Served):
    """A new page on the served session; returns it and the lists its errors and outside requests go to."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(served.url) or r.url.startswith("data:")
            else problems.append(f"request outside the server: {r.url}"))  # fmt: skip
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served.url)
    page.wait_for_selector(READY, state="attached")
    return page, problems


def test_reject_key_writes_review_json_and_export_leaves_the_frame_out(browser, fitted_dir, copy_session):
    root = copy_session(fitted_dir)
    served = Served(root)
    try:
        page, problems = _open(browser, served)
        assert page.locator("#frame-list li").count() == 3
        # a frame shows all its views, each drawn from its image
        views = page.locator("#views .view")
        assert views.count() == len(CAMERAS)
        assert [views.nth(i).get_attribute("data-camera") for i in range(views.count())] == list(CAMERAS)
        assert all(t == "" for t in page.locator("#views .view-error").all_text_contents())
        assert page.locator("#view3d").is_visible()
        # to the next frame with the keyboard, then the reject key
        page.keyboard.press("j")
        page.wait_for_selector(_ready("000001"), state="attached")
        page.keyboard.press("r")
        page.wait_for_selector("#frame-list li[data-frame='000001'][data-status='reviewer-rejected']")
        assert read_review(root).get("000001").decision == "reject"
        # the page moved on to the next frame; ignore one of its views with its button
        page.wait_for_selector(_ready("000002"), state="attached")
        page.locator("#views .view[data-camera='cam2'] button.ignore").click()
        page.wait_for_selector("#views .view.ignored[data-camera='cam2']")
        assert read_review(root).get("000002").ignored_views == ("cam2",)
        assert page.locator("#frame-list li[data-frame='000000']").get_attribute("data-status") == "accepted"
        assert not problems, problems
        page.close()
    finally:
        served.close()
    export_labels(root, progress=False)
    frames = {e["frame"] for e in read_freihand(root / "labels").index}
    assert frames == {"000000", "000002"}


def test_session_without_fits_and_a_corrupt_image(browser, synth_dir, copy_session):
    root = copy_session(synth_dir)
    bad = root / "images" / "cam3" / "000000.png"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    served = Served(root)
    try:
        page, problems = _open(browser, served)
        assert "No fits yet" in page.locator("#banner").inner_text()
        assert page.locator("#views .view").count() == len(CAMERAS)  # images and detections still shown
        errors = page.locator("#views .view-error").all_text_contents()
        assert errors[:3] == ["", "", ""] and "000000.png" in errors[3]
        assert page.locator("#frame-status").get_attribute("data-status") == "not-fitted"
        page.keyboard.press("j")  # the page keeps working
        page.wait_for_selector(_ready("000001"), state="attached")
        assert page.locator("#views .view-error").all_text_contents() == ["", "", "", ""]
        assert not problems, problems
        page.close()
    finally:
        served.close()
