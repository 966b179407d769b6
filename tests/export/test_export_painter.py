"""The static in-browser painter (`pansynth export RUN --painter DIR`) in a real headless chromium,
served by `python -m http.server` in a subprocess: the image is computed in the page by
onnxruntime-web and equals the library's `synthesize` on the same maps."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pansynth.export.painter import find_ort_web
from pansynth.inference import load_generator, synthesize

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
CAR = 2
IGNORE_INDEX = 255  # the ignore value of the runs in conftest.py, also their unknown value
SIZE = (64, 64)


def _ort_web_or_skip() -> Path:
    try:
        return find_ort_web()
    except FileNotFoundError as error:
        pytest.skip(f"{error}")


@pytest.fixture(scope="module")
def painter(onnx_files) -> Path:
    _ort_web_or_skip()
    folder = onnx_files["paper", SIZE].parent / "painter"  # written by `pansynth export RUN --out F --painter DIR`
    assert folder.is_dir()
    assert (folder / "model.onnx").read_bytes() == onnx_files["paper", SIZE].read_bytes()
    return folder


@pytest.fixture(scope="module")
def site(painter):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(painter)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/info.json", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def driver():
    if BROWSER is None or DRIVER is None:
        pytest.skip("no chromium + chromedriver found (`make test` installs Debian's chromium and chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pansynth-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", f"--user-data-dir={profile}", "--window-size=1400,900"):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _results(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-results"))


def _wait_idle(driver, results_before: int) -> None:
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 120, poll_frequency=0.05).until(
        lambda _: body.get_attribute("data-pending") == "0" and int(body.get_attribute("data-results")) > results_before
    )


def _stroke(driver, x0: int, x1: int) -> None:
    canvas = driver.find_element(By.ID, "map-canvas")
    actions = ActionChains(driver, duration=10).move_to_element_with_offset(canvas, x0, 0).click_and_hold()
    for _ in range(6):
        actions.move_by_offset(round((x1 - x0) / 6), 0)
    actions.release().perform()


def _last(driver) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    last = driver.execute_script(
        "const l = window.PANSYNTH_LAST; return [l.semantic, l.panoptic, Array.from(l.image), l.milliseconds];"
    )
    semantic = np.array(last[0], dtype=np.int64).reshape(SIZE)
    panoptic = np.array(last[1], dtype=np.int64).reshape(SIZE)
    image = np.array(last[2], dtype=np.float32).reshape(3, *SIZE)
    return semantic, panoptic, image, float(last[3])


def test_static_painter_synthesizes_in_the_page_as_the_library_does(driver, site, painter, runs):
    info = json.loads((painter / "info.json").read_text())
    assert info["samples"] == [] and info["style"]["enabled"] is False
    assert [c["name"] for c in info["classes"][:4]] == ["road", "tree", "car", "person"]
    assert {"model.onnx", "ort_backend.js", "index.html", "painter.js"} <= {p.name for p in painter.iterdir()}
    assert (painter / "ort" / "LICENSE.txt").is_file()

    driver.get(f"{site}/")
    _wait_idle(driver, 0)
    assert driver.execute_script("return window.PANSYNTH_BACKEND.name") == "onnxruntime-web"
    driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{CAR}"]').click()
    Select(driver.find_element(By.ID, "brush-size")).select_by_value("5")
    shown = _results(driver)
    _stroke(driver, -160, -20)
    _stroke(driver, -10, 140)
    _wait_idle(driver, shown)

    semantic, panoptic, image, milliseconds = _last(driver)
    car_ids = np.unique(panoptic[semantic == CAR])
    assert len(car_ids) == 2, car_ids  # two instances of one class
    a, b = car_ids
    touching = ((panoptic[:, :-1] == a) & (panoptic[:, 1:] == b)) | ((panoptic[:, :-1] == b) & (panoptic[:, 1:] == a))
    assert touching.any()
    generator = load_generator(runs["paper", SIZE])
    expected = synthesize(generator, torch.from_numpy(semantic), torch.from_numpy(panoptic)).numpy()
    assert np.abs(image - expected).max() < 1e-3
    assert milliseconds > 0
    print(f"in-browser synthesis {SIZE[0]}x{SIZE[1]}: {milliseconds:.1f} ms")

    # the eraser paints unknown (info.unknown.value with id 0), which the page feeds to the graph as -1
    assert info["unknown"] == {"value": IGNORE_INDEX, "name": "unknown"}
    driver.find_element(By.ID, "tool-eraser").click()
    shown = _results(driver)
    _stroke(driver, -100, 100)
    _wait_idle(driver, shown)
    before = semantic, panoptic
    semantic, panoptic, image, _ = _last(driver)
    erased = (semantic != before[0]) | (panoptic != before[1])
    assert erased.sum() > 20 and (semantic[erased] == IGNORE_INDEX).all() and (panoptic[erased] == 0).all()
    assert (before[0][erased] == CAR).any()  # the stroke crossed a car
    expected = synthesize(generator, torch.from_numpy(semantic), torch.from_numpy(panoptic)).numpy()
    assert np.abs(image - expected).max() < 1e-3
