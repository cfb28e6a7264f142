"""The sample page in a real headless browser (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving import Sampler

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium + chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them (scripts/test.sh): missing there is a defect
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def loaded_images(driver) -> list[tuple[int, int]]:
    sizes = driver.execute_script(
        "return [...document.querySelectorAll('img.sample')]"
        ".filter(i => i.complete && i.naturalWidth > 0).map(i => [i.naturalWidth, i.naturalHeight]);"
    )
    return [tuple(s) for s in sizes]


def test_page_shows_samples(browser, live_server, onnx_path, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sampler = Sampler(onnx_path)
    browser.get(live_server + "/")
    wait = WebDriverWait(browser, 60)
    # On load the page lists the models and samples 8 seeds at the trained size.
    wait.until(lambda d: len(loaded_images(d)) == 8, "the first grid did not appear")
    h, w = sampler.output_size()
    assert set(loaded_images(browser)) == {(w, h)}
    assert "rocket" in browser.find_element(By.ID, "model").text

    # Ask for 3 samples twice as wide, from start scale 1.
    for field, value in (("count", "3"), ("scale_h", "2"), ("start_scale", "1"), ("seed", "40")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(loaded_images(d)) == 3, "the wide grid did not appear")
    h2, w2 = sampler.output_size(scale_h=2.0)
    assert set(loaded_images(browser)) == {(w2, h2)}
    captions = [e.text for e in browser.find_elements(By.TAG_NAME, "figcaption")]
    assert captions == ["seed 40", "seed 41", "seed 42"]
    wait.until(lambda d: "3 sample(s)" in d.find_element(By.ID, "status").text)

    # A request the server refuses shows its message instead of a broken grid
    # (the form's own range check would stop this one first: lift it).
    browser.execute_script("document.getElementById('scale_h').removeAttribute('max')")
    element = browser.find_element(By.ID, "scale_h")
    element.clear()
    element.send_keys("1000")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: "scale_h must be in" in d.find_element(By.ID, "status").text, "no error shown")

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SINGAN_TF_SCREENSHOT"):  # refresh the README's picture
        for field, value in (("count", "8"), ("scale_h", "1"), ("start_scale", "0"), ("seed", "0")):
            element = browser.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        browser.find_element(By.ID, "go").click()
        wait.until(lambda d: len(loaded_images(d)) == 8)
        browser.save_screenshot(os.environ["SINGAN_TF_SCREENSHOT"])


def _page_call(driver, expression: str):
    """Await a promise on the page (``window.singan``) and return its value."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"Promise.resolve({expression}).then(done, (e) => done({{error: String(e)}}));"
    )


def _canvas_sizes(driver) -> list[tuple[int, int]]:
    script = "return [...document.querySelectorAll('canvas.sample')].map(c => [c.width, c.height]);"
    return [tuple(s) for s in driver.execute_script(script)]


def test_the_browser_sampler_matches_serving(browser, live_server, onnx_path, tmp_path):
    """/browser/ runs the model in the page (onnxruntime-web) on the exported noise recipe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sampler = Sampler(onnx_path)
    browser.set_script_timeout(120)
    browser.get(live_server + "/browser/")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: "ms per sample" in d.find_element(By.ID, "status").text, "no samples drawn")
    h, w = sampler.output_size()
    assert _canvas_sizes(browser) == [(w, h)] * 4
    # Cross-origin isolated, so onnxruntime-web runs WebAssembly threads.
    assert browser.execute_script("return self.crossOriginIsolated") is True

    for seed, scale_h, scale_v, start in ((0, 1.0, 1.0, 0), (7, 2.0, 1.0, 0), (11, 1.5, 0.7, 1)):
        got = _page_call(browser, f"window.singan.generate({seed}, {scale_h}, {scale_v}, {start})")
        assert "error" not in got, got
        expected = sampler.generate(sampler.noise(seed, 1, scale_h, scale_v, start))
        image = np.asarray(got["data"], np.float32).reshape(got["dims"])
        assert image.shape == expected.shape
        np.testing.assert_allclose(image, expected, atol=1e-3)

    # Animation: a frame of the walk equals serving's walk through the same graph.
    got = _page_call(browser, "window.singan.frame(3, 4, 1, 2)")
    assert "error" not in got, got
    expected = sampler.generate(sampler.walk(seed=3, frames=4, start_scale=1))[2:3]
    np.testing.assert_allclose(np.asarray(got["data"], np.float32).reshape(got["dims"]), expected, atol=1e-3)

    # The form: 2x wider samples, then an animation.
    for field, value in (("count", "2"), ("scale_h", "2"), ("seed", "5")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "go").click()
    h2, w2 = sampler.output_size(scale_h=2.0)
    status = browser.find_element(By.ID, "status")
    wait.until(lambda d: _canvas_sizes(d) == [(w2, h2)] * 2 and "2 samples" in status.text, "no wide samples")
    browser.find_element(By.ID, "animate").click()
    frames = browser.find_element(By.ID, "frames")
    frames.clear()
    frames.send_keys("3")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: "3 frames on wasm" in status.text, "no animation")
    assert _canvas_sizes(browser) == [(w2, h2)]
    shot = tmp_path / "browser.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_the_browser_page_works_from_a_plain_folder(browser, onnx_path, tmp_path):
    """``python -m serving.page OUT --models DIR`` under any static server (here http.server)."""
    import functools
    import http.server
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from serving.page import main as page_main

    assert page_main([str(tmp_path / "site"), "--models", str(onnx_path.parent)]) == 0
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 120).until(lambda d: "ms per sample" in status.text, "no samples drawn")
        h, w = Sampler(onnx_path).output_size()
        assert _canvas_sizes(browser) == [(w, h)] * 4
        # A plain server sends no isolation headers: one WebAssembly thread, same images.
        assert "(1 thread)" in status.text
    finally:
        server.shutdown()
