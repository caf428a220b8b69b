"""The HTML export in a real browser: headless Chromium paints the characters and the hover
panel shows the model's top-5 predictions. Skips where Chromium or its driver is absent
(`.ci/run` installs Debian's chromium and chromium-driver)."""

import shutil

import pytest
from test_inspect import HOSTILE, hostile_page

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium is not installed")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_paints_characters_and_hover_shows_top5(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path = tmp_path / "cells.html"
    path.write_text(hostile_page())
    browser.get(path.as_uri())
    spans = browser.find_elements(By.CSS_SELECTOR, ".text span")
    assert len(spans) == len(HOSTILE)
    # the hostile text is on the page as text, and nothing in it ran
    text = browser.find_element(By.CSS_SELECTOR, ".text").text
    assert '</script><script>alert(1)</script>' in text
    assert browser.execute_script("return document.querySelectorAll('script').length") == 2
    assert browser.find_elements(By.TAG_NAME, "i") == []
    # -1 is painted red, +1 blue, the middle near white
    assert spans[0].value_of_css_property("background-color") == "rgba(202, 0, 32, 1)"
    assert spans[-1].value_of_css_property("background-color") == "rgba(5, 113, 176, 1)"
    ActionChains(browser).move_to_element(spans[5]).perform()
    panel = browser.find_element(By.ID, "panel").text
    assert panel.startswith("position 5") and "next character, likeliest first:" in panel
    assert panel.count("20.0%") == 5 and '"<"' in panel and '"&"' in panel
