"""The generator as an exportable graph: the graph engine swapped in, the inputs described once.

:func:`graph_generator` rebuilds a generator with ``backend="graph"`` (:mod:`pansynth.ops._graph_engine`:
the panoptic convolution, Algorithm 1 and the hole filling as plain tensor operations) and the same
weights, so tracing it gives standard operators only. :func:`export_inputs` lists the inputs of the
exported graph; a new input (the style codes of a style generator) is one more entry there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from pansynth import __version__
from pansynth.models import Generator

__all__ = [
    "BATCH",
    "ExportInput",
    "ExportModule",
    "example_inputs",
    "export_inputs",
    "export_metadata",
    "graph_generator",
]

# The name of the dynamic batch axis in the exported graphs.
BATCH = "batch"
OUTPUT_NAME = "image"
# Style generators are refused before tracing: their codes (drawn per segment from a hash of (seed, id),
# or read from a reference image) are not a graph input yet, and tracing the hash crashed the exporter.
STYLE_NOT_EXPORTED = (
    "a style generator (model.style=instance) cannot be exported: its per-segment style codes are not "
    "an input of the exported graph (not built); export a model trained with model.style=none"
)


@dataclass(frozen=True)
class ExportInput:
    """One input of the exported graph.

    Attributes:
        name: the input's name in the ONNX graph and the keyword of :class:`ExportModule`.
        dtype: its torch dtype.
        dims: its shape, :data:`BATCH` for the dynamic batch axis, integers for fixed sizes.
        doc: what it holds (written into the ONNX graph).
    """

    name: str
    dtype: torch.dtype
    dims: tuple[str | int, ...]
    doc: str

    def shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if dim == BATCH else int(dim) for dim in self.dims)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype).replace("torch.", ""), "shape": list(self.dims),
                "doc": self.doc}  # fmt: skip


def export_inputs(generator: Generator) -> list[ExportInput]:
    """The inputs of the exported generator, in order.

    The spatial size is fixed at the generator's ``size``: its first layer runs at size / 2**num_up,
    a constant of the architecture. The batch size is dynamic.
    """
    height, width = generator.output_size
    ignore = f" or the ignore value {generator.ignore_index}" if generator.ignore_index is not None else ""
    return [
        ExportInput("semantic", torch.int64, (BATCH, height, width),
                    f"class index per pixel, 0..{generator.num_classes - 1}{ignore} or -1 (unknown)"),
        ExportInput("panoptic", torch.int64, (BATCH, height, width),
                    "segment id per pixel (any int64 values: one id per stuff region and per thing instance, "
                    "-1 at unknown pixels)"),
        # The style codes of a style generator join here as a third input.
    ]  # fmt: skip


def graph_generator(generator: Generator) -> Generator:
    """A copy of ``generator`` on the graph engine (same weights, eval mode, CPU, float32).

    Spectral normalization is baked into the weights: in eval mode it divides each weight by a
    fixed sigma, which the copy computes once (its power-iteration ops have no ONNX equivalent).
    """
    rebuilt = Generator(**{**generator.config, "backend": "graph"})
    rebuilt.load_state_dict({name: tensor.detach().cpu().float() for name, tensor in generator.state_dict().items()})
    rebuilt.metadata = copy.deepcopy(generator.metadata)
    rebuilt.eval()
    with torch.no_grad():
        for module in rebuilt.modules():
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return rebuilt.requires_grad_(False)


class ExportModule(nn.Module):
    """What is exported: the graph-engine generator called with the inputs of :func:`export_inputs`.

    Shapes:
        forward(semantic (Tensor[N, H, W]) int64, panoptic (Tensor[N, H, W]) int64) -> Tensor[N, 3, H, W] in [-1, 1].
    """

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        if getattr(generator, "style_encoder", None) is not None:
            raise ValueError(STYLE_NOT_EXPORTED)
        self.generator = graph_generator(generator)

    def forward(self, semantic: Tensor, panoptic: Tensor) -> Tensor:
        return self.generator(semantic, panoptic)


def example_inputs(generator: Generator, batch: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    """Valid inputs to trace with: blocks of classes, and two instances per class side by side."""
    height, width = generator.output_size
    rows = torch.arange(height)[:, None] * 4 // height
    cols = torch.arange(width)[None, :] * 4 // width
    semantic = ((rows * 4 + cols + seed) % generator.num_classes).expand(batch, height, width).clone()
    panoptic = semantic * 10 + (cols >= width // 2).long()
    for index in range(1, batch):
        semantic[index] = (semantic[index] + index) % generator.num_classes
    return semantic, panoptic


def export_metadata(generator: Generator, export_format: str, **extra: Any) -> dict[str, Any]:
    """What an exported file records about its model: classes, sizes, inputs, versions."""
    metadata = generator.metadata
    height, width = generator.output_size
    return {
        "format": export_format,
        "pansynth_version": __version__,
        "torch_version": torch.__version__,
        "num_classes": generator.num_classes,
        "ignore_index": generator.ignore_index,
        "height": height,
        "width": width,
        "class_names": metadata.get("class_names"),
        "thing_classes": metadata.get("thing_classes", []),
        "inputs": [spec.describe() for spec in export_inputs(generator)],
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": [BATCH, 3, height, width],
            "doc": "RGB image in [-1, 1]",
        },  # fmt: skip
        "generator_config": generator.config,
        "generator_metadata": metadata,
        **extra,
    }
