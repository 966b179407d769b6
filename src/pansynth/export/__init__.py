"""Export: the trained generator as a standard file, and the painter that runs it in a browser.

- :func:`export_onnx`: an ONNX graph (opset 17+, standard operators only) for ONNX Runtime;
- :func:`export_program`: a ``torch.export`` program (``.pt2``) that runs without pansynth;
- :class:`OnnxGenerator`: an exported ``.onnx`` file behind the generator's interface (ONNX Runtime);
- :func:`write_painter`: a static folder that paints and synthesizes in the browser (onnxruntime-web).

Both exports trace the generator on the graph engine of :mod:`pansynth.ops` (``backend="graph"``),
where the panoptic convolution, Algorithm 1 and the hole filling are plain tensor operations.
"""

from pansynth.export.graph import ExportInput, ExportModule, export_inputs, export_metadata, graph_generator
from pansynth.export.onnx_file import DEFAULT_OPSET, check_onnx_model, export_onnx, onnx_metadata
from pansynth.export.painter import write_painter
from pansynth.export.program import custom_ops, export_program, exported_program
from pansynth.export.runtime import OnnxGenerator

__all__ = [
    "DEFAULT_OPSET",
    "ExportInput",
    "ExportModule",
    "OnnxGenerator",
    "check_onnx_model",
    "custom_ops",
    "export_inputs",
    "export_metadata",
    "export_onnx",
    "export_program",
    "exported_program",
    "graph_generator",
    "onnx_metadata",
    "write_painter",
]
