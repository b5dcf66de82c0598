"""The web view in a real browser: Playwright driving Debian's Chromium against a
real server (waitress on a free port) with the demo ingested.

Follows a story from the river, uses the filters, checks that the progressive
enhancement (local times, copy button) runs under the Content-Security-Policy
without a console error, that pages work with JavaScript off, and that nothing
scrolls sideways on a phone. Screenshots of the river and a story page, at
1280 px and 390 px, go to ``test-artifacts/``.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright``
package (the ``dev`` extra); skipped with the reason otherwise. Never downloads
a browser.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.storage.facade import StoryFilter
from aggregator.web import create_app
from tests.test_web_view import demo_settings, load_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: apt-get install chromium"),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright is not installed: pip install -e '.[dev]'",
    ),
]


class DemoServer:
    def __init__(self, tmp: Path):
        from waitress.server import create_server

        self.settings = demo_settings(tmp, base_url=None)
        self.storage = load_demo(self.settings)
        app = create_app(self.settings, self.storage)
        self.server: Any = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def __enter__(self) -> DemoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        self.thread.join(timeout=10)
        self.storage.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    with DemoServer(tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A page with its console errors collected (CSP violations show up there)."""

    def __init__(self, browser: Any, viewport: dict[str, int], **options: Any):
        self.context = browser.new_context(
            viewport=viewport, timezone_id="Europe/Berlin", locale="en-GB", **options
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def desktop(browser: Any) -> Iterator[Page]:
    page = Page(browser, DESKTOP)
    yield page
    page.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Page]:
    page = Page(browser, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield page
    page.close()


def shoot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000
    return path


def busiest_story(server: DemoServer) -> int:
    return server.storage.find_stories(StoryFilter(), limit=1, order="sources").stories[0].id


def test_follow_a_story_from_the_river(server: DemoServer, desktop: Page) -> None:
    page = desktop.page
    page.goto(server.url + "/?order=sources")
    assert page.title() == "Latest stories · aggregator"
    first = page.locator("ol.stories h2 a").first
    headline = first.inner_text()
    # relative times keep their text; the tooltip gets the reader's zone (Berlin: CET in November)
    when = page.locator("ol.stories .when").first
    assert re.search(r"\bago\b|just now", when.inner_text())
    assert "UTC" not in (when.get_attribute("title") or "UTC")
    assert page.locator("html").get_attribute("data-time-zone") == "Europe/Berlin"
    shoot(page, "river-desktop.png", full_page=False)  # the first screenful; the river is long

    first.click()
    page.wait_for_url(re.compile(r"/stories/\d+$"))
    assert page.locator("h1").inner_text() == headline
    assert page.locator("ol.tl li").count() >= 2  # the timeline
    assert page.locator(".why").count() >= 2  # why each article joined
    stamp = page.locator(".article-source time").first
    assert stamp.get_attribute("datetime", timeout=2000).endswith("Z")  # type: ignore[union-attr]
    assert "UTC" not in stamp.inner_text()  # rewritten to local time...
    assert "UTC" in (stamp.get_attribute("title") or "")  # ...with the UTC original on hover
    copy = page.locator("button.copy-button")
    assert copy.is_visible()  # the enhancement ran (hidden without JavaScript)
    feed = page.locator("a.feed-link", has_text="Atom feed").first
    assert re.search(r"/stories/\d+/feed\.atom$", feed.get_attribute("href") or "")
    shoot(page, "story-desktop.png")

    # a copy folded under its original opens when the timeline links to it
    copy_link = page.locator("ol.tl .tl-row", has=page.locator(".tl-note", has_text="copy")).first
    if copy_link.count():
        copy_link.locator("a").click()
        assert page.locator("details.copies[open]").count() >= 1
    assert desktop.errors == []


def test_search_and_filters_in_a_browser(server: DemoServer, desktop: Page) -> None:
    page = desktop.page
    page.goto(server.url + "/")
    page.get_by_label("Search").fill("dockers strike")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"q=dockers"))
    assert page.locator("ol.stories > li").count() == 1
    assert "dockers" in page.locator("ol.stories h2").inner_text().lower()
    assert "Clear filters" in page.locator(".lede").inner_text()

    page.get_by_role("link", name="Clear filters").click()
    page.get_by_label("Sources").select_option("3")
    page.get_by_label("Folder").select_option("News")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"min_sources=3"))
    assert "folder=News" in page.url
    counts = [int(text) for text in page.locator(".count-number").all_inner_texts()]
    assert counts and min(counts) >= 3
    assert page.get_by_label("Folder").input_value() == "News"  # the form shows what is applied
    assert desktop.errors == []


def test_phone_layout_and_screenshots(server: DemoServer, phone: Page) -> None:
    page = phone.page
    page.goto(server.url + "/")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "river-phone.png")
    page.goto(f"{server.url}/stories/{busiest_story(server)}")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.locator("h1").is_visible()
    shoot(page, "story-phone.png")
    page.goto(server.url + "/feeds")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # the table scrolls inside
    assert phone.errors == []


def test_pages_work_without_javascript(server: DemoServer, browser: Any) -> None:
    page = Page(browser, DESKTOP, java_script_enabled=False)
    try:
        page.page.goto(server.url + "/?q=dockers")
        assert page.page.locator("ol.stories > li").count() == 1
        page.page.locator("ol.stories h2 a").first.click()
        page.page.wait_for_url(re.compile(r"/stories/\d+$"))
        assert "UTC" in page.page.locator(".article-source time").first.inner_text()  # server's UTC
        assert not page.page.locator("button.copy-button").is_visible()
    finally:
        page.close()


def test_dark_mode_follows_the_system(server: DemoServer, browser: Any) -> None:
    page = Page(browser, DESKTOP, color_scheme="dark")
    try:
        page.page.goto(server.url + "/")
        background = page.page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 26)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.page.screenshot(path=str(ARTIFACTS / "river-desktop-dark.png"))
    finally:
        page.close()


def test_readme_screenshots_exist() -> None:
    """README shows copies of the desktop screenshots (refresh them with
    ``cp test-artifacts/river-desktop.png docs/screenshots/river.png`` and the same for story)."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
    for name in ("river.png", "story.png"):
        assert (docs / name).stat().st_size > 10_000, name
