"""The explorer in a real browser: headless Chromium driven by Selenium through the system's chromedriver.

The page loads, a slider moves (by keyboard, as a user would), the render and g's prediction change;
hostile requests get their 4xx and the page keeps working. Set VISCOIN_SCREENSHOT=<path.png> to keep a
screenshot of the page. Nothing is downloaded: Selenium gets the driver's path (Selenium Manager is not run).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from viscoin_cli.shipped import DEFAULT_MODEL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = next(
    (p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver")) if p and Path(p).is_file()), None
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver is not installed (apt-get install chromium-driver)"),
    pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="the shipped digits model is missing"),
]


@pytest.fixture(scope="module")
def server():
    from test_serve import start_explorer

    server, thread = start_explorer(top_k=6)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1200,1500")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, condition, message: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d), message)


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def page_state(driver) -> dict:
    """What a user reads off the page: the source, the render's src, g's prediction text on it."""
    return {
        "source": driver.execute_script("return document.body.dataset.source || ''"),
        "render": by_id(driver, "render-image").get_attribute("src"),
        "render_g": by_id(driver, "render-g").text,
        "render_state": by_id(driver, "render-state").text,
        "status": by_id(driver, "status").text,
    }


def wait_ready(driver, source: str) -> dict:
    wait(driver, lambda d: page_state(d)["source"] == source, f"the page never showed {source}")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == "ready", "page not ready")
    return page_state(driver)


def move_top_slider(driver, key: str) -> str:
    """Focus the top concept's slider and press `key` (Home: λ = 0, End: λ = 4); returns the concept."""
    from selenium.webdriver.common.by import By

    slider = driver.find_element(By.CSS_SELECTOR, "tr.concept-row:first-child .lambda-slider")
    slider.send_keys(key)
    return slider.get_attribute("data-concept")


def severe_console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_explorer_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url)
    before = wait_ready(browser, "test-0")
    assert before["render"].startswith("data:image/png;base64,")
    assert before["render_state"] == "(every λ = 1: the reconstruction)"
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.concept-row")) == 6
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.concept-row img")) == 12
    assert "K = 64 concepts" in by_id(browser, "model-info").text
    images_loaded = "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    wait(browser, lambda d: d.execute_script(images_loaded), "an image did not load")

    # a slider moved by the keyboard: the render and g's prediction on it change
    concept = move_top_slider(browser, Keys.HOME)
    wait(browser, lambda d: page_state(d)["render"] != before["render"], "the render did not change")
    removed = page_state(browser)
    wait(browser, lambda d: f"λ{concept} = 0.0" in page_state(d)["render_state"], "the render state did not update")
    assert removed["render_g"] != before["render_g"], "g's prediction on the render did not update"
    assert by_id(browser, "input-g").text  # g on the image itself stays on show
    move_top_slider(browser, Keys.END)
    wait(browser, lambda d: f"λ{concept} = 4.0" in page_state(d)["render_state"], "λ = 4 was not rendered")
    assert page_state(browser)["render"] not in (before["render"], removed["render"])
    assert severe_console_errors(browser) == []
    if os.environ.get("VISCOIN_SCREENSHOT"):
        browser.save_screenshot(os.environ["VISCOIN_SCREENSHOT"])

    # hostile requests from the page's own origin get their 4xx JSON; the page keeps working
    hostile = """
        const done = arguments[arguments.length - 1];
        const post = (path, body) => fetch(path, {method: "POST", body}).then(async r => [r.status, await r.json()]);
        Promise.all([
            post("api/render", JSON.stringify({source: "../../etc/passwd", lambdas: {}})),
            post("api/render", '{"source": "test-0", "lambdas": {"3": NaN}}'),
            post("api/render", JSON.stringify({source: "test-0", lambdas: {"9999": 1}})),
            post("api/render", JSON.stringify({source: "test-0", lambdas: {"3": 99}})),
            post("api/upload", "not an image"),
            post("api/upload", new Uint8Array(9 * 1024 * 1024)),
            fetch("api/sample?index=../../etc/passwd").then(async r => [r.status, await r.json()]),
            fetch("../../../etc/passwd").then(async r => [r.status, await r.json()]),
        ]).then(done, err => done(String(err)));
    """
    answers = browser.execute_async_script(hostile)
    assert isinstance(answers, list), answers
    assert [status for status, _ in answers] == [400, 400, 404, 400, 415, 413, 400, 404], answers
    assert all(set(doc) == {"error"} for _, doc in answers)

    by_id(browser, "next-button").click()
    next_state = wait_ready(browser, "test-1")
    assert next_state["render"] != page_state(browser)["render"] or next_state["render_state"].startswith("(every")
    concept = move_top_slider(browser, Keys.HOME)
    wait(browser, lambda d: f"λ{concept} = 0.0" in page_state(d)["render_state"], "test image 1 did not re-render")

    # uploads through the file input: an image is explained, a non-image is an error line and nothing breaks
    from PIL import Image

    picture = tmp_path / "upload.png"
    Image.new("RGB", (40, 56), (250, 250, 250)).save(picture)
    by_id(browser, "upload-input").send_keys(str(picture))
    wait(browser, lambda d: page_state(d)["source"].startswith("upload-"), "the upload was not explained")
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image at all")
    by_id(browser, "upload-input").send_keys(str(text_file))
    wait(browser, lambda d: "not an image" in page_state(d)["status"], "the bad upload was not reported")
    by_id(browser, "random-button").click()
    wait(browser, lambda d: page_state(d)["source"].startswith("test-"), "the page stopped working")
    info = json.loads(browser.execute_async_script("fetch('api/info').then(r => r.text()).then(arguments[0])"))
    assert info["test_size"] == 360
