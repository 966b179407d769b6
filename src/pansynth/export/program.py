"""torch.export: the generator as an ``ExportedProgram`` saved in a ``.pt2`` file.

The program is traced from :class:`pansynth.export.graph.ExportModule` (the graph engine), so it
holds ATen operators only, no ``pansynth::`` custom op: ``torch.export.load(path).module()`` runs
it without pansynth installed. The batch axis is dynamic; the spatial size is the generator's.
The file carries :func:`pansynth.export.graph.export_metadata` as the extra file ``pansynth.json``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from pansynth.export.graph import ExportModule, example_inputs, export_inputs, export_metadata
from pansynth.export.onnx_file import refuse_existing
from pansynth.files import atomic_write_bytes
from pansynth.models import Generator

__all__ = ["METADATA_FILE", "custom_ops", "export_program", "exported_program"]

METADATA_FILE = "pansynth.json"


def exported_program(generator: Generator) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the graph-engine generator, with a dynamic batch axis."""
    module = ExportModule(generator)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic_shapes = {spec.name: {0: batch} for spec in export_inputs(generator)}
    with torch.no_grad():
        program = torch.export.export(module, example_inputs(generator, batch=2), dynamic_shapes=dynamic_shapes)
    found = custom_ops(program)
    if found:
        raise ValueError(f"the exported program calls non-ATen operators {found}")
    return program


def custom_ops(program: torch.export.ExportedProgram) -> list[str]:
    """The operators of ``program`` outside PyTorch's own namespaces (pansynth's custom ops, for one)."""
    found = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        namespace = getattr(node.target, "namespace", None)
        if namespace is not None and namespace not in ("aten", "prims"):
            found.add(str(node.target))
    return sorted(found)


def export_program(generator: Generator, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``generator`` as a ``torch.export`` program (``.pt2``); returns the path.

    Raises FileExistsError when ``path`` exists and not ``force``; written atomically.
    """
    path = Path(path)
    refuse_existing(path, force)
    program = exported_program(generator)
    buffer = io.BytesIO()
    metadata = export_metadata(generator, "torch-export")
    torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    return atomic_write_bytes(path, buffer.getvalue())
