"""Settings shared by the whole test suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests use tiny tensors: one intra-op thread is faster than several, above all on a busy
    2-core machine, and it makes the timing of the suite predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
