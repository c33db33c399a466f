"""The search page in headless Chromium: type a caption, see its image first, click it, see similar ones.

Uses the system browser and driver (Debian packages ``chromium`` and
``chromium-driver``) through Selenium, with Selenium Manager kept offline: the
driver path is given, so nothing is downloaded. Skipped when either binary is
missing. The server runs in a background thread on a free loopback port over
the same tiny index as ``test_server.py`` (built here, about ten seconds).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium and chromium-driver)", allow_module_level=True
    )
os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not reach out

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from visem.search import SearchIndex  # noqa: E402
from visem.search.server import create_app, running  # noqa: E402


def _helpers():
    """The tiny-collection builder shared with test_server.py."""
    name = "_visem_search_test_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_server.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-browser")
    images, out, captions = _helpers().build_tiny_index(tmp)
    index = SearchIndex.open(out)
    ids = {index.name(i): i for i in range(index.n_images)}
    with running(create_app(index)) as base:
        yield {"base": base, "ids": ids, "captions": captions, "index": index}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _first_loaded(driver, css: str, timeout: float = 10):
    """Wait until the first element matching ``css`` is an <img> that has loaded; return its card."""

    def ready(d):
        cards = d.find_elements(By.CSS_SELECTOR, css)
        if not cards:
            return False
        img = cards[0].find_element(By.TAG_NAME, "img")
        ok = d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        return cards[0] if ok else False

    return WebDriverWait(driver, timeout).until(ready)


def _errors(driver) -> str:
    msg = driver.find_element(By.ID, "message")
    return msg.text if msg.is_displayed() else ""


def test_type_a_caption_see_its_image_first_then_similar(site, browser):
    d = browser
    d.get(site["base"] + "/")
    WebDriverWait(d, 10).until(lambda d: "12 images" in d.find_element(By.ID, "info").text)

    box = d.find_element(By.ID, "q")
    box.send_keys(site["captions"]["red_circle.png"])
    box.send_keys(Keys.ENTER)
    first = _first_loaded(d, "#results .result")
    assert _errors(d) == ""
    assert first.get_attribute("data-id") == str(site["ids"]["red_circle.png"])
    assert first.find_element(By.CSS_SELECTOR, ".caption").text == "a red circle"
    score = float(first.find_element(By.CSS_SELECTOR, ".score").text)
    assert score == pytest.approx(site["index"].search_text("a red circle", k=12)[0].score, abs=1e-3)  # fused
    assert len(d.find_elements(By.CSS_SELECTOR, "#results .result")) == 12  # k defaults to 12 on the page
    assert "q=a+red+circle" in d.current_url

    first.click()  # image to image and image to text
    WebDriverWait(d, 10).until(
        lambda d: d.find_element(By.ID, "query-panel").is_displayed()
        and d.find_element(By.ID, "query-panel").get_attribute("data-id") == str(site["ids"]["red_circle.png"])
    )
    similar = _first_loaded(d, "#results .result")
    expected = site["index"].similar(site["ids"]["red_circle.png"], k=12)
    shown = [e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#results .result")]
    assert shown == [str(h.id) for h in expected.images]
    assert similar.get_attribute("data-id") != str(site["ids"]["red_circle.png"])
    captions = d.find_elements(By.CSS_SELECTOR, "#captions .caption-hit")
    assert [c.find_element(By.TAG_NAME, "a").text for c in captions] == [c.caption for c in expected.captions]
    assert d.find_element(By.ID, "caption-panel").is_displayed()
    WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "query-captions").text == "a red circle")


def test_api_errors_are_shown(site, browser):
    d = browser
    d.get(site["base"] + "/")
    box = d.find_element(By.ID, "q")
    box.send_keys("<*>?!</*>")
    box.send_keys(Keys.ENTER)
    msg = WebDriverWait(d, 10).until(EC.visibility_of_element_located((By.ID, "message")))
    assert "no word" in msg.text
    assert "<*>?!</*>" in msg.text  # shown as text, not markup
    assert d.find_elements(By.CSS_SELECTOR, "#message *") == []


def test_ignored_words_are_listed(site, browser):
    d = browser
    d.get(site["base"] + "/")
    box = d.find_element(By.ID, "q")
    box.send_keys("a red circle 猫")
    box.send_keys(Keys.ENTER)
    _first_loaded(d, "#results .result")
    WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "ignored").is_displayed())
    assert d.find_element(By.ID, "ignored").text == "ignored (unknown to this index): 猫"


def test_map_view(site, browser):
    """The map: every image as a loaded thumbnail and every caption as a dot, placed as /api/map says;
    clicking a thumbnail shows that image's neighbours."""
    d = browser
    d.get(site["base"] + "/")
    WebDriverWait(d, 10).until(lambda d: "12 images" in d.find_element(By.ID, "info").text)
    d.find_element(By.ID, "map-button").click()
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "map-panel").is_displayed())
    points = d.find_elements(By.CSS_SELECTOR, "#map .map-point")
    assert sorted(int(p.get_attribute("data-id")) for p in points) == sorted(site["ids"].values())
    WebDriverWait(d, 10).until(lambda d: all(d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", p) for p in points))
    assert len(d.find_elements(By.CSS_SELECTOR, "#map .map-caption")) == 10
    api = {p["id"]: p for p in _map_points(site)}
    box = d.find_element(By.ID, "map").rect
    for p in points:  # placed where the API put it (x left to right, y bottom to top)
        want = api[int(p.get_attribute("data-id"))]
        r = p.rect
        cx, cy = r["x"] + r["width"] / 2 - box["x"], r["y"] + r["height"] / 2 - box["y"]
        assert abs(cx / box["width"] - (0.03 + 0.94 * want["x"])) < 0.02
        assert abs(cy / box["height"] - (0.03 + 0.94 * (1 - want["y"]))) < 0.02
    assert "pca" in d.find_element(By.ID, "map-info").text  # 22 points: fewer than a neighbour graph needs
    target = points[0]
    target.click()
    WebDriverWait(d, 10).until(
        lambda d: d.find_element(By.ID, "query-panel").is_displayed()
        and d.find_element(By.ID, "query-panel").get_attribute("data-id") == target.get_attribute("data-id"))
    assert not d.find_element(By.ID, "map-panel").is_displayed()


def _map_points(site) -> list[dict]:
    import json
    import urllib.request

    with urllib.request.urlopen(site["base"] + "/api/map?n=300", timeout=10) as r:
        return [p for p in json.loads(r.read())["points"] if p["kind"] == "image"]
