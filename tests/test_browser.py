"""The HTML report as a reader sees it: opened in a real headless Chromium, its front page starts at
its title and fits one laptop screen; at a phone's width the title is still in view."""

import os
import shutil
import time

import pytest
from test_workflow import SHRUNK, make_workdir, snakemake

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("browser"), **dict(SHRUNK, seeds=[1]))
    snakemake(workdir, "--cores", "2")
    snakemake(workdir, "--report", "results/report.html")
    return workdir / "results" / "report.html"


def _browser(width: int, height: int):
    if CHROMIUM is None or DRIVER is None:
        # CI installs Chromium (.ci/run): there its absence is a failure, elsewhere a skip
        assert not os.environ.get("CI"), (
            "CI must have chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
        pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _front_page(html, width: int, height: int) -> dict:
    """Open the report, scroll to the top, and measure the front page's title and last paragraph."""
    driver = _browser(width, height)
    try:
        driver.get(html.as_uri())
        deadline = time.monotonic() + 30
        script = """
            const title = [...document.querySelectorAll('h1')].find(h => h.textContent.startsWith('vaestudy'));
            if (!title) return null;
            window.scrollTo(0, 0);
            for (const el of document.querySelectorAll('*')) { if (el.scrollTop) el.scrollTop = 0; }
            const doc = title.closest('.document');
            const t = title.getBoundingClientRect(), l = [...doc.querySelectorAll('p')].pop().getBoundingClientRect();
            return {title_top: t.top, title_bottom: t.bottom, last_bottom: l.bottom, window: window.innerHeight};
        """
        while (found := driver.execute_script(script)) is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the report renders its pages with JavaScript
        assert found is not None, "the report has no front page titled 'vaestudy ...'"
        return found
    finally:
        driver.quit()


def test_the_front_page_opens_at_its_title_and_fits_a_laptop_screen(report_html):
    page = _front_page(report_html, 1400, 900)
    assert 0 <= page["title_top"] < page["title_bottom"] <= page["window"], page
    assert page["last_bottom"] <= page["window"], page  # the whole front page, without scrolling


def test_at_a_phones_size_the_title_is_in_view_at_the_top(report_html):
    page = _front_page(report_html, 390, 844)
    assert 0 <= page["title_top"] < page["title_bottom"] <= page["window"], page
