"""Helpers of the serve tests: a tiny exported generator, a server on a free port, maps, PNGs, HTTP."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pansynth.inference import load_generator, synthesize
from pansynth.models import Generator
from pansynth.serve.app import PainterApp
from pansynth.serve.classes import build_class_table
from pansynth.serve.server import listen

# A non-square model (H=32, W=64) so that a swapped height and width shows up anywhere.
NUM_CLASSES = 5
IGNORE_INDEX = 255
HEIGHT, WIDTH = 32, 64
CLASS_NAMES = ["sky", "road", "car", "person", "tree"]
THING_CLASSES = [2, 3]


def build_tiny_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(NUM_CLASSES, size=(HEIGHT, WIDTH), ignore_index=IGNORE_INDEX, ngf=4, spade_hidden=16).eval()


def write_export(directory: Path, class_names: list[str] | None, thing_classes: list[int] | None) -> Path:
    """An exported generator folder, with the class keys the trainer writes into config.json when given."""
    build_tiny_generator().save_pretrained(directory)
    if class_names is not None:
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text())
        config["_class_names"] = class_names
        config["_thing_classes"] = thing_classes
        config_path.write_text(json.dumps(config, indent=2))
    return directory


def metadata_of(export_dir: Path) -> dict:
    """The metadata (class names...) the generator saved in ``export_dir`` comes back with."""
    return load_generator(export_dir).metadata


def make_app(generator: Generator, export_dir: Path, **kwargs) -> PainterApp:
    classes = build_class_table(NUM_CLASSES, IGNORE_INDEX, metadata_of(export_dir))
    return PainterApp(generator, classes, **kwargs)


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` (a WSGI callable) on a free local port in a thread; yields the base URL."""
    server = listen(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_folder_dataset(
    root: Path,
    class_names: list[str],
    thing_classes: list[int],
    sample_names: list[str],
    size: tuple[int, int],
    split: str | None = None,
) -> Path:
    """A Folder-layout dataset (classes.json, [split/]images|semantic|panoptic/) of random maps; returns root."""
    from pansynth.data.folder import write_classes_json
    from pansynth.data.io import write_id_png, write_label_png

    rng = np.random.default_rng(0)
    base = root / split if split else root
    for kind in ("images", "semantic", "panoptic"):
        (base / kind).mkdir(parents=True)
    write_classes_json(root / "classes.json", class_names, thing_classes)
    for name in sample_names:
        semantic = rng.integers(0, len(class_names), size)
        write_label_png(base / "semantic" / f"{name}.png", semantic)
        write_id_png(base / "panoptic" / f"{name}.png", semantic * 1000 + 1)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(base / "images" / f"{name}.png")
    return root


# ---------------------------------------------------------------------- maps and PNGs
def scene_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, panoptic) int64 (HEIGHT, WIDTH): two stuff classes, two touching cars, a person, ignore pixels."""
    rng = np.random.default_rng(seed)
    semantic = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    semantic[HEIGHT // 2 :] = 1
    panoptic = semantic.copy()
    semantic[10:25, 8:30] = 2
    panoptic[10:25, 8:19] = 2001
    panoptic[10:25, 19:30] = 2002  # touches 2001
    semantic[5:28, 40:47] = 3
    panoptic[5:28, 40:47] = 3001
    semantic[0:3, 55:60] = 4
    panoptic[0:3, 55:60] = 4
    noise = rng.random((HEIGHT, WIDTH)) < 0.02
    semantic[noise] = IGNORE_INDEX
    panoptic[noise] = 0
    return semantic, panoptic


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    if mode == "rgb_ids":
        ids = array.astype(np.int64)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(buffer, format="PNG")
    elif mode == "16":
        Image.fromarray(array.astype(np.uint16)).save(buffer, format="PNG")
    else:
        Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def read_map_png(data: bytes) -> np.ndarray:
    """A map PNG as int64 (H, W): single-channel values, or RGB-encoded ids R + 256 G + 256^2 B."""
    array = decode_png(data).astype(np.int64)
    if array.ndim == 3:
        return array[..., 0] + 256 * array[..., 1] + 65536 * array[..., 2]
    return array


def expected_image(generator: Generator, semantic: np.ndarray, panoptic: np.ndarray) -> np.ndarray:
    """What the page must show: the library's synthesize, scaled to uint8 as round((x + 1) * 127.5)."""
    image = synthesize(generator, torch.from_numpy(semantic), torch.from_numpy(panoptic)).double()
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------- browser
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def start_chromium(browser: str, driver: str, profile: str | Path, downloads: Path, window: str = "1400,900"):
    """A headless chromium driven by selenium through the given chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    # a page left with edits not yet autosaved asks before unloading: the tests leave it
    options.set_capability("unhandledPromptBehavior", "accept")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # An explicit driver path keeps selenium from looking for (or downloading) a driver of its own.
    chromium = webdriver.Chrome(service=Service(driver), options=options)
    chromium.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return chromium


# ---------------------------------------------------------------------- HTTP
def request(
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file per field; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for field, content in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{field}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_maps(base: str, endpoint: str, files: dict[str, bytes], headers: dict[str, str] | None = None):
    body, content_type = multipart(files)
    return request(f"{base}{endpoint}", body, {"Content-Type": content_type, **(headers or {})}, "POST")
