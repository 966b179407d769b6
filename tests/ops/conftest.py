"""Settings of the ops tests.

Without CUDA, the Triton kernels of ``pansynth.ops._triton`` run in Triton's interpreter on
CPU tensors. ``@triton.jit`` picks the interpreter when a kernel is defined, which the
package delays to the first launch; setting the variable here, before any test runs, is
early enough. With CUDA the real kernels run on CUDA tensors.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
