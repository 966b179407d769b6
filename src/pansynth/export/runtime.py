"""Running an exported ``.onnx`` file with ONNX Runtime behind the generator's interface.

:class:`OnnxGenerator` reads the file's pansynth metadata (classes, size) and runs the graph on
ONNX Runtime's CPU provider, so :func:`pansynth.inference.synthesize` and ``synthesize_dataset``
(and ``pansynth synthesize --onnx``) take it where they take a :class:`~pansynth.models.Generator`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pansynth.export.onnx_file import onnx_metadata

__all__ = ["OnnxGenerator"]


class OnnxGenerator(nn.Module):
    """An exported ONNX generator, called like :class:`~pansynth.models.Generator`.

    Args:
        path: an ``.onnx`` file written by ``pansynth export --format onnx``.
        threads: ONNX Runtime intra-op threads (0: its default).

    Shapes:
        forward(semantic (Tensor[N, H, W]) int, panoptic (Tensor[N, H, W]) int) -> Tensor[N, 3, H, W]
        float32 in [-1, 1] on the CPU, with (H, W) = ``output_size``.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime

        self.path = Path(path)
        self.metadata: dict[str, Any] = onnx_metadata(self.path)
        self.num_classes = int(self.metadata["num_classes"])
        self.ignore_index = self.metadata["ignore_index"]
        self._size = (int(self.metadata["height"]), int(self.metadata["width"]))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own error types
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({error})") from error
        self.input_names = [spec["name"] for spec in self.metadata["inputs"]]
        # inference.synthesize asks the module for its device (next(parameters())): an empty
        # parameter answers "cpu", where ONNX Runtime's CPU provider returns its results.
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    @property
    def output_size(self) -> tuple[int, int]:
        return self._size

    def forward(self, semantic: Tensor, panoptic: Tensor, style: Tensor | None = None) -> Tensor:
        # ``style``: the code map argument of Generator.forward, which synthesize passes (None without styles)
        if style is not None:
            raise ValueError(f"{self.path.name} has no style inputs (style generators are not exported)")
        if tuple(semantic.shape[-2:]) != self._size or semantic.shape != panoptic.shape or semantic.dim() != 3:
            raise ValueError(
                f"{self.path.name} takes (N, {self._size[0]}, {self._size[1]}) semantic and panoptic maps, got "
                f"{tuple(semantic.shape)} and {tuple(panoptic.shape)}"
            )
        feeds = {
            "semantic": np.ascontiguousarray(semantic.cpu().numpy().astype(np.int64)),
            "panoptic": np.ascontiguousarray(panoptic.cpu().numpy().astype(np.int64)),
        }
        (image,) = self.session.run(None, {name: feeds[name] for name in self.input_names})
        return torch.from_numpy(image)

    def extra_repr(self) -> str:
        return f"{self.path}, size={self._size[0]}x{self._size[1]}, num_classes={self.num_classes}"
