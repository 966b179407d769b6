"""Measure the painter page in headless chromium: mouseup-to-image latency, the debounce, page memory.

    PYTHONPATH=src python tests/serve/measure_painter.py [--strokes 9] [--json painter.json]

- Latency: the demo preset's generator (ngf 8, 6 classes, random weights) at the demo's 64x64 and at
  256x256, served in this process; one stroke at a time, from the page's pointerup to the new image
  shown (the page records it in ``data-latency-ms``), with the page's debounce at 0 (the default) and
  at 150 ms (the former fixed debounce), plus how many requests a burst of 10 undos sends.
- Memory: a 512x1024 model (35 Cityscapes classes) with a stand-in renderer (the page's memory does
  not depend on the generator); the JavaScript heap after a forced garbage collection before and
  after 100 strokes of a 34 px brush, and the bytes the undo history holds.

Not a test: a script that reuses the tests' helpers (see docs/serve.md for the figures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serve_testing import running, start_chromium  # noqa: E402
from test_serve_painter import StandInRenderer  # noqa: E402

from pansynth.data.cityscapes import CITYSCAPES_CLASS_NAMES, CITYSCAPES_THING_CLASSES  # noqa: E402
from pansynth.data.synthetic import SYNTHETIC_CLASS_NAMES, SYNTHETIC_THING_CLASSES  # noqa: E402
from pansynth.models import Generator  # noqa: E402
from pansynth.serve.app import PainterApp  # noqa: E402
from pansynth.serve.classes import build_class_table  # noqa: E402


def body(driver, name: str) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}") or ""


def wait_idle(driver, results_before: int, timeout: float = 120) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(
        lambda d: body(d, "pending") == "0" and int(body(d, "results")) > results_before
    )


def stroke(driver, points: list[tuple[float, float]]) -> None:
    """A drag through model pixels ``points`` of the map."""
    screen = driver.execute_script(
        """
        const rect = document.getElementById("map-canvas").getBoundingClientRect();
        const canvas = document.getElementById("map-canvas");
        return arguments[0].map(([x, y]) => [Math.round(rect.left + (x + 0.5) * rect.width / canvas.width),
                                             Math.round(rect.top + (y + 0.5) * rect.height / canvas.height)]);
        """,
        points,
    )
    builder = ActionBuilder(driver, duration=5)
    pointer = builder.pointer_action
    pointer.move_to_location(*screen[0])
    pointer.pointer_down()
    for x, y in screen[1:]:
        pointer.move_to_location(x, y)
    pointer.pointer_up()
    builder.perform()


def renderer_rss_mib(root_pid: int) -> float:
    """Resident memory of the renderer processes below ``root_pid`` (this script's chromedriver)."""
    parents: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("PPid:"):
                    parents[int(status.parent.name)] = int(line.split()[1])
        except OSError:
            continue

    def below(pid: int) -> bool:
        while pid in parents and pid != 0:
            if parents[pid] == root_pid:
                return True
            pid = parents[pid]
        return False

    total = 0
    for pid in parents:
        try:
            if not below(pid) or b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total / 2**20


def open_page(driver, base: str, query: str = "") -> None:
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": base, "storageTypes": "indexeddb"})
    driver.get(f"{base}/{query}")
    wait_idle(driver, 0)


def measure_latency(driver, size: int, strokes: int) -> dict:
    torch.manual_seed(0)
    generator = Generator(6, size=(size, size), ngf=8).eval()
    metadata = {"class_names": SYNTHETIC_CLASS_NAMES, "thing_classes": SYNTHETIC_THING_CLASSES}
    app = PainterApp(generator, build_class_table(6, None, metadata))
    result: dict = {"size": f"{size}x{size}", "model": "demo preset, ngf 8, 6 classes, random weights"}
    try:
        with running(app) as base:
            for debounce in (0, 150):
                open_page(driver, base, f"?debounce={debounce}")
                latencies, syntheses = [], []
                for k in range(strokes):
                    driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{1 + k % 5}"]').click()
                    shown = int(body(driver, "results"))
                    y = (0.2 + 0.6 * k / max(1, strokes - 1)) * size
                    stroke(driver, [(0.1 * size, y), (0.5 * size, y + 0.05 * size), (0.9 * size, y)])
                    wait_idle(driver, shown)
                    latencies.append(float(body(driver, "latency-ms")))
                    timing = driver.find_element(By.ID, "timing").text
                    syntheses.append(float(timing.split("synthesis ")[1].split(" ms")[0]))
                # a burst: 10 undos pressed quickly, then how many requests went out
                requests = int(body(driver, "requests"))
                shown = int(body(driver, "results"))
                page = driver.find_element(By.TAG_NAME, "body")
                for _ in range(10):
                    page.send_keys(Keys.CONTROL, "z")
                wait_idle(driver, shown)
                time.sleep(0.3)
                result[f"debounce_{debounce}"] = {
                    "mouseup_to_image_ms_median": statistics.median(latencies),
                    "mouseup_to_image_ms_min": min(latencies),
                    "mouseup_to_image_ms_max": max(latencies),
                    "synthesis_ms_median": statistics.median(syntheses),
                    # what the page, the transfers and the server add to the synthesis, stroke by stroke
                    "overhead_ms_median": statistics.median(t - m for t, m in zip(latencies, syntheses)),
                    "strokes": strokes,
                    "requests_for_10_undos": int(body(driver, "requests")) - requests,
                }
    finally:
        app.close()
    return result


def measure_memory(driver, strokes: int = 100) -> dict:
    size = (512, 1024)
    generator = Generator(35, size=size, ngf=1, spade_hidden=1).eval()  # never run: the renderer stands in
    metadata = {"class_names": CITYSCAPES_CLASS_NAMES, "thing_classes": CITYSCAPES_THING_CLASSES}
    app = PainterApp(generator, build_class_table(35, None, metadata), render=StandInRenderer())
    try:
        with running(app) as base:
            open_page(driver, base)
            driver.execute_cdp_cmd("Performance.enable", {})

            def heap() -> dict:
                """JS heap, the typed arrays' backing stores, and the renderer processes' resident memory (MiB)."""
                driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
                usage = driver.execute_cdp_cmd("Runtime.getHeapUsage", {})
                return {
                    "js_heap": round(usage["usedSize"] / 2**20, 1),
                    "array_buffers": round(usage.get("backingStorageSize", float("nan")) / 2**20, 1),
                    "renderer_rss": round(renderer_rss_mib(driver.service.process.pid), 1),
                }

            before = heap()
            driver.execute_script("document.getElementById('brush-size').value = '34'")
            classes = [7, 26, 24, 21, 11]  # road, car, person, vegetation, building
            start = time.perf_counter()
            for k in range(strokes):
                driver.find_element(By.CSS_SELECTOR, f'.swatch[data-class="{classes[k % 5]}"]').click()
                y0 = 40 + (k * 37) % 430
                y1 = 40 + (k * 53 + 200) % 430
                stroke(driver, [(30 + 9 * s * 10, y0 + (y1 - y0) * s / 10) for s in range(11)])
            shown = int(body(driver, "results"))
            WebDriverWait(driver, 300, poll_frequency=0.1).until(lambda d: body(d, "pending") == "0")
            seconds = time.perf_counter() - start
            del shown
            after = heap()
            undo_bytes = int(body(driver, "undo-bytes"))
    finally:
        app.close()
    full_copies = 2 * 4 * size[0] * size[1] * strokes / 2**20
    return {
        "size": "512x1024",
        "strokes": strokes,
        "brush_px": 34,
        "page_mib_before": before,
        "page_mib_after": after,
        "undo_history_mib": round(undo_bytes / 2**20, 2),
        "former_undo_mib (two Int32 copies per step)": round(full_copies, 1),
        "seconds_for_the_strokes": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=9)
    parser.add_argument("--json")
    parser.add_argument("--browser", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    profile, downloads = tempfile.mkdtemp(), Path(tempfile.mkdtemp())
    driver = start_chromium(args.browser, args.driver, profile, downloads)
    results: dict = {}
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        if not args.skip_latency:
            results["latency"] = [measure_latency(driver, size, args.strokes) for size in (64, 256)]
        if not args.skip_memory:
            results["memory"] = measure_memory(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)
    results["load_average_after"] = (
        Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
