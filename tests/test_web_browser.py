"""The dashboard in a real browser: Debian's headless Chromium, driven by
selenium through Debian's chromedriver, loads the page served from its own
thread while a crawl runs against loopback.

When Chromium or chromedriver is missing, the tests fail (never skip) and say
what to install: ``apt-get install -y chromium chromium-driver`` (``.ci/run``
does it). A screenshot of the page is written to ``$AIOCONNPOOL_ARTIFACTS``
(CI keeps it) or to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aioconnpool import PoolConnector
from aioconnpool.web import serve_dashboard

from .conftest import Recorder, url

Session = Callable[..., tuple[aiohttp.ClientSession, PoolConnector]]
T = TypeVar("T")

INSTALL = (
    "the dashboard's browser tests need Debian's chromium and chromedriver: "
    "apt-get install -y chromium chromium-driver (.ci/run installs them)"
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium under selenium (fails, never skips, if missing)."""
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(f"chromium or chromedriver not found on PATH: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as exc:  # selenium's errors say what went wrong
        pytest.fail(f"Chromium would not start ({exc}): {INSTALL}")
    try:
        yield driver
    finally:
        driver.quit()


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a (blocking) selenium call on a thread: the pool's loop goes on."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def wait_for(driver: Any, script: str, timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``script`` (JavaScript, returning a value) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or script}")
        time.sleep(0.05)


HOSTS = "[...document.querySelectorAll('#hosts tbody tr')].map(r => r.dataset.host)"
ROWS = f"return {HOSTS}"


def cell(driver: Any, host: str, column: str) -> str:
    return str(
        driver.execute_script(
            "const row = [...document.querySelectorAll('#hosts tbody tr')]"
            ".find(r => r.dataset.host === arguments[0]);"
            "return row && row.querySelector(`td[data-column=${arguments[1]}]`)"
            ".textContent;",
            host,
            column,
        )
    )


def figure(driver: Any, name: str) -> str:
    return str(
        driver.execute_script(
            "const f = document.querySelector("
            "`#totals [data-figure=${arguments[0]}] dd`);"
            "return f && f.textContent;",
            name,
        )
    )


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("AIOCONNPOOL_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    driver.save_screenshot(str(path))
    return path


async def test_the_dashboard_in_a_browser(
    browser: Any,
    make_session: Session,
    server: TestServer,
    recorder: Recorder,
    tmp_path: Path,
) -> None:
    session, connector = make_session(limit_per_host=2, leak_threshold=0.3)
    for i in range(60):
        async with session.get(url(server, "/small", f"h{i}.test")) as resp:
            await resp.read()
    hanging = [
        asyncio.create_task(session.get(url(server, "/hang", "slow.test")))
        for _ in range(5)
    ]
    slow = f"http://slow.test:{server.port}"
    dashboard = serve_dashboard(connector, interval=0.2)
    try:
        while connector.stats(slow).waiting != 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)  # past leak_threshold: slow.test's two leak
        await off_loop(browser.get, dashboard.url)
        # The live figures, as stats() has them.
        await off_loop(
            wait_for, browser, f"return {HOSTS}.includes('{slow}')", 15, "the table"
        )
        st = connector.stats()
        # (Until a snapshot taken after the crawl settled reaches the page.)
        await off_loop(
            wait_for,
            browser,
            " && ".join(
                f"document.querySelector('#totals [data-figure={name}] dd')"
                f"?.textContent === '{getattr(st, name)}'"
                for name in ("acquired", "idle", "connecting", "waiting", "created")
            ).join(("return ", "")),
            15,
            "the totals",
        )
        for name in ("acquired", "idle", "waiting", "requests", "created"):
            assert await off_loop(figure, browser, name) == str(getattr(st, name)), name
        host = connector.stats(slow)
        for column in ("acquired", "waiting", "limit", "requests"):
            assert await off_loop(cell, browser, slow, column) == str(
                getattr(host, column)
            ), column
        assert await off_loop(browser.execute_script, f"return {HOSTS}[0]") == slow
        count = await off_loop(
            browser.execute_script,
            "return document.getElementById('hosts-count').textContent",
        )
        assert count == "61 hosts"

        # Sorting: by host name, then the other way.
        await off_loop(
            browser.execute_script,
            "document.querySelector('#hosts th[data-sort=host]').click()",
        )
        expected = sorted(str(k) for k in st.hosts)[:50]
        await off_loop(
            wait_for, browser, f"return {HOSTS}[0] === '{expected[0]}'", 10, "sort"
        )
        assert await off_loop(browser.execute_script, ROWS) == expected
        await off_loop(
            browser.execute_script,
            "document.querySelector('#hosts th[data-sort=host]').click()",
        )
        backwards = sorted((str(k) for k in st.hosts), reverse=True)[:50]
        await off_loop(
            wait_for, browser, f"return {HOSTS}[0] === '{backwards[0]}'", 10, "desc"
        )
        assert await off_loop(browser.execute_script, ROWS) == backwards

        # Filtering: what is typed narrows the rows, on the server.
        box = await off_loop(browser.find_element, "id", "filter")
        await off_loop(box.send_keys, "h1")
        await off_loop(
            wait_for, browser, f"return {HOSTS}.length === 11", 10, "the filter"
        )
        shown = await off_loop(browser.execute_script, ROWS)
        assert all("//h1" in h for h in shown), shown
        count = await off_loop(
            browser.execute_script,
            "return document.getElementById('hosts-count').textContent",
        )
        assert count == "11 of 61 hosts"

        # The charts: a bar per bucket, drawn from the histograms.
        bars = await off_loop(
            browser.execute_script,
            "return [...document.querySelectorAll('#chart-hold_time rect.bar')]"
            ".map(b => [Number(b.dataset.value), Number(b.getAttribute('height'))])",
        )
        assert len(bars) == len(st.hold_time.bounds)
        assert [v for v, _ in bars] == list(st.hold_time.counts)
        assert max(h for _, h in bars) > 0
        for name in ("wait_time", "connect_time", "lifetime", "released", "closed"):
            assert await off_loop(
                browser.execute_script,
                f"return document.querySelectorAll('#chart-{name} rect.bar').length",
            ), name

        # Leak suspects, with where they were taken.
        leaks = await off_loop(
            wait_for,
            browser,
            "return document.querySelectorAll('#leaks details').length",
            10,
            "the leak suspects",
        )
        assert leaks == 2
        screenshot(browser, tmp_path, "dashboard.png")

        # The loop blocked for 2 s: the page says so, from its own thread.
        # The banner and the stack are read together, while the loop is
        # still blocked: once it runs again, the page's next poll may show
        # the loop's thread taking the pending snapshot instead.
        banner = asyncio.get_running_loop().run_in_executor(
            None,
            wait_for,
            browser,
            "const b = document.getElementById('loop-banner');"
            "const s = document.getElementById('loop-stack').textContent;"
            "return !b.hidden && b.textContent.includes('unresponsive')"
            " && s.includes('File') && [b.textContent, s];",
            10,
            "the blocked-loop banner",
        )
        time.sleep(2.0)  # noqa: ASYNC251 - blocks the pool's loop, on purpose
        text, stack = await banner
        assert "event loop unresponsive for" in text
        assert "last snapshot at" in text
        assert "test_the_dashboard_in_a_browser" in stack
        screenshot(browser, tmp_path, "dashboard-blocked.png")
        await off_loop(
            wait_for,
            browser,
            "return document.getElementById('loop-banner').hidden",
            10,
            "the banner to go",
        )

        # The events tail moves with the crawl.
        recorder.gate.set()
        for task in hanging:
            resp = await task
            await resp.read()
            resp.release()
        await off_loop(
            wait_for,
            browser,
            "return document.querySelectorAll('#events li[data-kind=Released]').length",
            10,
            "the events",
        )

        # And nothing went wrong in the page.
        logs = await off_loop(browser.get_log, "browser")
        errors = [entry for entry in logs if entry["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        dashboard.close()
        recorder.gate.set()
        for task in hanging:
            if not task.done():
                task.cancel()
        for task in hanging:
            with contextlib.suppress(BaseException):
                (await task).release()
