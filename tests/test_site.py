"""The course website: built offline from the repository (course/site/build.py, Sphinx warnings as errors,
every internal link checked), every notebook, lesson guide and assignment in its table of contents, and
opened in a real browser (headless Chromium): the home page and every page load, with no broken image,
no missing page and no JavaScript error.

Needs the `docs` extra (jupyter-book, selenium) and Debian's chromium + chromium-driver (.ci/run installs
them); skipped with a reason where they are missing."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("course_site_build", ROOT / "course" / "site" / "build.py")
site = importlib.util.module_from_spec(_spec)                   # course/site/build.py
_spec.loader.exec_module(site)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _missing(reason: str):
    """Skip on a developer's machine without the tools; fail in CI, which installs them (.ci/run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must install this: {reason}")
    pytest.skip(reason)


def test_the_table_of_contents_has_every_notebook_guide_and_assignment(tmp_path):
    toc = site.table_of_contents(site.pages())
    for pattern in ("notebooks/*.ipynb", "course/lessons/*.md", "course/assignments/release/*/*.ipynb"):
        for path in ROOT.glob(pattern):
            assert f"- file: {path.relative_to(ROOT).with_suffix('').as_posix()}\n" in toc, path
    assert "root: README" in toc and "course/README" in toc and "course/syllabus" in toc


def test_a_new_notebook_joins_the_table_of_contents(tmp_path, monkeypatch):
    """Lessons added later (11, 12, 13 ...) need no edit of the site: the table is written from the files."""
    for folder in ("notebooks", "course/lessons", "course/assignments/release/x"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "notebooks" / "13_clip.ipynb").write_text("{}")
    (tmp_path / "course" / "lessons" / "13_clip.md").write_text("# Lesson 13")
    parts = site.pages(tmp_path)
    assert Path("notebooks/13_clip.ipynb") in parts["Notebooks (student)"]
    assert Path("course/lessons/13_clip.md") in parts["Lesson guides (instructor)"]


def test_the_link_check_finds_broken_links_anchors_and_remote_resources(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a href="b.html#top">ok</a><a href="#top">ok</a>'
                                     '<a href="https://example.org/">a link out is fine</a>')
    (tmp_path / "b.html").write_text('<p id="top"></p><a href="missing.html">x</a><a href="a.html#nowhere">y</a>'
                                     '<img src="img/gone.png"><script src="https://cdn.example.org/x.js"></script>')
    problems = site.check_links(tmp_path)
    assert len(problems) == 4, problems
    assert any("missing.html" in p for p in problems) and any("#nowhere" in p for p in problems)
    assert any("gone.png" in p for p in problems) and any("cdn.example.org" in p for p in problems)


@pytest.fixture(scope="module")
def built_site():
    if importlib.util.find_spec("jupyter_book") is None:
        _missing("jupyter-book is in the `docs` extra: pip install -e '.[docs]'")
    output = Path(tempfile.mkdtemp(prefix="ssl_minimal_site_")) / "site"
    try:
        yield site.build(output)               # exits (SystemExit) on a Sphinx warning or a broken link
    finally:
        shutil.rmtree(output.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(built_site):
    if importlib.util.find_spec("selenium") is None:
        _missing("selenium is in the `docs` extra: pip install -e '.[docs]'")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _missing("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built_site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="ssl_minimal_chromium_")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        driver.quit()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str, lands_on: str | None = None) -> dict:
    """Load `url` (and wait until the browser is at `lands_on`, after a redirect) and return what a reader
    would notice: title, main heading, broken images, console errors."""
    from selenium.webdriver.support.wait import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith(lands_on or url)
                                    and d.execute_script("return document.readyState") == "complete"
                                    and d.execute_script("return document.body !== null"))
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")   # lazy images load too
    state = driver.execute_script("""
        const images = Array.from(document.images);
        return {title: document.title,
                heading: (document.querySelector('main h1') || {}).textContent || '',
                images: images.length,
                broken: images.filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)};""")
    # Chromium asks for /favicon.ico by itself on a page without an icon link (index.html's redirect), and
    # whether that 404 is logged before we read the log depends on timing: it is not an error of the page.
    state["errors"] = [entry["message"] for entry in driver.get_log("browser")
                       if entry["level"] == "SEVERE" and "/favicon.ico " not in entry["message"]]
    return state


def _site_pages(html_dir: Path) -> list[str]:
    pages = ["README.html", "course/README.html", "course/syllabus.html"]
    for part in site.pages().values():
        pages += [path.with_suffix(".html").as_posix() for path in part]
    return sorted(set(pages))


@pytest.mark.slow
def test_every_page_opens_in_chromium_without_errors(browser, built_site, tmp_path):
    driver, base = browser
    home = _open(driver, base + "/index.html", lands_on="/README.html")     # index.html redirects to the README
    assert "ssl_minimal" in home["heading"] and not home["broken"] and not home["errors"], home
    problems = {}
    for page in _site_pages(built_site):
        assert (built_site / page).is_file(), f"{page} is missing from the built site"
        state = _open(driver, f"{base}/{page}")
        if "Error response" in state["title"] or not state["heading"].strip() or state["broken"] or state["errors"]:
            problems[page] = state
    assert problems == {}
    notebook = _open(driver, base + "/notebooks/10_collapse.html")               # committed outputs are shown
    assert notebook["images"] >= 3 and not notebook["broken"]


@pytest.mark.slow
def test_the_browser_test_sees_a_broken_image_and_a_javascript_error(browser, built_site):
    """The checks above can fail: a page with a missing image and a script that throws is caught."""
    driver, base = browser
    (built_site / "broken_check.html").write_text(
        '<html><body><main><h1>x</h1><img src="_images/nothing.png"></main>'
        '<script>undefined_function()</script></body></html>')
    state = _open(driver, base + "/broken_check.html")
    assert state["broken"] and any("undefined_function" in error for error in state["errors"]), state
