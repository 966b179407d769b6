"""Measure the in-browser synthesis of the static painter in headless chromium (not a test).

    PYTHONPATH=src python tests/export/measure_browser.py [--sizes 64 256] [--repeats 5]

For each size: the paper generator at the demo preset's width (ngf 8, 6 classes, random weights)
is written as a static painter (`write_painter`), served by `python -m http.server`, and the
page's backend (onnxruntime-web, WebAssembly, one thread) synthesizes one scene map `repeats`
times after a warm-up; prints the median of onnxruntime-web's `session.run` time and the ONNX
file size. Needs chromium, chromedriver, selenium and onnxruntime-web (`make ort-web`).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from pansynth.bench import scene_panoptic
from pansynth.export import write_painter
from pansynth.models import Generator
from pansynth.serve.classes import build_class_table

SYNTHESIZE = """
const [semantic, panoptic, size, done] = arguments;
window.PANSYNTH_BACKEND.synthesize({semantic, panoptic, height: size, width: size, style: null})
  .then(() => done(window.PANSYNTH_LAST.milliseconds), (error) => done(String(error)));
"""


def measure(size: int, repeats: int, browser) -> tuple[float, float]:
    torch.manual_seed(0)
    model = Generator(6, size=(size, size), ngf=8).eval()
    panoptic = scene_panoptic(size, size)[0]
    semantic = torch.where(panoptic >= 1000, panoptic // 1000, panoptic)
    folder = Path(tempfile.mkdtemp(prefix="pansynth-painter-")) / "site"
    write_painter(model, folder, build_class_table(6, None))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(folder)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/info.json", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        browser.get(f"http://127.0.0.1:{port}/")
        browser.set_script_timeout(600)
        times = []
        for index in range(repeats + 1):
            result = browser.execute_async_script(
                SYNTHESIZE, semantic.flatten().tolist(), panoptic.flatten().tolist(), size
            )
            if isinstance(result, str):
                raise RuntimeError(result)
            if index:  # the first run is the warm-up
                times.append(result)
        return statistics.median(times), (folder / "model.onnx").stat().st_size / 2**20
    finally:
        server.terminate()
        shutil.rmtree(folder.parent, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        for size in args.sizes:
            milliseconds, mib = measure(size, args.repeats, browser)
            print(f"{size}x{size}, ngf 8: in-browser synthesis {milliseconds:.0f} ms (median of {args.repeats}), "
                  f"model.onnx {mib:.1f} MiB")  # fmt: skip
    finally:
        browser.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
