"""ONNX: the generator as a standard ONNX graph (opset 17 or newer, no custom domain).

The graph is traced from :class:`pansynth.export.graph.ExportModule` by PyTorch's TorchScript-based
ONNX exporter (``torch.onnx.export(..., dynamo=False)``, which needs no extra package), then checked
(``onnx.checker``, default-domain operators only) and written atomically with its metadata
(``metadata_props``: ``pansynth`` holds the JSON of :func:`pansynth.export.graph.export_metadata`,
``class_names`` the class names, ``size`` "HxW", ``pansynth_version``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from pansynth.export.graph import BATCH, OUTPUT_NAME, ExportModule, example_inputs, export_inputs, export_metadata
from pansynth.files import atomic_write_bytes
from pansynth.models import Generator

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "check_onnx_model", "export_onnx", "onnx_metadata"]

DEFAULT_OPSET = 17
MIN_OPSET = 17
# The newest opset the exporter writes (torch.onnx's TorchScript exporter).
MAX_OPSET = 20
# Operator domains an exported graph may use: the default ONNX domain only.
STANDARD_DOMAINS = ("", "ai.onnx")


def onnx_bytes(generator: Generator, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialized ONNX model of ``generator`` (metadata added, checked)."""
    import onnx

    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"--opset must be an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    module = ExportModule(generator)
    specs = export_inputs(generator)
    names = [spec.name for spec in specs]
    dynamic_axes = {name: {0: BATCH} for name in [*names, OUTPUT_NAME]}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is the legacy path, and the tracer about the
        # eager-only range checks of the label maps (they read values; the graph leaves them out).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs(generator, batch=2),
            buffer,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buffer.getvalue())
    for spec in specs:
        for graph_input in model.graph.input:
            if graph_input.name == spec.name:
                graph_input.doc_string = spec.doc
    metadata = export_metadata(generator, "onnx", opset=opset)
    props = {
        "pansynth": json.dumps(metadata, sort_keys=True),
        "class_names": json.dumps(metadata["class_names"]),
        "size": f"{metadata['height']}x{metadata['width']}",
        "pansynth_version": metadata["pansynth_version"],
    }
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "pansynth"
    model.producer_version = metadata["pansynth_version"]
    model.doc_string = "pansynth generator: semantic + panoptic int64 maps -> RGB image in [-1, 1]"
    check_onnx_model(model)
    return model.SerializeToString()


def check_onnx_model(model: Any) -> None:
    """Raise a ValueError unless ``model`` (an ``onnx.ModelProto``) passes ``onnx.checker`` and uses
    default-domain operators only."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValueError(f"the exported ONNX graph does not pass onnx.checker: {error}") from error
    custom = sorted({node.domain for node in model.graph.node if node.domain not in STANDARD_DOMAINS})
    if custom:
        raise ValueError(f"the exported ONNX graph uses operators of custom domains {custom}")


def export_onnx(generator: Generator, path: str | os.PathLike, opset: int = DEFAULT_OPSET, force: bool = False) -> Path:
    """Write ``generator`` as an ONNX file (see the module docstring); returns the path.

    Raises FileExistsError when ``path`` exists and not ``force``; the file is written atomically,
    so a failed export leaves nothing behind (and an existing file as it was).
    """
    path = Path(path)
    refuse_existing(path, force)
    data = onnx_bytes(generator, opset)
    return atomic_write_bytes(path, data)


def refuse_existing(path: Path, force: bool, option: str = "--out") -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{option} {path} already exists; choose another name or pass --force to replace it")
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")


def onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The pansynth metadata of an exported ONNX file (a ValueError naming the file when it has none)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected an .onnx file written by `pansynth export`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        raise ValueError(f"{path} is not a readable ONNX file ({type(error).__name__})") from error
    props = {entry.key: entry.value for entry in model.metadata_props}
    if "pansynth" not in props:
        raise ValueError(f"{path} has no pansynth metadata: export it with `pansynth export RUN --format onnx`")
    return json.loads(props["pansynth"])
