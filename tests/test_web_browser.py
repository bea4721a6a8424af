"""The review page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against a real server on loopback.

Skips, saying what to install, without the browser, its driver or the selenium package.
Set ``REVIEW_SCREENSHOTS=folder`` to keep the screenshots (docs/ uses them).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from server.web import NOT_FOUND_TEXT
from tests.test_web_support import Review, review_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver; pip install selenium"

pytestmark = pytest.mark.slow


def _have_browser() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed ({INSTALL})"
    for p in (CHROMIUM, CHROMEDRIVER):
        if not Path(p).is_file():
            return f"{p} not found: browser tests need Debian's chromium ({INSTALL})"
    return ""


def new_driver() -> Any:
    """Headless Chromium from the system packages (never a downloaded browser or driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Review]:
    why = _have_browser()
    if why:
        pytest.skip(why)
    with review_server(tmp_path_factory.mktemp("webb")) as r:
        yield r


@pytest.fixture(scope="module")
def driver(review: Review) -> Iterator[Any]:
    d = new_driver()
    d.set_page_load_timeout(120)
    try:
        yield d
    finally:
        d.quit()


def shot(driver: Any, name: str) -> np.ndarray:
    """A screenshot as a BGR array (kept under $REVIEW_SCREENSHOTS when set)."""
    raw = driver.get_screenshot_as_png()
    keep = os.environ.get("REVIEW_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.png").write_bytes(raw)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def load_ms(driver: Any) -> float:
    """The page's load time from the browser's navigation timing (ms)."""
    return float(
        driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            " return n.loadEventEnd - n.startTime;"
        )
    )


def images_loaded(driver: Any, ids: list[str]) -> bool:
    return bool(
        driver.execute_script(
            "return arguments[0].every(id => { const i = document.getElementById(id);"
            " return i.complete && i.naturalWidth > 0; });",
            ids,
        )
    )


def login(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/login")
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()


def test_examiner_session_in_the_browser(review: Review, driver: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, q, mate = review.url, review.ids["q"], review.ids["mate"]
    wait = WebDriverWait(driver, 120)
    login(driver, url, review.srv.tokens["north_exam"])
    wait.until(lambda d: d.current_url.endswith("/queue"))
    assert "Examiner's queue" in driver.title
    cookie = driver.get_cookie("bsession")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert float(shot(driver, "queue").std()) > 5  # not blank

    # a search from the queue's form
    box = driver.find_element(By.CSS_SELECTOR, "form.search input[name=casing_id]")
    box.send_keys(q)
    driver.find_element(By.CSS_SELECTOR, "form.search button").click()
    wait.until(lambda d: "/search/" in d.current_url)
    first = driver.find_elements(By.CSS_SELECTOR, "table.cands a.cand")[0]
    assert first.text == mate
    assert "none of 717 3-D reference non-matches" in driver.page_source
    assert float(shot(driver, "candidates").std()) > 5

    # the comparison
    first.click()
    wait.until(lambda d: "/compare" in d.current_url)
    wait.until(lambda d: images_loaded(d, ["img-a", "img-b", "img-overlay"]))
    img = shot(driver, "comparison")
    assert float(img.std()) > 20
    viewer = driver.find_element(By.ID, "viewer")
    crop = img[
        viewer.location["y"] : viewer.location["y"] + viewer.size["height"],
        viewer.location["x"] : viewer.location["x"] + viewer.size["width"],
    ]
    assert crop.size and float(crop.std()) > 20  # the pictures are drawn, not blank
    assert driver.find_elements(By.CSS_SELECTOR, "#cells-a g.cell.congruent title")

    # move the split slider: B's clip follows
    split = driver.find_element(By.ID, "split")
    before = driver.execute_script("return document.getElementById('img-b').style.clipPath")
    ActionChains(driver).click_and_hold(split).move_by_offset(-60, 0).release().perform()
    after = driver.execute_script("return document.getElementById('img-b').style.clipPath")
    assert before != after and "inset" in after
    # the rotation fine-tune re-renders B with the extra rotation
    driver.execute_script(
        "const r = document.getElementById('rot'); r.value = '1.5';"
        " r.dispatchEvent(new Event('input'));"
    )
    wait.until(lambda d: "rot=1.5" in d.find_element(By.ID, "img-b").get_attribute("src"))
    wait.until(lambda d: images_loaded(d, ["img-b"]))
    driver.find_element(By.ID, "overlay-toggle").click()
    assert driver.find_element(By.ID, "img-overlay").is_displayed()

    # a verdict through the Decide path
    driver.find_element(By.NAME, "comment").send_keys("marks agree at 10x")
    driver.find_element(By.ID, "v-hit").click()
    wait.until(lambda d: "decided=" in d.current_url)
    assert "recorded" in driver.find_element(By.ID, "decided").text
    d = review.srv.backend.catalog.decisions(q)[-1]  # type: ignore[attr-defined]
    assert (d.candidate_id, d.verdict, d.examiner) == (mate, "hit", "north_exam")
    assert d.comment == "marks agree at 10x"
    log = (review.srv.data_dir / "audit.log").read_text()
    assert '"method": "Decide"' in log or '"method":"Decide"' in log
    assert str(d.id) in log

    # the printable report
    driver.find_element(By.ID, "report-link").click()
    wait.until(lambda d: "/report" in d.current_url)
    assert "marks agree at 10x" in driver.page_source
    assert float(shot(driver, "report").std()) > 5


def test_refusal_and_csrf_in_the_browser(review: Review, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, q = review.url, review.ids["q"]
    wait = WebDriverWait(driver, 120)
    driver.delete_all_cookies()
    login(driver, url, review.srv.tokens["north_exam"])
    wait.until(lambda d: d.current_url.endswith("/queue"))
    texts = []
    for other in (review.ids["east"], "0123456789abcdef"):
        driver.get(f"{url}/compare?a={q}&b={other}")
        texts.append(driver.find_element(By.TAG_NAME, "main").text)
    assert texts[0] == texts[1] and NOT_FOUND_TEXT in texts[0]
    assert "SO-East" not in driver.page_source

    # a verdict form stripped of its CSRF token is refused, nothing stored
    n = len(review.srv.backend.catalog.decisions(q))  # type: ignore[attr-defined]
    driver.get(f"{url}/compare?a={q}&b={review.ids['other']}")
    driver.execute_script("document.querySelector('#verdict-form input[name=csrf]').remove();")
    driver.find_element(By.ID, "v-excluded").click()
    wait.until(lambda d: "Refused" in d.title)
    assert "CSRF" in driver.find_element(By.TAG_NAME, "main").text
    assert len(review.srv.backend.catalog.decisions(q)) == n  # type: ignore[attr-defined]
