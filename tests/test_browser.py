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


SERVED = 'the cat sat on the mat. <b>"quoted"</b> & more;\nthe dog sat on the log.\n' * 80


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`charrnn serve`'s application on a free port of 127.0.0.1, in a thread."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import socket
    import threading
    import time

    import uvicorn
    from conftest import train_run

    from charrnn.serve import app as serving

    folder = tmp_path_factory.mktemp("served")
    (folder / "c.txt").write_text(SERVED)
    train_run(folder / "c.txt", folder / "cats", max_steps=60, batch_size=8, seq_len=32,
              lr=1e-2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(serving.create_app(serving.load_runs([folder / "cats"])),
                            host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_the_served_page_completes_on_tab_and_paints_a_cell(browser, server):
    """Write a line, press Tab: the model's continuations appear, Enter takes one; choose a
    cell: the text is painted, character for character, as text (the markup typed stays
    text); and the browser logged no error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: b.find_element(By.ID, "about").text.startswith("1x32 lstm"))
    area = browser.find_element(By.ID, "text")
    written = 'the cat <b>"quoted"</b> & '
    area.send_keys(written)
    area.send_keys(Keys.TAB)
    offers = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#offers li"))
    assert len(offers) == 4 and offers[0].text.startswith("beam")
    offered = offers[0].get_attribute("data-text")
    area.send_keys(Keys.ENTER)
    assert area.get_attribute("value") == written + offered
    cell = browser.find_element(By.ID, "cell")
    cell.clear()
    cell.send_keys("5")
    wait.until(lambda b: b.find_element(By.ID, "painted-title").text.startswith("layer 1 cell 5"))
    spans = browser.find_elements(By.CSS_SELECTOR, "#painted span")
    assert "".join(s.get_attribute("textContent") for s in spans) == written + offered
    assert browser.find_elements(By.CSS_SELECTOR, "#painted b") == []  # typed markup: text
    assert all(s.get_attribute("class").startswith("c") for s in spans)
    assert browser.find_element(By.ID, "status").text == ""
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
