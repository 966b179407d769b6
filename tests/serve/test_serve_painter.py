"""The painter at the sizes people train, in headless chromium: a 182-class COCO-Stuff model at 256x512
and the demo's 64x64 six-class model.

The 182-class model is a real generator (random weights, ngf 4) whose class table, size and ignore
value the page gets from /api/info; its images come from a stand-in renderer (a colour per class and
id, made in a millisecond) because one synthesis of that generator takes 5-15 s on the 2-core test
machine, and its synthesis is what the other tests check bit for bit at the small size. The stand-in
can be held back (an Event), which makes the "out of date" mark testable without timing.
The demo-size model synthesizes for real.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_testing import png_bytes, running, start_chromium
from test_serve_browser import BROWSER, DRIVER, Recorder, _results, _wait_for_file, _wait_idle

from pansynth.data.coco_stuff import COCO_STUFF_CLASS_NAMES, COCO_STUFF_THING_CLASSES
from pansynth.data.synthetic import SYNTHETIC_CLASS_NAMES, SYNTHETIC_THING_CLASSES
from pansynth.models import Generator
from pansynth.ops.maps import unknown_value
from pansynth.serve.app import PainterApp
from pansynth.serve.classes import build_class_table

pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

COCO_SIZE = (256, 512)
IGNORE = 255
UNKNOWN_OF_DEMO = unknown_value(6, None)  # the demo model has no ignore value
CAR = COCO_STUFF_CLASS_NAMES.index("car")
PERSON = COCO_STUFF_CLASS_NAMES.index("person")
ROAD = COCO_STUFF_CLASS_NAMES.index("road")
SKY = COCO_STUFF_CLASS_NAMES.index("sky-other")


class StandInRenderer:
    """Maps -> a PNG coloured by class and id, fast; ``hold`` blocks it until ``release``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, semantic: np.ndarray, panoptic: np.ndarray) -> bytes:
        self.gate.wait(30)
        rgb = np.stack([semantic * 37 % 256, panoptic * 53 % 256, (semantic + panoptic) * 11 % 256], axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(rgb.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


@pytest.fixture(scope="module")
def chromium():
    if BROWSER is None or DRIVER is None:
        pytest.skip("no chromium + chromedriver found (`make test` installs Debian's chromium and chromium-driver)")
    profile = tempfile.mkdtemp(prefix="pansynth-chromium-")
    downloads = Path(tempfile.mkdtemp(prefix="pansynth-downloads-"))
    browser = start_chromium(BROWSER, DRIVER, profile, downloads)
    browser.downloads = downloads
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)


@pytest.fixture(scope="module")
def coco_site():
    torch_generator = Generator(182, size=COCO_SIZE, ignore_index=IGNORE, ngf=4, spade_hidden=16).eval()
    metadata = {"class_names": COCO_STUFF_CLASS_NAMES, "thing_classes": COCO_STUFF_THING_CLASSES}
    renderer = StandInRenderer()
    app = PainterApp(torch_generator, build_class_table(182, IGNORE, metadata), render=renderer)
    recorder = Recorder(app)
    with running(recorder) as base:
        yield base, recorder, renderer
    app.close()


@pytest.fixture(scope="module")
def demo_site():
    generator = Generator(6, size=(64, 64), ngf=4, spade_hidden=16).eval()
    metadata = {"class_names": SYNTHETIC_CLASS_NAMES, "thing_classes": SYNTHETIC_THING_CLASSES}
    app = PainterApp(generator, build_class_table(6, None, metadata))
    recorder = Recorder(app)
    with running(recorder) as base:
        yield base, recorder
    app.close()


# ---------------------------------------------------------------------- helpers
def _viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _open(driver, base: str, keep_saved: bool = False) -> None:
    if not keep_saved:
        driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": base, "storageTypes": "indexeddb"})
    driver.get(f"{base}/")
    _wait_idle(driver, 0)


def _body(driver, name: str) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}")


def _screen(driver, x: float, y: float) -> tuple[int, int]:
    """Viewport coordinates of the centre of model pixel (x, y) of the map."""
    return tuple(
        driver.execute_script(
            """
            const rect = document.getElementById("map-canvas").getBoundingClientRect();
            const canvas = document.getElementById("map-canvas");
            return [Math.round(rect.left + (arguments[0] + 0.5) * rect.width / canvas.width),
                    Math.round(rect.top + (arguments[1] + 0.5) * rect.height / canvas.height)];
            """,
            x,
            y,
        )
    )


def _drag(driver, pixels: list[tuple[int, int]], key: str | None = None) -> None:
    """Press over model pixel pixels[0], move through the others, release (holding ``key`` throughout)."""
    builder = ActionBuilder(driver, duration=10)
    pointer, keys = builder.pointer_action, builder.key_action

    def step(action, *args) -> None:  # one tick of the pointer, the keyboard waiting alongside
        action(*args)
        keys.pause(0)

    if key:
        keys.key_down(key)
        pointer.pause(0)
    step(pointer.move_to_location, *_screen(driver, *pixels[0]))
    step(pointer.pointer_down)
    for x, y in pixels[1:]:
        step(pointer.move_to_location, *_screen(driver, x, y))
    step(pointer.pointer_up)
    if key:
        keys.key_up(key)
        pointer.pause(0)
    builder.perform()


def _wait_body(driver, name: str, value: str) -> None:
    WebDriverWait(driver, 15, poll_frequency=0.05).until(lambda d: _body(d, name) == value)


def _click(driver, x: int, y: int, key: str | None = None) -> None:
    _drag(driver, [(x, y)], key)


def _tool(driver, name: str) -> None:
    driver.find_element(By.ID, f"tool-{name}").click()


def _select(driver, cls: int) -> None:
    option = driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{cls}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'nearest'})", option)
    option.click()


def _upload(driver, tmp_path: Path, semantic: np.ndarray, panoptic: np.ndarray, mode: str = "rgb_ids") -> None:
    (tmp_path / "semantic.png").write_bytes(png_bytes(semantic))
    (tmp_path / "panoptic.png").write_bytes(png_bytes(panoptic, mode))
    driver.find_element(By.ID, "upload-semantic").send_keys(str(tmp_path / "semantic.png"))
    driver.find_element(By.ID, "upload-panoptic").send_keys(str(tmp_path / "panoptic.png"))
    shown = _results(driver)
    driver.find_element(By.ID, "upload-load").click()
    _wait_idle(driver, shown)


def _coco_scene() -> tuple[np.ndarray, np.ndarray]:
    """Sky over road, two cars (COCO-Stuff-style ids label * 65536 + k, above 2**16) and a person."""
    height, width = COCO_SIZE
    semantic = np.full(COCO_SIZE, SKY, dtype=np.int64)
    semantic[height // 2 :] = ROAD
    panoptic = semantic * 65536
    semantic[150:200, 50:150] = CAR
    panoptic[150:200, 50:150] = CAR * 65536 + 1
    semantic[160:220, 140:260] = CAR
    panoptic[160:220, 140:260] = CAR * 65536 + 2
    semantic[100:230, 330:360] = PERSON
    panoptic[100:230, 330:360] = PERSON * 65536 + 1
    semantic[0:5, 0:width:7] = IGNORE
    panoptic[0:5, 0:width:7] = 0
    return semantic, panoptic


# ---------------------------------------------------------------------- layout
def _layout(driver) -> dict:
    return driver.execute_script(
        """
        const box = (id) => { const r = document.getElementById(id).getBoundingClientRect();
                              return [r.left, r.top, r.right, r.bottom]; };
        const page = document.scrollingElement;
        const tools = document.getElementById("tools");
        return {map: box("map-viewport"), image: box("result-viewport"), width: innerWidth, height: innerHeight,
                scrollWidth: page.scrollWidth, scrollHeight: page.scrollHeight,
                toolsScroll: tools.scrollHeight > tools.clientHeight && getComputedStyle(tools).overflowY === "auto",
                scale: Number(document.body.dataset.scale)};
        """
    )


def _settle(driver, width: int) -> None:
    """Wait until the page has the new window width and has laid itself out again (two animation frames)."""
    WebDriverWait(driver, 15).until(lambda d: _layout(d)["width"] == width)
    driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")


def _inside(box: list[float], width: int, height: int) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height


def test_layout_side_by_side_fits_any_size_and_stacks_narrow(chromium, coco_site, demo_site):
    try:
        for base, model_width in ((coco_site[0], 512), (demo_site[0], 64)):
            _viewport(chromium, 1400, 900)
            _open(chromium, base)
            for width, height in ((1400, 900), (1280, 720)):
                _viewport(chromium, width, height)
                _settle(chromium, width)
                layout = _layout(chromium)
                assert _inside(layout["map"], width, height) and _inside(layout["image"], width, height), layout
                assert layout["map"][2] <= layout["image"][0] and abs(layout["map"][1] - layout["image"][1]) < 1
                assert layout["scrollWidth"] <= width and layout["scrollHeight"] <= height, layout
                # the map uses the room: at least 36 % of the window wide (two panes and the sidebar) or 70 % high
                shown_width = layout["map"][2] - layout["map"][0]
                assert shown_width > 0.36 * width or layout["map"][3] - layout["map"][1] > 0.7 * height, layout
                assert abs(layout["scale"] - (shown_width - 2) / model_width) < 1.01 / model_width
            if model_width == 512:
                assert layout["toolsScroll"]  # 182 classes: the sidebar scrolls on its own
            _viewport(chromium, 800, 600)
            _settle(chromium, 800)
            layout = _layout(chromium)
            assert layout["scrollWidth"] <= 800, layout
            assert layout["map"][2] <= 800 and layout["image"][2] <= 800 and layout["image"][1] >= layout["map"][3]
        # the 256x512 map at 1280 px is shown below 1x; zoom keeps the image on the same view
        _viewport(chromium, 1280, 720)
        _open(chromium, coco_site[0])
        assert _layout(chromium)["scale"] < 1
        chromium.find_element(By.TAG_NAME, "body").send_keys("+")
        transforms = chromium.execute_script(
            "return ['map-content', 'result-content'].map((id) => document.getElementById(id).style.transform)"
        )
        assert "scale(1.25)" in transforms[0] and transforms[0] == transforms[1]
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# ---------------------------------------------------------------------- classes
def test_search_finds_and_selects_a_class_one_tab_stop_arrows_palette(chromium, coco_site):
    base, recorder, _ = coco_site
    _viewport(chromium, 1400, 900)
    try:
        _open(chromium, base)
        search = chromium.find_element(By.ID, "class-search")
        search.send_keys("car", Keys.ENTER)
        assert _body(chromium, "selected-class") == str(CAR)
        option = chromium.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{CAR}"]')
        assert option.get_attribute("aria-selected") == "true" and option.is_displayed()
        assert chromium.find_element(By.ID, "tool-unknown-label").is_displayed()  # the server names its unknown value
        assert not chromium.find_element(By.ID, "style-section").is_displayed()
        # the search narrowed the list to the names holding "car" (car, carrot, cardboard, carpet)
        shown = chromium.execute_script(
            "return [...document.querySelectorAll('.swatch')].filter((e) => e.offsetParent).map((e) => e.dataset.class)"
        )
        assert sorted(COCO_STUFF_CLASS_NAMES[int(c)] for c in shown) == ["car", "cardboard", "carpet", "carrot"]
        # COCO panoptic's colour for car, in a group named after its supercategory
        assert (
            option.find_element(By.CSS_SELECTOR, ".chip").value_of_css_property("background-color")
            == "rgba(0, 0, 142, 1)"
        )
        assert "vehicle" in option.find_element(By.XPATH, "..").get_attribute("aria-label")
        # the list is one Tab stop; arrow keys move the selection within it
        tab_stops = chromium.execute_script(
            "return document.querySelectorAll('#palette [tabindex], #palette button, #palette input').length"
        )
        assert tab_stops == 0 and chromium.find_element(By.ID, "palette").get_attribute("tabindex") == "0"
        search.send_keys(Keys.ARROW_DOWN)
        assert chromium.switch_to.active_element.get_attribute("id") == "palette"
        chromium.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        after = int(_body(chromium, "selected-class"))
        assert after != CAR and COCO_STUFF_CLASS_NAMES[after] in ("carrot", "cardboard", "carpet")
        chromium.switch_to.active_element.send_keys(Keys.ARROW_UP)
        assert _body(chromium, "selected-class") == str(CAR)
        # and the class paints
        shown_count = _results(chromium)
        _drag(chromium, [(100, 100), (140, 100)])
        _wait_idle(chromium, shown_count)
        semantic, _ = recorder.last()
        assert (semantic == CAR).sum() > 40 and set(np.unique(semantic)) == {CAR, IGNORE}
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# ---------------------------------------------------------------------- objects
def test_rectangle_select_delete_move_alt_click(chromium, coco_site, tmp_path):
    base, recorder, _ = coco_site
    _viewport(chromium, 1400, 900)
    try:
        _open(chromium, base)
        scene_semantic, scene_panoptic = _coco_scene()
        _upload(chromium, tmp_path, scene_semantic, scene_panoptic)

        # rectangle: an axis-aligned box from the pressed pixel to the released one, both included
        _select(chromium, PERSON)
        _tool(chromium, "rect")
        shown = _results(chromium)
        _drag(chromium, [(400, 40), (430, 60), (450, 70)])
        _wait_idle(chromium, shown)
        semantic, panoptic = recorder.last()
        changed = (semantic != scene_semantic) | (panoptic != scene_panoptic)
        rows, cols = np.nonzero(changed)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (40, 70, 400, 450)
        assert changed.sum() == 31 * 51 and (semantic[40:71, 400:451] == PERSON).all()
        box_id = int(panoptic[50, 420])
        assert (panoptic[40:71, 400:451] == box_id).all() and box_id not in scene_panoptic
        # undo keeps the changed region only (run-length coded), not copies of the 256x512 maps
        assert int(_body(chromium, "undo-bytes")) < 20_000

        # polygon: the pixels whose centres lie inside the clicked corners (Enter closes it)
        _tool(chromium, "polygon")
        corners = [(20, 20), (90, 30), (50, 90)]
        for corner in corners:
            _click(chromium, *corner)
        shown = _results(chromium)
        chromium.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        _wait_idle(chromium, shown)
        polygon_semantic, polygon_panoptic = recorder.last()
        inside = _inside_triangle([(x + 0.5, y + 0.5) for x, y in corners], COCO_SIZE)
        painted = (polygon_semantic != semantic) | (polygon_panoptic != panoptic)
        assert inside[1].sum() > 1500 and painted[inside[1]].all() and not painted[~inside[0]].any()
        assert len(np.unique(polygon_panoptic[painted])) == 1 and (polygon_semantic[painted] == PERSON).all()
        shown = _results(chromium)
        chromium.find_element(By.ID, "undo").click()
        _wait_idle(chromium, shown)
        for sent, expected in zip(recorder.last(), (semantic, panoptic)):  # the run-length coded undo is exact
            np.testing.assert_array_equal(sent, expected)

        # Alt-click picks the class and the instance under the pointer
        _tool(chromium, "brush")
        _select(chromium, ROAD)
        _click(chromium, 100, 180, Keys.ALT)
        _wait_body(chromium, "selected-class", str(CAR))
        _wait_body(chromium, "selected-id", str(CAR * 65536 + 1))
        _click(chromium, 300, 20, Keys.ALT)
        _wait_body(chromium, "selected-class", str(SKY))

        # select + delete: exactly the first car's pixels change, to the road and sky around them
        _tool(chromium, "select")
        _click(chromium, 60, 155)
        _wait_body(chromium, "selected-id", str(CAR * 65536 + 1))
        shown = _results(chromium)
        chromium.find_element(By.TAG_NAME, "body").send_keys(Keys.DELETE)
        _wait_idle(chromium, shown)
        deleted_semantic, deleted_panoptic = recorder.last()
        first_car = panoptic == CAR * 65536 + 1
        gone = (deleted_semantic != semantic) | (deleted_panoptic != panoptic)
        np.testing.assert_array_equal(gone, first_car)
        assert (deleted_semantic[first_car] == ROAD).all() and (deleted_panoptic[first_car] == ROAD * 65536).all()

        # move: drag the second car 20 px left and 10 up; its old place shows what lay beneath
        shown = _results(chromium)
        _drag(chromium, [(200, 190), (190, 185), (180, 180)])
        _wait_idle(chromium, shown)
        moved_semantic, moved_panoptic = recorder.last()
        second = CAR * 65536 + 2
        np.testing.assert_array_equal(moved_panoptic == second, np.roll(deleted_panoptic == second, (-10, -20), (0, 1)))
        vacated = (deleted_panoptic == second) & (moved_panoptic != second)
        assert vacated.sum() > 0 and (moved_semantic[vacated] == ROAD).all()
    finally:
        chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _inside_triangle(corners, shape) -> tuple[np.ndarray, np.ndarray]:
    """(pixels whose centre is within 1 px of the triangle, pixels whose centre is inside it by 1 px)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    distances = []
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        # signed distance to each edge, positive inside for a clockwise (in image coordinates) triangle
        length = np.hypot(bx - ax, by - ay)
        distances.append(((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) / length)
    low = np.minimum.reduce(distances)
    return low > -1, low > 1


# ---------------------------------------------------------------------- map view round trip
def test_downloaded_map_view_uploads_back_exactly(chromium, coco_site, tmp_path):
    base, recorder, _ = coco_site
    _open(chromium, base)
    scene = _coco_scene()
    _upload(chromium, tmp_path, *scene)
    target = chromium.downloads / "map_view.png"
    target.unlink(missing_ok=True)
    chromium.find_element(By.ID, "download-map-view").click()
    data = _wait_for_file(target)
    view = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert view.shape == (*COCO_SIZE, 3) and (view[20, 300] == (70, 130, 180)).all()  # sky-other, COCO's colour
    # paint over the scene, then load the map view: the scene comes back, ids included
    _select(chromium, PERSON)
    shown = _results(chromium)
    _drag(chromium, [(10, 10), (250, 200)])
    _wait_idle(chromium, shown)
    assert not np.array_equal(recorder.last()[0], scene[0])
    shown = _results(chromium)
    chromium.find_element(By.ID, "upload-map-view").send_keys(str(target))
    _wait_idle(chromium, shown)
    for sent, expected in zip(recorder.last(), scene):
        np.testing.assert_array_equal(sent, expected)
    # a PNG without the painter's map is refused with a message, and the map stays
    (tmp_path / "plain.png").write_bytes(png_bytes(scene[0]))
    chromium.find_element(By.ID, "upload-map-view").send_keys(str(tmp_path / "plain.png"))
    status = chromium.find_element(By.ID, "status")
    WebDriverWait(chromium, 10).until(lambda _: status.get_attribute("data-kind") == "error")
    assert "carries no map" in status.text


# ---------------------------------------------------------------------- out-of-date mark
def test_image_is_marked_out_of_date_from_edit_until_the_new_image(chromium, coco_site):
    base, recorder, renderer = coco_site
    _open(chromium, base)
    assert _body(chromium, "stale") == "0"
    chromium.execute_script(
        """
        window.staleLog = [];
        new MutationObserver(() => window.staleLog.push([document.body.dataset.stale, document.body.dataset.results]))
          .observe(document.body, {attributes: true, attributeFilter: ["data-stale", "data-results"]});
        """
    )
    before = _results(chromium)
    renderer.gate.clear()  # the next image is held back
    try:
        _select(chromium, CAR)
        _drag(chromium, [(50, 50), (80, 60)])
        badge = chromium.find_element(By.ID, "stale-badge")
        for _ in range(5):
            time.sleep(0.1)
            assert _body(chromium, "stale") == "1" and badge.is_displayed()
            assert float(chromium.find_element(By.ID, "result-image").value_of_css_property("opacity")) < 0.6
            assert _results(chromium) == before
    finally:
        renderer.gate.set()
    _wait_idle(chromium, before)
    assert _body(chromium, "stale") == "0" and not chromium.find_element(By.ID, "stale-badge").is_displayed()
    log = chromium.execute_script("return window.staleLog")
    assert log[0] == ["1", str(before)]
    # "out of date" ends only together with the arrival of a new image
    assert all(stale == "1" for stale, results in log if results == str(before)), log
    assert log[-1][0] == "0" and int(log[-1][1]) > before


# ---------------------------------------------------------------------- no lost work
def test_painted_scene_survives_reload(chromium, demo_site):
    base, recorder = demo_site
    _open(chromium, base)
    for cls, points in ((1, [(0, 40), (63, 40)]), (3, [(20, 20), (30, 25)]), (3, [(34, 24), (44, 24)])):
        _select(chromium, cls)
        shown = _results(chromium)
        _drag(chromium, points)
        _wait_idle(chromium, shown)
    painted = recorder.last()
    assert len(np.unique(painted[1][painted[0] == 3])) == 2
    WebDriverWait(chromium, 10).until(lambda d: _body(d, "saved") == "1")
    # leaving asks first while an edit is not yet stored (here: a stroke still being drawn), not after
    warns = "const e = new Event('beforeunload', {cancelable: true}); dispatchEvent(e); return e.defaultPrevented;"
    assert chromium.execute_script(warns) is False
    _tool(chromium, "eraser")
    builder = ActionBuilder(chromium, duration=10)
    builder.pointer_action.move_to_location(*_screen(chromium, 5, 5)).pointer_down().move_to_location(
        *_screen(chromium, 9, 5)
    )
    builder.perform()
    assert chromium.execute_script(warns) is True
    builder = ActionBuilder(chromium, duration=10)
    builder.pointer_action.pointer_up()
    builder.perform()
    shown = _results(chromium)
    # the eraser painted unknown (id 0) over the sky; the map is restored as it was then
    _wait_idle(chromium, shown)
    erased = recorder.last()
    assert (erased[0] == UNKNOWN_OF_DEMO).sum() >= 5 and (erased[1][erased[0] == UNKNOWN_OF_DEMO] == 0).all()
    painted = erased
    WebDriverWait(chromium, 10).until(lambda d: _body(d, "saved") == "1")
    chromium.refresh()
    _wait_idle(chromium, 0)
    for sent, expected in zip(recorder.last(), painted):
        np.testing.assert_array_equal(sent, expected)
    assert "restored" in chromium.find_element(By.ID, "status").text
    # shortcuts ignore case, "?" opens the help panel
    body = chromium.find_element(By.TAG_NAME, "body")
    body.send_keys("R")
    assert chromium.find_element(By.ID, "tool-rect").is_selected()
    body.send_keys("v")
    assert chromium.find_element(By.ID, "tool-select").is_selected()
    body.send_keys("?")
    help_panel = chromium.find_element(By.ID, "help")
    assert help_panel.is_displayed() and "Alt + click" in help_panel.text
    help_panel.send_keys(Keys.ESCAPE)
    assert not help_panel.is_displayed()


# ---------------------------------------------------------------------- the backend interface, unknown, style
FAKE_BACKEND = """
window.backendCalls = [];
window.PANSYNTH_BACKEND = {
  info: async () => {
    const info = await (await fetch("/api/info")).json();
    return {...info, unknown: {value: %(unknown)d, name: "unknown"}, style: {enabled: true, dim: 8}};
  },
  synthesize: async ({semantic, panoptic, height, width, style}) => {
    window.backendCalls.push({semantic: Array.from(semantic), panoptic: Array.from(panoptic), height, width,
                              style: JSON.parse(JSON.stringify(style))});
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").fillRect(0, 0, width, height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  },
};
"""
UNKNOWN = 250


def _last_call(driver) -> dict:
    call = driver.execute_script("return window.backendCalls[window.backendCalls.length - 1]")
    shape = (call["height"], call["width"])
    call["semantic"] = np.array(call["semantic"]).reshape(shape)
    call["panoptic"] = np.array(call["panoptic"]).reshape(shape)
    return call


def test_swapped_backend_unknown_brush_and_style_controls(chromium, demo_site, tmp_path):
    """The page synthesizes through window.PANSYNTH_BACKEND when a page defines it (the static painter's
    hook), paints 'unknown' as info.unknown.value with id 0, and sends the style fields of the contract."""
    base, recorder = demo_site
    script = chromium.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": FAKE_BACKEND % {"unknown": UNKNOWN}}
    )
    try:
        served = len(recorder.maps)
        _open(chromium, base)
        assert chromium.find_element(By.ID, "tool-unknown-label").is_displayed()
        assert chromium.find_element(By.ID, "style-section").is_displayed()
        first = _last_call(chromium)
        assert first["style"] == {"seed": 0, "restyle": {}, "sample": None} and first["semantic"].shape == (64, 64)
        blank_id = int(first["panoptic"][0, 0])
        assert blank_id != 0  # id 0 is kept for unknown pixels

        page = chromium.find_element(By.TAG_NAME, "body")
        page.send_keys("U")
        shown = _results(chromium)
        _drag(chromium, [(5, 10), (30, 10)])
        _wait_idle(chromium, shown)
        call = _last_call(chromium)
        unknown = call["semantic"] == UNKNOWN
        assert unknown.sum() > 25 and (call["panoptic"][unknown] == 0).all() and (call["panoptic"][~unknown] != 0).all()

        _select(chromium, 3)  # disc, a thing
        shown = _results(chromium)
        _drag(chromium, [(20, 40), (30, 40)])
        _wait_idle(chromium, shown)
        disc = int(_last_call(chromium)["panoptic"][40, 25])
        _tool(chromium, "select")
        _click(chromium, 25, 40)
        _wait_body(chromium, "selected-id", str(disc))
        shown = _results(chromium)
        chromium.find_element(By.ID, "style-restyle").click()
        _wait_idle(chromium, shown)
        restyle = _last_call(chromium)["style"]
        assert restyle["seed"] == 0 and list(restyle["restyle"]) == [str(disc)]
        shown = _results(chromium)
        chromium.find_element(By.ID, "style-new").click()
        _wait_idle(chromium, shown)
        new = _last_call(chromium)["style"]
        assert new["seed"] != 0 and new["restyle"] == {}
        assert chromium.find_element(By.ID, "style-seed").get_attribute("value") == str(new["seed"])
        shown = _results(chromium)
        seed = chromium.find_element(By.ID, "style-seed")
        seed.clear()
        seed.send_keys("42", Keys.TAB)
        _wait_idle(chromium, shown)
        assert _last_call(chromium)["style"]["seed"] == 42
        # without the server, the page reads Folder PNGs itself: 8-bit classes, RGB and 16-bit ids
        semantic = np.zeros((64, 64), dtype=np.int64)
        semantic[10:30, 5:60] = 3
        semantic[40:] = 1
        panoptic = np.where(semantic == 3, 3000 + np.arange(64)[None, :] // 16, semantic) + 70000 * (semantic == 3)
        for mode in ("rgb_ids", "16"):
            ids = panoptic if mode == "rgb_ids" else panoptic % 65536
            _upload(chromium, tmp_path, semantic, ids, mode)
            call = _last_call(chromium)
            np.testing.assert_array_equal(call["semantic"], semantic)
            np.testing.assert_array_equal(call["panoptic"], ids)
        (tmp_path / "small.png").write_bytes(png_bytes(semantic[:32]))
        chromium.find_element(By.ID, "upload-semantic").send_keys(str(tmp_path / "small.png"))
        chromium.find_element(By.ID, "upload-load").click()
        status = chromium.find_element(By.ID, "status")
        WebDriverWait(chromium, 10).until(lambda _: status.get_attribute("data-kind") == "error")
        assert "32x64 (HxW) but this model takes 64x64" in status.text
        assert len(recorder.maps) == served  # nothing went to /api/synthesize
    finally:
        chromium.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
