"""What a training run reports: the progress bar, ``metrics.jsonl``, TensorBoard and sample grids.

Only the main process reports; a :class:`Monitor` built with ``enabled=False`` (the other
ranks) still keeps the running loss averages, so every rank follows the same code path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from pansynth.run_files import SAMPLES_DIR, TENSORBOARD_DIR
from pansynth.train.run_dir import RunDirectory
from pansynth.viz import colorize_panoptic, image_to_uint8, save_png, tile

__all__ = ["Monitor", "sample_grid"]


def sample_grid(panoptic: Tensor, fake: Tensor, real: Tensor) -> np.ndarray:
    """uint8 (rows*H, 3*W, 3): one row per sample, ``colourised panoptic map | generated | real``.

    Args:
        panoptic (Tensor[N, H, W]); fake, real (Tensor[N, 3, H, W] in [-1, 1]).
    """
    rows = [
        [colorize_panoptic(panoptic[i]), image_to_uint8(fake[i]), image_to_uint8(real[i])]
        for i in range(panoptic.shape[0])
    ]
    return tile(rows, gap=0)


class Monitor:
    """Reports of one run.

    Args:
        run: the run directory.
        total: the step the run trains to (for the progress bar).
        step: the step it starts from.
        resumed: the run was resumed from a checkpoint.
        batch_size: global batch size (for images per second).
        enabled: this process reports (the main process).
    """

    def __init__(
        self, run: RunDirectory, total: int, step: int, resumed: bool, batch_size: int, enabled: bool = True
    ) -> None:
        self.run = run
        self.enabled = enabled
        self.batch_size = batch_size
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last_time, self._last_step = time.perf_counter(), step
        self.writer = None
        if enabled:
            # Events after ``step`` were logged by an attempt that did not reach its next checkpoint
            # (a kill, a second Ctrl-C), also when that attempt never saved one: TensorBoard drops them.
            self.writer = SummaryWriter(str(run.path / TENSORBOARD_DIR), purge_step=step + 1)
        self.bar = tqdm(
            total=total, initial=step, disable=not enabled, dynamic_ncols=True, desc="train", file=sys.stderr
        )

    def step(self, losses: dict[str, float]) -> None:
        """Add one step's losses to the running averages and advance the bar."""
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        self.bar.update(1)

    def log(self, step: int, epoch: int, extra: dict[str, float]) -> dict[str, float]:
        """Write the averages since the last log (plus ``extra``, e.g. learning rates) and reset them."""
        now = time.perf_counter()
        rate = (step - self._last_step) * self.batch_size / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        record = {name: value / max(self._count, 1) for name, value in self._sums.items()}
        self._sums, self._count = {}, 0
        self.bar.set_postfix(
            {k: f"{v:.3f}" for k, v in record.items() if k.endswith("total")} | {"img/s": f"{rate:.1f}"}
        )
        record = {**record, **extra, "images_per_s": rate}
        if self.enabled:
            self.run.append_metrics({"step": step, "epoch": epoch, **record})
            for name, value in record.items():
                group = "loss" if name[:2] in ("G_", "D_") else "train"
                self.writer.add_scalar(f"{group}/{name}", value, step)
        return record

    def samples(self, step: int, grid: np.ndarray) -> Path | None:
        """Write ``samples/step_XXXXXXXX.png`` (and the TensorBoard image)."""
        if not self.enabled:
            return None
        path = save_png(grid, self.run.path / SAMPLES_DIR / f"step_{step:08d}.png")
        self.writer.add_image("samples/panoptic_generated_real", grid, step, dataformats="HWC")
        return path

    def message(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.enabled:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
