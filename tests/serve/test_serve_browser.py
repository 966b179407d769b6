"""The painter page driven in a real headless browser (Debian's chromium through selenium + chromedriver).

The server runs in this process behind a recorder that decodes every map the page sends, so the
tests check what reached the server and that the image shown is the library's synthesis of it.
Skipped only when no chromium / chromedriver (or selenium) can be found: `make test` installs them.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_testing import (
    CLASS_NAMES,
    HEIGHT,
    IGNORE_INDEX,
    THING_CLASSES,
    WIDTH,
    decode_png,
    expected_image,
    make_app,
    png_bytes,
    read_map_png,
    running,
    scene_maps,
    start_chromium,
)
from werkzeug.wrappers import Request

from pansynth.data import build_dataset
from pansynth.data.folder import write_classes_json
from pansynth.data.io import write_id_png, write_label_png
from pansynth.serve.app import SampleList

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CAR, ROAD = 2, 1


def _find(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        path = shutil.which(candidate)
        if path:
            return path
    return None


BROWSER = _find(("/usr/bin/chromium", "chromium", "chromium-browser"))
DRIVER = _find(("/usr/bin/chromedriver", "chromedriver"))


class Recorder:
    """WSGI middleware that keeps the (semantic, panoptic) maps of every synthesis request."""

    def __init__(self, app) -> None:
        self.app = app
        self.maps: list[tuple[np.ndarray, np.ndarray]] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["PATH_INFO"] == "/api/synthesize" and environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            sent = Request.from_values(
                input_stream=io.BytesIO(body),
                content_length=len(body),
                content_type=environ["CONTENT_TYPE"],
                method="POST",
            )
            maps = (read_map_png(sent.files["semantic"].read()), read_map_png(sent.files["panoptic"].read()))
            with self.lock:
                self.maps.append(maps)
        return self.app(environ, start_response)

    def last(self) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return self.maps[-1]


@pytest.fixture(scope="module")
def downloads():
    directory = Path(tempfile.mkdtemp(prefix="pansynth-downloads-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(downloads):
    if BROWSER is None or DRIVER is None:
        pytest.skip("no chromium + chromedriver found (`make test` installs Debian's chromium and chromium-driver)")
    profile = tempfile.mkdtemp(prefix="pansynth-chromium-")
    browser = start_chromium(BROWSER, DRIVER, profile, downloads)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


SAMPLE_MAPS = {name: scene_maps(seed) for seed, name in enumerate(["street_a", "street_b"])}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> SampleList:
    """A Folder dataset of two scenes stored at twice the model's size."""
    root = tmp_path_factory.mktemp("dataset")
    write_classes_json(root / "classes.json", CLASS_NAMES, THING_CLASSES, ignore_index=IGNORE_INDEX)
    for kind in ("images", "semantic", "panoptic"):
        (root / kind).mkdir()
    for name, (semantic, panoptic) in SAMPLE_MAPS.items():
        double = np.ones((2, 2), dtype=np.int64)
        write_label_png(root / "semantic" / f"{name}.png", np.kron(semantic, double))
        write_id_png(root / "panoptic" / f"{name}.png", np.kron(panoptic, double))
        Image.fromarray(np.zeros((2 * HEIGHT, 2 * WIDTH, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
    return SampleList(build_dataset("folder", root), (HEIGHT, WIDTH))


@pytest.fixture(scope="module")
def site(generator, export_dir, samples):
    app = make_app(generator, export_dir, samples=samples)
    recorder = Recorder(app)
    with running(recorder) as base:
        yield base, recorder
    app.close()


# ---------------------------------------------------------------------- page helpers
def _results(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-results"))


def _wait_idle(driver, results_before: int) -> None:
    """Wait until a new image is shown and nothing is pending (no debounce timer, no request)."""
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 30, poll_frequency=0.05).until(
        lambda _: body.get_attribute("data-pending") == "0" and int(body.get_attribute("data-results")) > results_before
    )


def _open(driver, base: str, keep_saved: bool = False) -> None:
    """Open the page on a blank map (the map autosaved by an earlier test is dropped unless ``keep_saved``)."""
    if not keep_saved:
        driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": base, "storageTypes": "indexeddb"})
    driver.get(f"{base}/")
    _wait_idle(driver, 0)


def _shown_image(driver) -> np.ndarray:
    """The pixels of the image the page shows (read back through a canvas)."""
    pixels = driver.execute_script(
        """
        const image = document.getElementById("result-image");
        const canvas = document.createElement("canvas");
        canvas.width = image.naturalWidth;
        canvas.height = image.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(image, 0, 0);
        return [canvas.width, canvas.height, Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
        """
    )
    width, height, data = pixels
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def _select_class(driver, cls: int) -> None:
    driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{cls}"]').click()


def _stroke(driver, points: list[tuple[int, int]], shift: bool = False) -> None:
    """Drag over the map canvas through ``points`` (pixel offsets from its centre)."""
    canvas = driver.find_element(By.ID, "map-canvas")
    actions = ActionChains(driver, duration=10)
    if shift:
        actions.key_down(Keys.SHIFT)
    actions.move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release()
    if shift:
        actions.key_up(Keys.SHIFT)
    actions.perform()


def _line(x0: int, x1: int, y: int = 0, steps: int = 6) -> list[tuple[int, int]]:
    return [(round(x0 + (x1 - x0) * s / steps), y) for s in range(steps + 1)]


def _click_pixel(driver, x: int, y: int) -> None:
    """Press and release the mouse over model pixel (x, y) of the map."""
    canvas = driver.find_element(By.ID, "map-canvas")
    scale = canvas.size["width"] / WIDTH
    offset = (round((x + 0.5) * scale - canvas.size["width"] / 2), round((y + 0.5) * scale - canvas.size["height"] / 2))
    ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *offset).click().perform()


def _flood_region(semantic: np.ndarray, panoptic: np.ndarray, y: int, x: int) -> np.ndarray:
    """Literal 4-connected flood fill: the pixels reachable from (y, x) through the same class and id."""
    region = np.zeros(semantic.shape, dtype=bool)
    queue = deque([(y, x)])
    region[y, x] = True
    while queue:
        cy, cx = queue.popleft()
        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
            if (
                0 <= ny < semantic.shape[0]
                and 0 <= nx < semantic.shape[1]
                and not region[ny, nx]
                and semantic[ny, nx] == semantic[y, x]
                and panoptic[ny, nx] == panoptic[y, x]
            ):
                region[ny, nx] = True
                queue.append((ny, nx))
    return region


def _touching(panoptic: np.ndarray, a: int, b: int) -> bool:
    right = (panoptic[:, :-1] == a) & (panoptic[:, 1:] == b) | (panoptic[:, :-1] == b) & (panoptic[:, 1:] == a)
    down = (panoptic[:-1] == a) & (panoptic[1:] == b) | (panoptic[:-1] == b) & (panoptic[1:] == a)
    return bool(right.any() or down.any())


# ---------------------------------------------------------------------- tests
def test_two_strokes_paint_two_touching_instances(driver, site, generator):
    base, recorder = site
    _open(driver, base)
    before = _shown_image(driver)
    blank_semantic, blank_panoptic = recorder.last()
    assert (blank_semantic == IGNORE_INDEX).all() and len(np.unique(blank_panoptic)) == 1  # cleared to "unlabeled"
    np.testing.assert_array_equal(before, expected_image(generator, blank_semantic, blank_panoptic))

    _select_class(driver, CAR)
    Select(driver.find_element(By.ID, "brush-size")).select_by_value("5")
    shown = _results(driver)
    _stroke(driver, _line(-200, -40))
    _stroke(driver, _line(-30, 150))
    _wait_idle(driver, shown)

    semantic, panoptic = recorder.last()
    assert semantic.shape == (HEIGHT, WIDTH)
    car_ids = np.unique(panoptic[semantic == CAR])
    assert len(car_ids) == 2, car_ids
    first, second = sorted(car_ids, key=lambda i: np.nonzero(panoptic == i)[1].mean())
    assert _touching(panoptic, first, second)
    # the strokes ran along the middle row, left then right (pointer -> pixel mapping of the page)
    rows = np.nonzero(semantic == CAR)[0]
    assert abs(rows.mean() - HEIGHT / 2) < 1.5
    shown_width = driver.find_element(By.ID, "map-canvas").size["width"]
    scale = shown_width / WIDTH
    assert scale > 2  # enlarged to fit the window (any factor, not only whole ones)
    assert np.nonzero(panoptic == first)[1].min() <= (shown_width / 2 - 200) / scale + 1
    assert np.nonzero(panoptic == second)[1].max() >= (shown_width / 2 + 150) / scale - 1
    assert not np.isin(car_ids, blank_panoptic).any()
    # the rest stayed one "unlabeled" segment
    assert (semantic[semantic != CAR] == IGNORE_INDEX).all() and len(np.unique(panoptic[semantic != CAR])) == 1

    after = _shown_image(driver)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, expected_image(generator, semantic, panoptic))


def test_stuff_joins_one_segment_continue_instance_undo_redo(driver, site):
    base, recorder = site
    _open(driver, base)
    _select_class(driver, ROAD)
    for y in (-80, 80):  # two separate road strokes
        shown = _results(driver)
        _stroke(driver, _line(-200, 200, y))
        _wait_idle(driver, shown)
    semantic, panoptic = recorder.last()
    assert len(np.unique(panoptic[semantic == ROAD])) == 1

    _select_class(driver, CAR)
    shown = _results(driver)
    _stroke(driver, _line(-100, 0))
    _wait_idle(driver, shown)
    one_stroke = recorder.last()
    shown = _results(driver)
    _stroke(driver, _line(0, 100, 40), shift=True)  # held Shift: the same instance goes on
    _wait_idle(driver, shown)
    semantic, panoptic = recorder.last()
    assert len(np.unique(panoptic[semantic == CAR])) == 1
    assert (semantic == CAR).sum() > (one_stroke[0] == CAR).sum()
    two_strokes = recorder.last()

    shown = _results(driver)
    driver.find_element(By.ID, "undo").click()
    _wait_idle(driver, shown)
    for sent, expected in zip(recorder.last(), one_stroke):
        np.testing.assert_array_equal(sent, expected)
    shown = _results(driver)
    driver.find_element(By.ID, "redo").click()
    _wait_idle(driver, shown)
    for sent, expected in zip(recorder.last(), two_strokes):
        np.testing.assert_array_equal(sent, expected)


def test_upload_a_map(driver, site, generator, tmp_path):
    base, recorder = site
    _open(driver, base)
    semantic, panoptic = scene_maps(5)
    (tmp_path / "semantic.png").write_bytes(png_bytes(semantic))
    (tmp_path / "panoptic.png").write_bytes(png_bytes(panoptic, "16"))
    driver.find_element(By.ID, "upload-semantic").send_keys(str(tmp_path / "semantic.png"))
    driver.find_element(By.ID, "upload-panoptic").send_keys(str(tmp_path / "panoptic.png"))
    shown = _results(driver)
    driver.find_element(By.ID, "upload-load").click()
    _wait_idle(driver, shown)
    sent_semantic, sent_panoptic = recorder.last()
    np.testing.assert_array_equal(sent_semantic, semantic)
    np.testing.assert_array_equal(sent_panoptic, panoptic)
    np.testing.assert_array_equal(_shown_image(driver), expected_image(generator, semantic, panoptic))

    # a map of the wrong size is refused with the server's message, and the map stays as it was
    (tmp_path / "small.png").write_bytes(png_bytes(semantic[:16]))
    driver.find_element(By.ID, "upload-semantic").send_keys(str(tmp_path / "small.png"))
    driver.find_element(By.ID, "upload-load").click()
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, 10).until(lambda _: status.get_attribute("data-kind") == "error")
    assert f"{HEIGHT}x{WIDTH}" in status.text and "16x64" in status.text


def test_sample_fill_eraser_clear(driver, site, generator):
    base, recorder = site
    _open(driver, base)
    shown = _results(driver)
    Select(driver.find_element(By.ID, "sample-select")).select_by_visible_text("street_b")
    driver.find_element(By.ID, "sample-load").click()
    _wait_idle(driver, shown)
    sample_semantic, sample_panoptic = SAMPLE_MAPS["street_b"]  # stored at 2x: the server halves it
    for sent, expected in zip(recorder.last(), SAMPLE_MAPS["street_b"]):
        np.testing.assert_array_equal(sent, expected)

    # fill the road (a stuff segment holding holes) with cars: one new instance, exactly the road's region
    _select_class(driver, CAR)
    driver.find_element(By.ID, "tool-fill").click()
    shown = _results(driver)
    _click_pixel(driver, 60, 30)
    _wait_idle(driver, shown)
    semantic, panoptic = recorder.last()
    region = _flood_region(sample_semantic, sample_panoptic, 30, 60)
    assert sample_semantic[30, 60] == ROAD and 100 < region.sum() < (sample_semantic == ROAD).sum() + 1
    np.testing.assert_array_equal(semantic[~region], sample_semantic[~region])
    np.testing.assert_array_equal(panoptic[~region], sample_panoptic[~region])
    assert (semantic[region] == CAR).all() and len(np.unique(panoptic[region])) == 1
    assert not np.isin(panoptic[region], sample_panoptic).any()
    np.testing.assert_array_equal(_shown_image(driver), expected_image(generator, semantic, panoptic))

    # the eraser paints unknown: the model's unknown value (here its ignore value) with id 0
    driver.find_element(By.ID, "tool-eraser").click()
    Select(driver.find_element(By.ID, "brush-size")).select_by_value("8")
    shown = _results(driver)
    _stroke(driver, _line(-150, 150))
    _wait_idle(driver, shown)
    erased_semantic, erased_panoptic = recorder.last()
    changed = (erased_semantic != semantic) | (erased_panoptic != panoptic)
    assert changed.sum() > 100
    assert (erased_semantic[changed] == IGNORE_INDEX).all() and (erased_panoptic[changed] == 0).all()

    shown = _results(driver)
    driver.find_element(By.ID, "clear").click()
    _wait_idle(driver, shown)
    cleared_semantic, cleared_panoptic = recorder.last()
    assert (cleared_semantic == IGNORE_INDEX).all() and len(np.unique(cleared_panoptic)) == 1


def _wait_for_file(path: Path, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size > 0:
            time.sleep(0.1)  # let chromium finish renaming its partial file
            return path.read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not downloaded")


def test_download_image_and_maps(driver, site, generator, downloads):
    base, recorder = site
    _open(driver, base)
    _select_class(driver, CAR)
    shown = _results(driver)
    _stroke(driver, _line(-120, 60, 30))
    _wait_idle(driver, shown)
    semantic, panoptic = recorder.last()
    for name in ("synthesized.png", "semantic.png", "panoptic.png"):
        (downloads / name).unlink(missing_ok=True)

    driver.find_element(By.ID, "download-image").click()
    image = decode_png(_wait_for_file(downloads / "synthesized.png"))
    np.testing.assert_array_equal(image, expected_image(generator, semantic, panoptic))

    driver.find_element(By.ID, "download-semantic").click()
    np.testing.assert_array_equal(read_map_png(_wait_for_file(downloads / "semantic.png")), semantic)
    driver.find_element(By.ID, "download-panoptic").click()
    np.testing.assert_array_equal(read_map_png(_wait_for_file(downloads / "panoptic.png")), panoptic)
