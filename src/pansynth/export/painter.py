"""The static in-browser painter: the painter page, the ONNX model and onnxruntime-web in one folder.

``write_painter(generator, DIR, classes)`` writes::

    DIR/index.html, painter.js, painter.css   the page of ``pansynth serve`` (relative paths)
    DIR/ort_backend.js                         window.PANSYNTH_BACKEND: synthesis with onnxruntime-web
    DIR/model.onnx                             the generator (pansynth.export.export_onnx)
    DIR/info.json                              what /api/info answers: size, class table, no samples
    DIR/ort/                                   onnxruntime-web's WebAssembly build + its licence

Any static file server shows it (``python -m http.server -d DIR``); the page paints and
synthesizes in the browser, nothing is fetched from elsewhere. onnxruntime-web comes from a local
copy of its npm package (``make ort-web`` puts one in ``vendor/onnxruntime-web``), never downloaded
here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from pansynth.export.onnx_file import DEFAULT_OPSET, onnx_bytes
from pansynth.models import Generator
from pansynth.ops.maps import unknown_value

__all__ = ["ORT_WEB_ENV", "ORT_WEB_FILES", "ORT_WEB_VERSION", "find_ort_web", "painter_info", "write_painter"]

ORT_WEB_VERSION = "1.30.0"
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEB_ENV = "PANSYNTH_ORT_WEB"
# The folder `make ort-web` fills, at the root of a source checkout (src/pansynth/export/ -> root).
_CHECKOUT_ORT_WEB = Path(__file__).resolve().parents[3] / "vendor" / "onnxruntime-web"


def find_ort_web(ort_web: str | os.PathLike | None = None) -> Path:
    """The folder holding onnxruntime-web's files: ``ort_web``, else $PANSYNTH_ORT_WEB, else the
    checkout's ``vendor/onnxruntime-web``. A FileNotFoundError says how to get one."""
    if ort_web is not None:
        folder, origin = Path(ort_web), f"--ort-web {ort_web}"
    elif os.environ.get(ORT_WEB_ENV):
        folder, origin = Path(os.environ[ORT_WEB_ENV]), f"${ORT_WEB_ENV}={os.environ[ORT_WEB_ENV]}"
    else:
        folder, origin = _CHECKOUT_ORT_WEB, str(_CHECKOUT_ORT_WEB)
    missing = [name for name in ORT_WEB_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web not found in {origin} (missing {', '.join(missing)}): run `make ort-web` in the "
            f"pansynth checkout (unpacks the npm package onnxruntime-web@{ORT_WEB_VERSION} into vendor/), or pass "
            f"--ort-web DIR with the files {', '.join(ORT_WEB_FILES)} of its dist/ folder"
        )
    return folder


def painter_info(generator: Generator, classes: Any, title: str) -> dict[str, Any]:
    """The page's /api/info for the static painter. ``classes`` is the painter's class table
    (``to_json()`` palette, ``background``, ``source``, ``notes``: pansynth.serve.classes.ClassTable)."""
    height, width = generator.output_size
    return {
        "title": title,
        "height": height,
        "width": width,
        "num_classes": generator.num_classes,
        "ignore_index": generator.ignore_index,
        "classes": classes.to_json(),
        "names_source": classes.source,
        "notes": list(classes.notes),
        "background": classes.background,
        "max_upload_bytes": 8 * 2**20,
        "samples": [],
        "style": {"enabled": False, "dim": 0},
        # the painter's unknown brush and eraser paint this value (id 0); ort_backend.js feeds it as -1
        "unknown": {"value": unknown_value(generator.num_classes, generator.ignore_index), "name": "unknown"},
        "backend": "onnxruntime-web",
    }


def _page(index_html: str) -> str:
    """The server's index.html for a static folder: relative paths, onnxruntime-web and the backend first."""
    page = re.sub(r'"/?static/', '"', index_html)  # the page's files sit next to it in the folder
    scripts = '<script src="ort/ort.wasm.min.js"></script>\n<script src="ort_backend.js"></script>\n'
    match = re.search(r"<script\b", page)
    if match is None:
        return page.replace("</head>", scripts + "</head>")
    return page[: match.start()] + scripts + page[match.start() :]


def write_painter(
    generator: Generator,
    directory: str | os.PathLike,
    classes: Any,
    *,
    ort_web: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    title: str = "",
    model: bytes | None = None,
) -> Path:
    """Write the static in-browser painter into ``directory`` (see the module docstring).

    Everything is built in a temporary folder beside ``directory`` and moved into place at the
    end, so a failure writes nothing. An existing non-empty ``directory`` is an error unless
    ``force`` (then its painter files are replaced; other files in it are kept). ``model`` is the
    ONNX file's content when already exported (:func:`pansynth.export.onnx_file.onnx_bytes`).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"--painter {directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise FileExistsError(f"--painter {directory} is not empty; choose another folder or pass --force")
    ort_folder = find_ort_web(ort_web)
    if model is None:
        model = onnx_bytes(generator, opset)
    static = resources.files("pansynth") / "serve" / "static"
    own = resources.files("pansynth") / "export" / "static"
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for entry in static.iterdir():
            if entry.is_file() and entry.name != "index.html":
                (staging / entry.name).write_bytes(entry.read_bytes())
        (staging / "index.html").write_text(
            _page((static / "index.html").read_text(encoding="utf-8")), encoding="utf-8"
        )
        (staging / "ort_backend.js").write_bytes((own / "ort_backend.js").read_bytes())
        (staging / "model.onnx").write_bytes(model)
        info = painter_info(generator, classes, title)
        (staging / "info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        (staging / "ort").mkdir()
        for name in (*ORT_WEB_FILES, "package.json"):
            if (ort_folder / name).is_file():
                shutil.copyfile(ort_folder / name, staging / "ort" / name)
        (staging / "ort" / "LICENSE.txt").write_bytes((own / "ONNXRUNTIME-LICENSE.txt").read_bytes())
        directory.mkdir(exist_ok=True)
        for item in staging.iterdir():
            target = directory / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
