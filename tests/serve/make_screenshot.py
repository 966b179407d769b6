"""Paint a scene in the `pansynth serve` page with headless chromium and save a screenshot (docs/images/serve.png).

    PYTHONPATH=src python tests/serve/make_screenshot.py --checkpoint demo_out/run \\
        --root demo_out/data --split val --out docs/images/serve.png

The scene, for the demo's procedural classes: ground below the sky, a wall, two touching discs
(two instances of one thing class) and a box; the first disc is then selected. Not a test: a script
that reuses the tests' helpers.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from PIL import Image  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from serve_testing import start_chromium  # noqa: E402

from pansynth.inference import load_generator  # noqa: E402
from pansynth.serve.server import listen, load_painter  # noqa: E402

# (class, brush size, [(x, y), ...] in model pixels of the 64x64 demo map): one stroke each
DEMO_SCENE = [
    (1, 21, [(0, 40), (63, 40)]),  # ground
    (1, 21, [(63, 54), (0, 54)]),
    (1, 21, [(0, 63), (63, 63)]),
    (2, 13, [(0, 12), (20, 12)]),  # wall
    (2, 13, [(20, 21), (0, 21)]),
    (3, 13, [(24, 40)]),  # disc 1
    (3, 13, [(35, 44)]),  # disc 2, touching disc 1
    (4, 13, [(52, 36), (54, 36)]),  # a box
]


def paint(driver, scene, model_size: int) -> None:
    canvas = driver.find_element(By.ID, "map-canvas")
    scale = canvas.size["width"] / model_size
    body = driver.find_element(By.TAG_NAME, "body")
    for cls, brush, points in scene:
        if cls is not None:
            driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{cls}"]').click()
            Select(driver.find_element(By.ID, "brush-size")).select_by_value(str(brush))
        offsets = [
            (round((x + 0.5) * scale - canvas.size["width"] / 2), round((y + 0.5) * scale - canvas.size["height"] / 2))
            for x, y in points
        ]
        actions = ActionChains(driver, duration=10).move_to_element_with_offset(canvas, *offsets[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(offsets, offsets[1:]):
            actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()
    WebDriverWait(driver, 60, poll_frequency=0.1).until(lambda _: body.get_attribute("data-pending") == "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root")
    parser.add_argument("--split")
    parser.add_argument("--out", default="docs/images/serve.png")
    parser.add_argument("--browser", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    app = load_painter(load_generator(args.checkpoint, device="cpu"), root=args.root, split=args.split)
    server = listen(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    profile, downloads = tempfile.mkdtemp(), Path(tempfile.mkdtemp())
    driver = start_chromium(args.browser, args.driver, profile, downloads)
    try:
        # the exact viewport of the picture
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1360, "height": 720, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 60).until(lambda _: body.get_attribute("data-results") != "0")
        paint(driver, DEMO_SCENE, app.size[1])
        # select the first disc: highlighted on the map and the image, listed with its class and area
        driver.find_element(By.ID, "tool-select").click()
        paint(driver, [(None, None, [(24, 40)])], app.size[1])
        driver.execute_script("document.getElementById('objects-details').open = true")
        WebDriverWait(driver, 10).until(lambda _: body.get_attribute("data-selected-id"))
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        app.close()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
    # A palette of 256 colours keeps the picture small for the README.
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
