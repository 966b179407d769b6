"""Settings shared by the whole test suite.

Without CUDA, the Triton kernels of ``pansynth.ops._triton`` run in Triton's interpreter on CPU
tensors: the variable must be set before anything imports Triton, so it is set here, at the
root of the suite, before any test module is collected. (``pansynth`` picks the engine per call
and uses the interpreter only where a test asks for ``backend="triton"``.) With CUDA the real
kernels run on CUDA tensors.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests use tiny tensors: one intra-op thread is faster than several, above all on a busy
    2-core machine, and it makes the timing of the suite predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
