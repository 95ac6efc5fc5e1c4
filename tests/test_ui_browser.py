"""``runlog ui`` in a real headless Chromium, on a database made by the example system.

Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it when missing) is
driven by Playwright with ``executable_path``: no browser is ever downloaded.  One
browser per module; the server is ``runlog ui`` started as a real process.  Every
request the pages make is intercepted: anything not for the local server is
recorded and refused, and the module ends by asserting there was none.

Screenshots go to the test's temporary directory, or to ``UI_SCREENSHOTS`` when
set (``UI_SCREENSHOTS=docs .venv/bin/pytest tests/test_ui_browser.py`` remakes
the README's pictures).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from test_example import SUPERVISOR_ARGS, run_example

from support import child_env, python

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


class Server:
    """``runlog ui`` as a real process on a free port."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runlog", "ui", "--db", str(db), "--port", "0", "--no-browser"],
            env=child_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"runlog ui: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, f"{line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def example_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example system run once (3 workers, 8 tasks, one crash)."""
    where = tmp_path_factory.mktemp("example")
    run_example("supervisor.py", where, str(where / "runlog.db"), *SUPERVISOR_ARGS)
    return where / "runlog.db"


@pytest.fixture(scope="module")
def server(example_db: Path) -> Iterator[Server]:
    running = Server(example_db)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def foreign() -> list[str]:
    """Requests to anything but the local server (refused); must stay empty."""
    found: list[str] = []
    yield found
    assert found == []


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("UI_SCREENSHOTS")
    if where:  # relative to where pytest was started (tests run in a directory of their own)
        return request.config.invocation_params.dir / where
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Browser, server: Server, foreign: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 520})
    seen: list[str] = []

    def check(route: Route) -> None:
        url = route.request.url
        seen.append(url)
        if url.startswith(server.url):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    context.route("**/*", check)
    dialogs: list[str] = []
    errors: list[str] = []  # a script error, or anything the page's own policy refused
    one = context.new_page()
    one.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    one.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    one.on("pageerror", lambda exc: errors.append(str(exc)))
    yield one
    context.close()
    assert dialogs == [], "a script from the data ran"
    assert errors == []
    assert any(url.endswith("/static/ui.css") for url in seen)


def test_every_page_loads(page: Page, server: Server, shots: Path) -> None:
    """Runs, a run, the LLM calls and the events render, styled, with their content."""
    page.goto(server.url)
    expect(page.locator("table.runs tbody tr")).to_have_count(5)  # the supervisor, 4 workers
    expect(page.locator("#good-rev")).to_have_text("1")
    page.screenshot(path=shots / "ui-runs.png", full_page=True)
    page.goto(server.url + "llm")
    expect(page.locator("table.models tbody tr")).to_have_count(1)
    expect(page.locator("table.calls tbody tr")).to_have_count(17)
    page.screenshot(path=shots / "ui-llm.png")
    page.goto(server.url + "events")
    expect(page.locator("#tail tbody tr").first).to_be_visible()
    page.screenshot(path=shots / "ui-events.png")


def test_click_into_the_crashed_worker_and_open_a_payload(
    page: Page, server: Server, shots: Path
) -> None:
    """From the runs page to the worker that crashed; a waterfall bar opens its payload."""
    page.goto(server.url)
    page.locator("tr.failed td.tree a").click()
    expect(page).to_have_url(re.compile(r"/run/\d+$"))
    expect(page.locator("h1")).to_contain_text("SimulatedCrash")
    expect(page.locator("svg.waterfall rect.bar.span.failed")).to_have_count(1)
    page.locator("svg.waterfall rect.bar.span.failed").click()
    expect(page.locator("#payload pre.json")).to_contain_text('"error_type": "SimulatedCrash"')
    supervisor = page.locator("nav.crumbs a").nth(1)
    supervisor.click()
    expect(page.locator("svg.waterfall text.proc-label")).to_have_count(5)
    box = page.locator("div.scroll").bounding_box()
    assert box is not None and box["height"] > 200
    clip = {"x": 0, "y": 0, "width": 1400, "height": box["y"] + box["height"] + 14}
    page.screenshot(path=shots / "ui-waterfall.png", clip=clip, full_page=True)


def test_open_an_llm_calls_payload(page: Page, server: Server) -> None:
    """On the LLM page, a call's time opens its payload beside the table."""
    page.goto(server.url + "llm?sort=latency")
    page.locator("table.calls tbody tr").first.locator("a[data-event]").click()
    panel = page.locator("#payload")
    expect(panel).to_contain_text("llm_call.completed")
    expect(panel.locator("pre.json")).to_contain_text('"latency_ms"')
    expect(page).to_have_url(re.compile(r"/llm\?sort=latency$"))  # a panel, not a navigation


def test_a_live_event_arrives_while_a_child_writes(page: Page, server: Server) -> None:
    """With the events page open, a child process logs; its row appears, as text."""
    page.goto(server.url + "events")
    expect(page.locator("#live.on")).to_have_count(1)  # the stream is open
    db = server.proc.args[server.proc.args.index("--db") + 1]
    python(
        "import runlog; runlog.init(role='late', instance_id='late-1');"
        " runlog.log_event('live.logged', {'html': '<img src=x onerror=alert(1)>'})",
        Path(db),
    )
    row = page.locator("#tail tbody tr", has_text="live.logged")
    expect(row).to_have_count(1, timeout=15_000)
    expect(row).to_contain_text("<img src=x onerror=alert(1)>")
    expect(page.locator("#tail tbody tr", has_text="late-1").first).to_be_visible()
