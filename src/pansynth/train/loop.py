"""The training loop: one generator step and one discriminator step per iteration, until done.

One iteration ("step") is a generator step followed by a discriminator step (SPADE / paper
section 4) with the losses of :class:`pansynth.train.loss.GANObjective`, both with Adam.
``max_steps`` counts generator steps over the whole run, across resumes. The run directory
(:mod:`pansynth.train.run_dir`) is checked before anything is written and locked while the
run lasts; SIGINT, SIGTERM and SIGUSR1 finish the current step, save a checkpoint and the
export, and stop (a second Ctrl-C stops at once).

Example::

    >>> from pansynth.train import load_config, train
    >>> train(load_config("demo", ["data.root=demo_out/data", "max_steps=10"]), "runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import os
import random
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pansynth import __version__
from pansynth.data import build_dataset
from pansynth.data.corrupt import Augmented, make_augment
from pansynth.data.transforms import PairedTransform
from pansynth.models import Generator, MultiscaleDiscriminator
from pansynth.models.style import code_map, reparameterize
from pansynth.train import checkpoint as ckpt
from pansynth.train import distributed
from pansynth.train.config import TrainConfig
from pansynth.train.loss import EMA, GANObjective
from pansynth.train.monitor import Monitor, sample_grid
from pansynth.train.run_dir import RunDirectory, RunInUseError, RunState, print_notes

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted", "lr_factor", "train", "use_channels_last"]

NUM_SAMPLE_ROWS = 4
# Signals that end a run cleanly (after the current step, with a checkpoint). SLURM sends SIGUSR1
# ahead of a time limit with --signal; clusters preempt with SIGTERM.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class TrainingDiverged(ValueError):
    """A loss became NaN or infinite; the bad state was not saved."""


class TrainingInterrupted(Exception):
    """A stop signal ended the run after a checkpoint was saved; running the same command resumes."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint {checkpoint}; run the same command to resume"
        )
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        number = getattr(signal, signal_name, None)
        self.exit_code = 128 + int(number) if number is not None else 1


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """The ``channels_last`` key: true or false as given; null (auto) on CUDA only.

    CPU training stays NCHW by default (the layout the CPU benchmarks measure); on CUDA, NHWC is what
    cuDNN's tensor-core convolutions and the Triton engine's kernels read without a copy.
    """
    return bool(setting) if setting is not None else device.type == "cuda"


def lr_factor(epoch: int, epochs: int, decay_start_epoch: int | None) -> float:
    """Learning-rate multiplier: 1 until ``decay_start_epoch``, then linear to 0 at ``epochs`` (SPADE)."""
    if decay_start_epoch is None or epoch < decay_start_epoch:
        return 1.0
    return max(0.0, 1.0 - (epoch - decay_start_epoch) / max(1, epochs - decay_start_epoch))


class _SkipSampler(Sampler[int]):
    """Yields the indices of ``inner`` after dropping the first ``skip`` (resume inside an epoch)."""

    def __init__(self, inner: Sampler[int], skip: int) -> None:
        self.inner = inner
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)  # type: ignore[arg-type]


def _worker_init(worker_id: int) -> None:
    # Stop signals are the main process's business: it finishes the step and shuts the workers down.
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    # Each DataLoader worker gets a torch seed from PyTorch; derive python/numpy from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _StopSignals:
    """Turns the first stop signal into a request to stop after the current step; a second one stops at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name
        distributed.print0(
            f"\n{self.received} received: finishing the current step, then saving a checkpoint "
            "(Ctrl-C again stops at once, without saving)"
        )

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class Trainer:
    """Owns the networks, optimizers, data and run directory of one training run.

    Args:
        config: the resolved :class:`~pansynth.train.config.TrainConfig`.
        out_dir: run directory; an existing run directory of the same configuration is resumed.
        dataset: optional dataset overriding ``config.data`` (samples as in :mod:`pansynth.data`).

    Construction checks everything (configuration, VGG weights, dataset, sizes, run directory)
    before anything is written; then it locks the run directory, records the configuration and
    resumes from the newest checkpoint. :meth:`run` trains until ``max_steps`` or ``optim.epochs``.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, dataset: Dataset | None = None) -> None:
        self.config = config
        self.run_dir = RunDirectory(out_dir)
        self.out_dir = self.run_dir.path
        self._check_paths(dataset)
        self.dist = distributed.init(config.device)
        self.device = self.dist.device
        self.precision = config.precision
        if self.precision == "fp16" and self.device.type != "cuda":
            distributed.print0(f"warning: precision=fp16 needs CUDA; training in fp32 on {self.device}")
            self.precision = "fp32"
        world = self.dist.world_size
        if config.batch_size % world != 0:
            raise ValueError(
                f"batch_size={config.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({world})"
            )
        self.batch_per_rank = config.batch_size // world
        # Read-only checks of the run directory, the data and the networks: nothing is written yet.
        self.state: RunState = self.run_dir.inspect(config)
        self.dataset = dataset if dataset is not None else self._build_dataset()
        if len(self.dataset) < self.batch_per_rank * world:
            raise ValueError(
                f"the dataset has {len(self.dataset)} samples, fewer than batch_size={config.batch_size}; "
                "lower batch_size"
            )
        self.image_size = self._model_size()
        self.augment = make_augment(config.data.corrupt, getattr(self.dataset, "thing_classes", []))
        # The fixed samples go through the random crops and flips too: seeded, so that two identical
        # runs (and a run and its resume) show the same samples.
        distributed.seed_everything(config.seed)
        self.sample_batch = self._fixed_samples() if self.dist.is_main else None
        # Same initial weights on every rank (DDP also broadcasts rank 0's at wrapping).
        distributed.seed_everything(config.seed)
        self._build_networks()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.last_checkpoint: Path | None = None
        # Everything checked: take the run directory and write.
        self._take_run_dir()
        try:
            self.resumed = self._resume()
        except BaseException:
            self.close()
            raise
        if not self.resumed:
            distributed.seed_everything(distributed.rank_seed(config.seed, self.dist.rank))

    # ------------------------------------------------------------------ set-up
    def _check_paths(self, dataset: Dataset | None) -> None:
        loss = self.config.loss
        if loss.lambda_vgg > 0:
            if loss.vgg_weights is None:
                raise ValueError(
                    f"loss.lambda_vgg={loss.lambda_vgg} needs a local VGG19 weights file: add "
                    "loss.vgg_weights=PATH (torchvision's vgg19 ImageNet state dict, e.g. vgg19-dcbb9e9d.pth "
                    "downloaded once from the torchvision model zoo) or set loss.lambda_vgg=0"
                )
            if not Path(loss.vgg_weights).is_file():
                raise FileNotFoundError(
                    f"loss.vgg_weights={loss.vgg_weights} does not exist: give the path of torchvision's VGG19 "
                    "ImageNet state dict (vgg19-dcbb9e9d.pth) or set loss.lambda_vgg=0"
                )
        if dataset is None and self.config.data.root is None:
            raise ValueError("data.root is not set: add data.root=DIR (the dataset folder) to the command")
        if dataset is None and not Path(self.config.data.root).is_dir():
            raise FileNotFoundError(f"data.root={self.config.data.root} is not a directory")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise NotADirectoryError(f"--out {self.out_dir} exists and is not a directory")

    def _build_dataset(self) -> Dataset:
        data = self.config.data
        transform = PairedTransform(size=data.load_size, crop=data.crop_size, flip=data.flip)
        return build_dataset(
            data.dataset, data.root, split=data.split, transform=transform, skip_bad=data.skip_bad,
            unknown_classes=data.unknown_classes,
        )  # fmt: skip

    def _model_size(self) -> tuple[int, int]:
        data = self.config.data
        size = data.crop_size or data.load_size
        if size is None:
            size = list(self.dataset[0]["semantic"].shape[-2:])
        return int(size[0]), int(size[1])

    def _fixed_samples(self) -> dict[str, Tensor]:
        """The first few training samples, shown in every sample grid."""
        count = min(NUM_SAMPLE_ROWS, len(self.dataset))
        samples = [self.dataset[i] for i in range(count)]
        return {key: torch.stack([s[key] for s in samples]) for key in ("image", "semantic", "panoptic")}

    def _build_networks(self) -> None:
        config, model, disc = self.config, self.config.model, self.config.discriminator
        num_classes = int(self.dataset.num_classes)
        ignore_index = getattr(self.dataset, "ignore_index", None)
        try:
            generator = Generator(
                num_classes,
                size=self.image_size,
                ignore_index=ignore_index,
                ngf=model.ngf,
                conv=model.conv,
                upsample=model.upsample,
                boundary=model.boundary,
                num_upsampling_layers=model.num_upsampling_layers,
                norm=model.norm,
                spectral=model.spectral,
                spade_hidden=model.spade_hidden,
                init=model.init,
                backend=model.backend,
                style=model.style,
                style_dim=model.style_dim,
            )
        except ValueError as error:
            raise ValueError(f"training images are {self.image_size[0]}x{self.image_size[1]}: {error}") from None
        discriminator = MultiscaleDiscriminator(
            num_classes,
            ignore_index=ignore_index,
            ndf=disc.ndf,
            num_scales=disc.num_scales,
            num_layers=disc.num_layers,
            boundary=disc.boundary,
            spectral=disc.spectral,
            init=disc.init,
        )
        generator.to(self.device)
        discriminator.to(self.device)
        self.channels_last = use_channels_last(config.channels_last, self.device)
        if self.channels_last:
            # NHWC weights: what cuDNN's fast paths and the Triton kernels read in place (no per-call
            # re-layout); convolutions then return NHWC activations, which the generator keeps.
            generator.to(memory_format=torch.channels_last)
            discriminator.to(memory_format=torch.channels_last)
        self.ema = EMA(generator, config.ema) if config.ema is not None else None
        sync = model.norm == "syncbatch"
        # Hole filling may find no unmatched pixel in a batch, leaving its 1x1 projections unused.
        self.G = distributed.wrap_ddp(
            generator, self.dist, sync_batchnorm=sync, find_unused_parameters=model.upsample == "panoptic"
        )
        self.D = distributed.wrap_ddp(discriminator, self.dist, sync_batchnorm=sync)
        optim = config.optim
        betas = (optim.beta1, optim.beta2)
        self.opt_G = torch.optim.Adam(self.generator.parameters(), lr=optim.lr_g, betas=betas)
        self.opt_D = torch.optim.Adam(distributed.unwrap(self.D).parameters(), lr=optim.lr_d, betas=betas)

        def factor(epoch: int) -> float:
            return lr_factor(epoch, optim.epochs, optim.decay_start_epoch)

        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.objective = GANObjective(config.loss, self.device)

    def _take_run_dir(self) -> None:
        """Lock the run directory (rank 0, for every rank), record the configuration, clear leftovers."""
        message = None
        if self.dist.is_main:
            try:
                self.run_dir.lock()
                print_notes(self.state)
                self.run_dir.clean_temporaries()
                self.run_dir.write_config(self.config, self.state)
            except RunInUseError as error:
                message = str(error)
            except OSError as error:
                self.run_dir.unlock()
                message = f"cannot write into --out {self.out_dir}: {error}"
        # Every rank learns whether rank 0 got the directory, and stops with it if not.
        message = distributed.broadcast_object(message)
        if message is not None:
            raise RunInUseError(message)
        distributed.barrier()

    @property
    def generator(self) -> nn.Module:
        """The trained generator (unwrapped from DDP)."""
        return distributed.unwrap(self.G)

    @property
    def inference_generator(self) -> nn.Module:
        """The EMA generator when there is one, else the trained generator."""
        return self.ema.model if self.ema is not None else self.generator

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng = distributed.all_gather_objects(ckpt.rng_state())
        return {
            "G": self.generator.state_dict(),
            "D": distributed.unwrap(self.D).state_dict(),
            "G_ema": self.ema.model.state_dict() if self.ema is not None else None,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "generator_config": dict(self.generator.config),
            "class_names": self._class_metadata().get("class_names"),
            "thing_classes": self._class_metadata().get("thing_classes"),
            "version": __version__,
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["G"])
        distributed.unwrap(self.D).load_state_dict(state["D"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        rng = state["rng"]
        if state.get("world_size") == self.dist.world_size and len(rng) == self.dist.world_size:
            ckpt.set_rng_state(rng[self.dist.rank])
        else:
            distributed.print0(
                f"note: the checkpoint was written by {state.get('world_size')} processes and this run has "
                f"{self.dist.world_size}; random streams are re-seeded"
            )
            distributed.seed_everything(distributed.rank_seed(self.config.seed + self.step, self.dist.rank))

    def _resume(self) -> bool:
        directory = self.run_dir.checkpoints
        found = None
        # Rank 0 first, so that it alone moves an unreadable newest file aside.
        if self.dist.is_main:
            found = ckpt.load_latest_checkpoint(directory, map_location="cpu", quarantine=True)
        distributed.barrier()
        if not self.dist.is_main:
            found = ckpt.load_latest_checkpoint(directory, map_location="cpu")
        if found is None:
            if self.dist.is_main:
                # A run killed before its first checkpoint starts again from step 0: drop what it logged.
                self.run_dir.truncate_metrics(0)
            return False
        state, path = found
        self.load_state_dict(state)
        self.last_checkpoint = path
        distributed.print0(f"resuming from step {self.step} ({path})")
        if self.dist.is_main:
            self.run_dir.truncate_metrics(self.step)
            # A kill between a save and the removal of older checkpoints left one too many.
            ckpt.rotate_checkpoints(directory, self.config.keep_checkpoints)
            if self.run_dir.export_step() != self.step:
                # Missing, partial or older than the checkpoint (a kill between the two saves).
                self.export()
        return True

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXX.pt`` and then ``export/`` (rank 0), with barriers around."""
        distributed.barrier()
        state = self.state_dict()  # collective: every rank gives its RNG state
        path = ckpt.checkpoint_path(self.run_dir.checkpoints, self.step)
        if self.dist.is_main:
            path = ckpt.save_checkpoint(state, self.run_dir.checkpoints, self.step, self.config.keep_checkpoints)
            self.export()
        self.last_checkpoint = path
        distributed.barrier()
        return path

    def _class_metadata(self) -> dict[str, list]:
        """The dataset's class names and thing classes (for the painter's palette), when it has them."""
        metadata = {}
        for key in ("class_names", "thing_classes"):
            value = getattr(self.dataset, key, None)
            if value is not None:
                metadata[key] = [v if isinstance(v, str) else int(v) for v in value]
        return metadata

    def export(self) -> Path:
        """Save the inference generator (EMA when present) as ``export/``, recording its step and classes."""
        metadata = {"step": self.step, **self._class_metadata()}
        return self.inference_generator.save_pretrained(self.run_dir.export_dir, metadata=metadata)

    # ------------------------------------------------------------------ steps
    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _check_finite(self, losses: dict[str, Tensor]) -> dict[str, float]:
        names = list(losses)
        values = distributed.all_reduce_mean(torch.stack([losses[n].detach().float() for n in names]))
        result = dict(zip(names, values.tolist()))
        for name, value in result.items():
            if not math.isfinite(value):
                last = self.last_checkpoint or "none (no checkpoint was written yet)"
                raise TrainingDiverged(
                    f"training diverged: loss {name} is {value} at step {self.step + 1}; stopped without saving "
                    f"this state; the last good checkpoint is {last}"
                )
        return result

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One generator step then one discriminator step; returns the losses (mean over ranks)."""
        image = batch["image"].to(self.device, non_blocking=True)
        semantic = batch["semantic"].to(self.device, non_blocking=True)
        panoptic = batch["panoptic"].to(self.device, non_blocking=True)
        discriminator = distributed.unwrap(self.D)

        # Generator step. D is called unwrapped and frozen: its gradients are not wanted here.
        discriminator.requires_grad_(False)
        with self._autocast():
            if self.generator.style_encoder is None:
                style_stats = None
                fake = self.G(semantic, panoptic)
            else:
                # E reads the real image; G gets codes drawn around its per-segment means (E trains with G).
                mu, logvar, index, _ = self.generator.encode(image, panoptic)
                style_stats = (mu, logvar)
                fake = self.G(semantic, panoptic, code_map(reparameterize(mu, logvar), index))
            losses_g = self.objective.generator_losses(
                discriminator, fake, image, semantic, panoptic, style_stats=style_stats
            )
        logged = self._check_finite(losses_g)
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(losses_g["G_total"]).backward()
        self.scaler.step(self.opt_G)
        discriminator.requires_grad_(True)

        # Discriminator step on the same (detached) generated images.
        with self._autocast():
            losses_d = self.objective.discriminator_losses(self.D, fake, image, semantic, panoptic)
        logged.update(self._check_finite(losses_d))
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(losses_d["D_total"]).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.generator, self.step)
        return logged

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=False,
        )
        sampler.set_epoch(self.epoch)
        skip = self.batch_in_epoch * self.batch_per_rank
        generator = torch.Generator().manual_seed(self.config.seed * 7919 + self.epoch)
        return DataLoader(
            self.dataset if self.augment is None else Augmented(self.dataset, self.augment),
            batch_size=self.batch_per_rank,
            sampler=_SkipSampler(sampler, skip),
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            worker_init_fn=_worker_init,
            generator=generator,  # keeps the global RNG untouched by the loader's seeding
        )

    def steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.dataset) / self.dist.world_size)
        return per_rank // self.batch_per_rank

    def total_steps(self) -> int:
        epoch_steps = self.config.optim.epochs * self.steps_per_epoch()
        if self.config.max_steps is None:
            return epoch_steps
        return min(self.config.max_steps, epoch_steps)

    # ------------------------------------------------------------------ run
    def run(self) -> Path:
        """Train until ``max_steps`` (or the last epoch); returns the run directory.

        Raises:
            TrainingInterrupted: a stop signal arrived; the current step was saved first.
            TrainingDiverged: a loss became NaN or infinite.
        """
        total = self.total_steps()
        main = self.dist.is_main
        if self.step >= total:
            distributed.print0(f"nothing to do: the run is at step {self.step} of {total}")
        saved_at = self.step if self.resumed else -1
        self.G.train()
        self.D.train()
        stopping = False
        with (
            Monitor(self.run_dir, total, self.step, self.resumed, self.config.batch_size, main) as monitor,
            _StopSignals() as stop,
        ):
            while self.step < total and self.epoch < self.config.optim.epochs and not stopping:
                finished_epoch = True
                for batch in self._loader():
                    monitor.step(self.train_step(batch))
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.step % self.config.log_every == 0 or self.step == total:
                        monitor.log(
                            self.step,
                            self.epoch,
                            {"lr_G": self.opt_G.param_groups[0]["lr"], "lr_D": self.opt_D.param_groups[0]["lr"]},
                        )
                    if self.step % self.config.sample_every == 0 and main:
                        monitor.samples(self.step, self.sample_grid())
                    if self.step % self.config.checkpoint_every == 0:
                        self.save_checkpoint()
                        saved_at = self.step
                    stopping = distributed.any_rank(stop.received is not None)
                    if self.step >= total or stopping:
                        # Stop before the loader fetches (and draws random augmentations for) another batch.
                        finished_epoch = self.batch_in_epoch >= self.steps_per_epoch()
                        break
                if finished_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    with warnings.catch_warnings():
                        # A run resumed exactly at an epoch's end steps the schedulers first: intended.
                        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                        self.sched_G.step()
                        self.sched_D.step()
            if saved_at != self.step:
                if main:
                    monitor.samples(self.step, self.sample_grid())
                self.save_checkpoint()
        if stopping:
            raise TrainingInterrupted(stop.received or "a signal on another rank", self.step, self.last_checkpoint)
        distributed.print0(
            f"trained to step {self.step} (epoch {self.epoch}); checkpoint {self.last_checkpoint}; "
            f"inference weights in {self.run_dir.export_dir}"
        )
        return self.out_dir

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """uint8 (rows*H, 3*W, 3) grid of the fixed samples: panoptic map | generated | real."""
        assert self.sample_batch is not None
        generator = self.inference_generator
        was_training = generator.training
        generator.eval()
        batch = self.sample_batch
        fake = generator(batch["semantic"].to(self.device), batch["panoptic"].to(self.device)).float().cpu()
        generator.train(was_training)
        return sample_grid(batch["panoptic"], fake, batch["image"])

    def close(self) -> None:
        """Release the run directory."""
        self.run_dir.unlock()


def train(config: TrainConfig, out_dir: str | os.PathLike, dataset: Dataset | None = None) -> Path:
    """Train (or resume) a run into ``out_dir``; the same call works under plain python and torchrun.

    Returns:
        the run directory.

    Raises:
        ValueError / FileNotFoundError: bad configuration, data or run directory (nothing written).
        RuntimeError: the run directory is in use by another trainer (nothing written).
        TrainingInterrupted: stopped by a signal after saving the current step.
        TrainingDiverged: a loss became NaN/inf; the last good checkpoint is kept.
    """
    trainer = None
    try:
        trainer = Trainer(config, out_dir, dataset=dataset)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        distributed.cleanup()
