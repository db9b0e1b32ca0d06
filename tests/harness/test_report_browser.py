"""The run report in a real browser: Debian's headless Chromium driven by Selenium and
Debian's ChromeDriver. The page must load from the file alone: no console errors, no
request other than the file itself and its data: images, the graph and every plot drawn
at a visible size, and a screenshot that is not blank.

Chromium is not a Python package: ``make browser`` installs Debian's ``chromium`` and
``chromium-driver`` (CI does it when apt-get is there). Without them the test skips and
says how to install them."""
import io
import shutil

import pytest
from report_fakes import make_run

from harness.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# The flags a closed network needs (no background connections to Google's hosts).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000"]
IMAGES = """return Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {alt: i.alt, complete: i.complete, natural: i.naturalWidth,
          width: r.width, height: r.height, shown: getComputedStyle(i).display !== 'none'};
});"""


@pytest.fixture
def browser(tmp_path, monkeypatch):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (needs chromium and chromedriver on "
                    "PATH): run `make browser`, or apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed: make install")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never downloads a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _requests(driver, document: str) -> list[str]:
    """The URLs the page ``document`` requested (the browser's own start page, which
    loads chrome:// resources, is another document)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" \
                and message["params"].get("documentURL") == document:
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_renders_in_headless_chromium(browser, tmp_path):
    from PIL import Image

    page = build_report(make_run(tmp_path / "runs"))
    browser.get(page.as_uri())
    assert "20261201-162925-5fef" in browser.title, browser.title

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    requests = _requests(browser, page.as_uri())
    assert page.as_uri() in requests
    fetched = [u for u in requests if not u.startswith(("data:", page.as_uri()))]
    assert not fetched, fetched
    assert any(u.startswith("data:image/png") for u in requests)  # the log sees images

    images = browser.execute_script(IMAGES)
    assert {i["alt"] for i in images} >= {"pipeline graph coloured by step status",
                                          "loss and accuracy per epoch", "confusion matrix",
                                          "misclassified test digits"}
    for image in images:  # decoded by the browser and laid out at a visible size
        assert image["complete"] and image["natural"] > 0, image
        assert image["shown"] and image["width"] > 10 and image["height"] > 10, image
    graph = browser.find_element("id", "graph")
    assert graph.is_displayed() and graph.size["height"] > 50

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    low, high = shot.getextrema()
    assert high - low > 100  # not a blank page: dark text on a light background
    assert sum(1 for count in shot.histogram() if count) > 20
