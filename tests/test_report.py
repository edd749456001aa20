"""``insights report``: one self-contained HTML page, written by the real command from a real database
and drawn by a real headless Chromium (Debian's, installed here where missing), whose charts must be
there, sized, and agree with the store."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from support import ROOT
from support.cli import INSIGHTS

from cli import report_demo
from store import claims, counts, queries, reports, trends

HOSTILE = '<script>alert("x")</script> & <img src=http://example.invalid/x.png>'


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Chromium and ChromeDriver, installed from Debian's packages where missing (as root, with apt-get);
    the test is skipped, with the reason, where they cannot be."""

    def found() -> tuple[str | None, str | None]:
        return shutil.which("chromium"), shutil.which("chromedriver")

    if not all(found()) and shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
            subprocess.run(install, capture_output=True, timeout=900)
    browser, driver = found()
    if not (browser and driver):
        pytest.skip("needs Debian's chromium and chromium-driver, which only root with apt-get can install here")
    return browser, driver


def write_report(database_env: dict[str, str], output: Path, *window: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **database_env, "PYTHONPATH": str(ROOT)}
    command = [str(INSIGHTS), "report", "--start", window[0], "--end", window[1], "--output", str(output)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def rendered(chromium: tuple[str, str], page: Path, profile: Path) -> dict:
    """What Chromium drew: the boxes of the charts' parts, texts, and what the page fetched or ran."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1000,1600",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromium[1]), options=options)
    try:
        driver.get(page.as_uri())
        facts = driver.execute_script("""
            const boxes = selector => [...document.querySelectorAll(selector)].map(element => {
                const box = element.getBoundingClientRect(); return [box.width, box.height]; });
            const texts = selector => [...document.querySelectorAll(selector)].map(element => element.textContent);
            return {
                title: document.title,
                bars: boxes('svg.sentiment-chart rect.bar'),
                mean_lines: boxes('svg.sentiment-chart polyline.mean'),
                sparklines: boxes('table.clusters svg.sparkline'),
                clusters: texts('table.clusters td.name'),
                reasons: texts('table.failures td.reason'),
                scripts: document.scripts.length,
                images: document.images.length,
                fetched: performance.getEntriesByType('resource').length,
            };""")
        facts["png"] = driver.get_screenshot_as_png()
        return facts
    finally:
        driver.quit()


@pytest.mark.processes
@pytest.mark.timeout(1200)  # the first run may install Chromium
def test_the_report_draws_its_charts_offline_and_agrees_with_the_store(db, database_env, chromium, tmp_path):
    rng = random.Random(5)
    report_demo.fill(rng, days=10, per_day=25)
    queries.insert_conversations([queries.NewConversation.of("hostile", "{}", report_demo.START, report_demo.START)])
    claims.fail_open(["hostile"], HOSTILE)
    start, end = report_demo.START, report_demo.START + timedelta(days=10)
    output = tmp_path / "report.html"

    finished = write_report(database_env, output, start.isoformat(), end.isoformat())
    assert finished.returncode == 0, finished.stderr
    html = output.read_text()
    assert not re.search(r"<script|<[a-z][^>]*\s(?:src|href)\s*=|url\(|@import", html, re.IGNORECASE), (
        "nothing to run or fetch"
    )
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=http" in html

    thresholds = (-0.1, 0.1)
    buckets = trends.trends(trends.TrendQuery(start, end, "day", counts.Filters(thresholds=thresholds)))
    summary = reports.summarize(start, end, thresholds, 10)
    facts = rendered(chromium, output, tmp_path / "profile")
    assert facts["title"] == "Conversation insights, 2026-10-26T00:00:00Z to 2026-11-05T00:00:00Z"
    assert len(facts["bars"]) == sum(1 for b in buckets for n in b.by_sentiment.values() if n) > 10
    assert all(width > 5 and height > 0 for width, height in facts["bars"]), "every bar drawn with a size"
    assert len(facts["mean_lines"]) == 1 and facts["mean_lines"][0][0] > 500
    assert facts["clusters"] == [name for name, _n in summary.top_clusters] and len(facts["clusters"]) >= 5
    assert len(facts["sparklines"]) == len(facts["clusters"]) and all(
        w > 100 and h > 10 for w, h in facts["sparklines"]
    )
    assert HOSTILE in facts["reasons"], "the reason shown as text, not markup"
    assert (facts["scripts"], facts["images"], facts["fetched"]) == (0, 0, 0)
    assert facts["png"][:8] == b"\x89PNG\r\n\x1a\n" and len(facts["png"]) > 20_000


@pytest.mark.processes
def test_a_report_of_an_empty_window_and_bad_arguments(db, database_env, tmp_path):
    output = tmp_path / "empty.html"
    finished = write_report(database_env, output, "2030-01-01T00:00:00Z", "2030-01-01T06:00:00Z")
    assert finished.returncode == 0, finished.stderr
    html = output.read_text()
    assert "by hour" in html and html.count('class="bar ') == 0 and "No insight names a cluster" in html
    assert "The cost is not known yet" in html
    for window in (("2030-01-02", "2030-01-01"), ("2020-01-01", "2030-01-01")):  # backwards, and 3,653 days
        refused = write_report(database_env, tmp_path / "no.html", *window)
        assert refused.returncode == 2 and ("--end" in refused.stderr or "buckets" in refused.stderr), refused.stderr
        assert not (tmp_path / "no.html").exists()
    unwritable = write_report(database_env, tmp_path / "missing-dir" / "r.html", "2030-01-01", "2030-01-02")
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr
