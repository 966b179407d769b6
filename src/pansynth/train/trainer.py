"""The GAN training loop: generator and discriminator steps, EMA, logging, checkpoints, resume.

One iteration ("step") is a generator step followed by a discriminator step (SPADE / paper
section 4): hinge adversarial loss, discriminator feature matching and the VGG perceptual loss
for the generator, hinge loss on real and generated images for the discriminator, both with
Adam. ``max_steps`` counts generator steps over the whole run, across resumes.

Run directory layout (``out_dir``)::

    config.yaml        resolved configuration (compared on resume)
    checkpoints/       step_XXXXXXXX.pt (G, D, EMA G, optimizers, schedulers, scaler, RNG, ...)
    export/            config.json + model.safetensors of the EMA (or plain) generator
    metrics.jsonl      one JSON object per logged step: {"step": ..., "G_gan": ..., ...}
    samples/           step_XXXXXXXX.png grids: panoptic map | generated | real
    tb/                TensorBoard event files

Example::

    >>> from pansynth.train.config import load_config
    >>> from pansynth.train.trainer import train
    >>> train(load_config("demo", ["data.root=demo_out/data", "max_steps=10"]), "runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from pansynth import __version__
from pansynth.train import checkpoint as ckpt
from pansynth.train import distributed
from pansynth.train.config import TrainConfig, config_differences, dump_config, flatten

LOSS_NAMES_G = ("G_gan", "G_feat", "G_vgg", "G_total")
LOSS_NAMES_D = ("D_real", "D_fake", "D_total")
NUM_SAMPLE_ROWS = 4


class TrainingDiverged(ValueError):
    """A loss became NaN or infinite; the bad state was not saved."""


class _SkipSampler(Sampler[int]):
    """Yields the indices of ``inner`` after dropping the first ``skip`` (resume inside an epoch)."""

    def __init__(self, inner: Sampler[int], skip: int) -> None:
        self.inner = inner
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)  # type: ignore[arg-type]


def _seed_worker(worker_id: int) -> None:
    # Each DataLoader worker gets a torch seed from PyTorch; derive python/numpy from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


def lr_factor(epoch: int, epochs: int, decay_start_epoch: int | None) -> float:
    """Learning-rate multiplier: 1 until ``decay_start_epoch``, then linear to 0 at ``epochs`` (SPADE)."""
    if decay_start_epoch is None or epoch < decay_start_epoch:
        return 1.0
    return max(0.0, 1.0 - (epoch - decay_start_epoch) / max(1, epochs - decay_start_epoch))


def ema_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, ``min(decay, (1 + step) / (10 + step))``: early averages follow G quickly."""
    return min(decay, (1.0 + step) / (10.0 + step))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Trainer:
    """Owns the networks, optimizers, data and run directory of one training run.

    Args:
        config: the resolved :class:`~pansynth.train.config.TrainConfig`.
        out_dir: run directory; an existing run directory of the same configuration is resumed.
        dataset: optional dataset overriding ``config.data`` (samples as in :mod:`pansynth.data`).

    Construction validates everything (VGG weights file, data root, run directory) before
    anything is written; :meth:`run` trains until ``max_steps`` or ``optim.epochs``.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike, dataset: Dataset | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self._check_inputs(dataset)
        self.dist = distributed.init(config.device)
        self.device = self.dist.device
        self.precision = config.precision
        if self.precision != "fp32" and self.device.type != "cuda":
            distributed.print0(f"warning: precision={self.precision} needs CUDA; training in fp32 on {self.device}")
            self.precision = "fp32"
        world = self.dist.world_size
        if config.batch_size % world != 0:
            raise ValueError(
                f"batch_size={config.batch_size} is the global batch and must be divisible by the number of "
                f"processes ({world})"
            )
        self.batch_per_rank = config.batch_size // world
        self._prepare_run_dir()

        self.dataset = dataset if dataset is not None else self._build_dataset()
        if len(self.dataset) < self.batch_per_rank * world:
            raise ValueError(
                f"the dataset has {len(self.dataset)} samples, fewer than batch_size={config.batch_size}; "
                "lower batch_size"
            )
        self.image_size = self._model_size()
        self.sample_batch = self._fixed_samples() if self.dist.is_main else None

        # Same initial weights on every rank (DDP also broadcasts rank 0's at wrapping).
        distributed.seed_everything(config.seed)
        self._build_networks()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.last_checkpoint: Path | None = None
        self.resumed = self._resume()
        if not self.resumed:
            distributed.seed_everything(distributed.rank_seed(config.seed, self.dist.rank))

    # ------------------------------------------------------------------ set-up
    def _check_inputs(self, dataset: Dataset | None) -> None:
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

    def _prepare_run_dir(self) -> None:
        """Refuse foreign or differently-configured directories; write config.yaml on a fresh run."""
        config_path = self.out_dir / "config.yaml"
        new = self.config.to_dict()
        if config_path.is_file():
            try:
                stored = yaml.safe_load(config_path.read_text()) or {}
            except yaml.YAMLError as error:
                raise ValueError(f"{config_path} is not valid YAML ({error}); use a new --out") from error
            differences = config_differences(stored, new)
            if differences:
                a, b = flatten(stored), flatten(new)
                details = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differences[:8])
                raise ValueError(
                    f"{self.out_dir} holds a run with a different configuration ({details}); resume it with the "
                    "same settings or train into a new --out directory"
                )
            if stored != new and self.dist.is_main:
                _atomic_write_text(config_path, dump_config(self.config))
        else:
            if self.out_dir.is_dir() and any(self.out_dir.iterdir()):
                raise ValueError(
                    f"--out {self.out_dir} is not empty and holds no config.yaml (not a pansynth run directory); "
                    "choose a new or empty directory"
                )
            distributed.barrier()
            if self.dist.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                _atomic_write_text(config_path, dump_config(self.config))
        distributed.barrier()

    def _build_dataset(self) -> Dataset:
        from pansynth.data import build_dataset
        from pansynth.data.transforms import PairedTransform

        data = self.config.data
        transform = PairedTransform(size=data.load_size, crop=data.crop_size, flip=data.flip)
        return build_dataset(data.dataset, data.root, split=data.split, transform=transform, skip_bad=data.skip_bad)

    def _model_size(self) -> tuple[int, int]:
        data = self.config.data
        size = data.crop_size or data.load_size
        if size is None:
            semantic = self.dataset[0]["semantic"]
            size = list(semantic.shape[-2:])
        return int(size[0]), int(size[1])

    def _fixed_samples(self) -> dict[str, Tensor]:
        """The first few training samples, shown in every sample grid."""
        count = min(NUM_SAMPLE_ROWS, len(self.dataset))
        samples = [self.dataset[i] for i in range(count)]
        return {key: torch.stack([s[key] for s in samples]) for key in ("image", "semantic", "panoptic")}

    def _build_networks(self) -> None:
        from pansynth.models import Generator, MultiscaleDiscriminator
        from pansynth.models.losses import GANHingeLoss, VGGPerceptualLoss

        config, model = self.config, self.config.model
        num_classes = int(self.dataset.num_classes)
        ignore_index = getattr(self.dataset, "ignore_index", None)
        height, width = self.image_size
        generator = Generator(
            num_classes,
            ignore_index=ignore_index,
            ngf=model.ngf,
            conv=model.conv,
            upsample=model.upsample,
            boundary=model.boundary,
            num_upsampling_layers=model.num_upsampling_layers,
            crop_size=width,
            aspect_ratio=width / height,
            norm=model.norm,
        )
        if tuple(generator.output_size) != (height, width):
            raise ValueError(
                f"training images are {height}x{width} but the generator makes {generator.output_size}: "
                f"the height and width must be multiples of 2**{generator.num_up}"
            )
        discriminator = MultiscaleDiscriminator(
            num_classes, ignore_index=ignore_index, ndf=model.ndf, num_scales=model.num_D, num_layers=model.n_layers_D
        )
        generator.to(self.device)
        discriminator.to(self.device)
        self.G_ema = None
        if config.ema is not None:
            self.G_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        sync = model.norm == "syncbatch"
        # Hole filling may find no unmatched pixel in a batch, leaving its 1x1 projections unused.
        self.G = distributed.wrap_ddp(generator, self.dist, sync_batchnorm=sync,
                                      find_unused_parameters=model.upsample == "panoptic")
        self.D = distributed.wrap_ddp(discriminator, self.dist, sync_batchnorm=sync)
        betas = (config.optim.beta1, config.optim.beta2)
        self.opt_G = torch.optim.Adam(distributed.unwrap(self.G).parameters(), lr=config.optim.lr_g, betas=betas)
        self.opt_D = torch.optim.Adam(distributed.unwrap(self.D).parameters(), lr=config.optim.lr_d, betas=betas)
        optim = config.optim

        def factor(epoch: int) -> float:
            return lr_factor(epoch, optim.epochs, optim.decay_start_epoch)

        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, factor)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.hinge = GANHingeLoss()
        self.vgg = VGGPerceptualLoss(config.loss.vgg_weights).to(self.device) if config.loss.lambda_vgg > 0 else None

    @property
    def generator(self) -> nn.Module:
        """The trained generator (unwrapped from DDP)."""
        return distributed.unwrap(self.G)

    @property
    def inference_generator(self) -> nn.Module:
        """The EMA generator when there is one, else the trained generator."""
        return self.G_ema if self.G_ema is not None else self.generator

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng = distributed.all_gather_objects(ckpt.rng_state())
        return {
            "G": self.generator.state_dict(),
            "D": distributed.unwrap(self.D).state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
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
            "version": __version__,
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["G"])
        distributed.unwrap(self.D).load_state_dict(state["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
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
        directory = self.out_dir / "checkpoints"
        found = None
        # Rank 0 first, so that it alone moves an unreadable newest file aside.
        if self.dist.is_main:
            ckpt.remove_stale_temporaries(directory)
            found = ckpt.load_latest_checkpoint(directory, map_location="cpu", quarantine=True)
        distributed.barrier()
        if not self.dist.is_main:
            found = ckpt.load_latest_checkpoint(directory, map_location="cpu")
        if found is None:
            return False
        state, path = found
        self.load_state_dict(state)
        self.last_checkpoint = path
        distributed.print0(f"resuming from step {self.step} ({path})")
        if self.dist.is_main:
            self._truncate_metrics(self.step)
        return True

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXX.pt`` and ``export/`` (rank 0), with barriers around."""
        distributed.barrier()
        state = self.state_dict()  # collective: every rank gives its RNG state
        path = ckpt.checkpoint_path(self.out_dir / "checkpoints", self.step)
        if self.dist.is_main:
            path = ckpt.save_checkpoint(state, self.out_dir / "checkpoints", self.step, self.config.keep_checkpoints)
            self.export()
        self.last_checkpoint = path
        distributed.barrier()
        return path

    def export(self) -> Path:
        """Save the inference generator (EMA when present) as ``export/config.json + model.safetensors``."""
        return self.inference_generator.save_pretrained(self.out_dir / "export")

    def _truncate_metrics(self, step: int) -> None:
        # Lines logged after the checkpoint we resume from will be logged again.
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        _atomic_write_text(path, "".join(line + "\n" for line in kept))

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
        config = self.config
        image = batch["image"].to(self.device, non_blocking=True)
        semantic = batch["semantic"].to(self.device, non_blocking=True)
        panoptic = batch["panoptic"].to(self.device, non_blocking=True)
        semantic2, panoptic2 = torch.cat([semantic, semantic]), torch.cat([panoptic, panoptic])
        count = image.shape[0]
        discriminator = distributed.unwrap(self.D)

        # Generator step. D is called unwrapped (its gradients are not wanted here).
        discriminator.requires_grad_(False)
        with self._autocast():
            fake = self.G(semantic, panoptic)
            outputs = discriminator(torch.cat([fake, image.to(fake.dtype)]), semantic2, panoptic2)
            fake_out = [[f[:count] for f in scale] for scale in outputs]
            real_out = [[f[count:].detach() for f in scale] for scale in outputs]
            losses_g = {"G_gan": self.hinge(fake_out, target_is_real=True, for_discriminator=False)}
            if config.loss.lambda_feat > 0:
                from pansynth.models.losses import feature_matching_loss

                losses_g["G_feat"] = config.loss.lambda_feat * feature_matching_loss(real_out, fake_out)
            if self.vgg is not None:
                losses_g["G_vgg"] = config.loss.lambda_vgg * self.vgg(fake.float(), image)
            loss_g = sum(losses_g.values())
        losses_g["G_total"] = loss_g
        logged = self._check_finite(losses_g)
        self.opt_G.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_G)
        discriminator.requires_grad_(True)

        # Discriminator step on the same (detached) fake images, real and fake in one batch.
        with self._autocast():
            outputs = self.D(torch.cat([fake.detach(), image.to(fake.dtype)]), semantic2, panoptic2)
            fake_out = [[f[:count] for f in scale] for scale in outputs]
            real_out = [[f[count:] for f in scale] for scale in outputs]
            d_fake = self.hinge(fake_out, target_is_real=False)
            d_real = self.hinge(real_out, target_is_real=True)
            loss_d = d_fake + d_real
        logged.update(self._check_finite({"D_real": d_real, "D_fake": d_fake, "D_total": loss_d}))
        self.opt_D.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_D)
        self.scaler.update()
        self._update_ema()
        return logged

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        decay = ema_decay(self.config.ema, self.step)
        for averaged, current in zip(self.G_ema.parameters(), self.generator.parameters()):
            averaged.lerp_(current.detach().to(averaged.dtype), 1.0 - decay)
        for averaged, current in zip(self.G_ema.buffers(), self.generator.buffers()):
            averaged.copy_(current)

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
            self.dataset,
            batch_size=self.batch_per_rank,
            sampler=_SkipSampler(sampler, skip),
            num_workers=self.config.data.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            worker_init_fn=_seed_worker,
            generator=generator,  # keeps the global RNG untouched by the loader's seeding
        )

    def steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.dataset) / self.dist.world_size)
        return per_rank // self.batch_per_rank

    # ------------------------------------------------------------------ run
    def total_steps(self) -> int:
        epoch_steps = self.config.optim.epochs * self.steps_per_epoch()
        if self.config.max_steps is None:
            return epoch_steps
        return min(self.config.max_steps, epoch_steps)

    def run(self) -> Path:
        """Train until ``max_steps`` (or the last epoch); returns the run directory."""
        from tqdm import tqdm

        total = self.total_steps()
        main = self.dist.is_main
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step + 1 if self.resumed else None)
        if self.step >= total:
            distributed.print0(f"nothing to do: the run is at step {self.step} of {total}")
        bar = tqdm(total=total, initial=self.step, disable=not main, dynamic_ncols=True, desc="train",
                   file=sys.stderr)
        sums: dict[str, float] = {}
        count = 0
        last_time, last_step = time.perf_counter(), self.step
        saved_at = self.step if self.resumed else -1
        self.G.train()
        self.D.train()
        try:
            while self.step < total and self.epoch < self.config.optim.epochs:
                finished_epoch = True
                for batch in self._loader():
                    losses = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    for name, value in losses.items():
                        sums[name] = sums.get(name, 0.0) + value
                    count += 1
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.step == total:
                        now = time.perf_counter()
                        rate = (self.step - last_step) * self.config.batch_size / max(now - last_time, 1e-9)
                        last_time, last_step = now, self.step
                        record = {name: value / count for name, value in sums.items()}
                        sums, count = {}, 0
                        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("total")}
                                        | {"img/s": f"{rate:.1f}"})
                        if main:
                            self._log(writer, record, rate)
                    if self.step % self.config.sample_every == 0 and main:
                        self.write_samples(writer)
                    if self.step % self.config.checkpoint_every == 0:
                        self.save_checkpoint()
                        saved_at = self.step
                    if self.step >= total:
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
                    self.write_samples(writer)
                self.save_checkpoint()
            elif main and not (self.out_dir / "export" / "model.safetensors").is_file():
                self.export()
        except KeyboardInterrupt:
            distributed.print0(
                f"\ninterrupted at step {self.step}; last checkpoint: {self.last_checkpoint or 'none'}; "
                "run the same command again to resume"
            )
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        distributed.print0(
            f"trained to step {self.step} (epoch {self.epoch}); checkpoint {self.last_checkpoint}; "
            f"inference weights in {self.out_dir / 'export'}"
        )
        return self.out_dir

    def _log(self, writer: Any, record: dict[str, float], rate: float) -> None:
        record = dict(record)
        record["lr_G"] = self.opt_G.param_groups[0]["lr"]
        record["lr_D"] = self.opt_D.param_groups[0]["lr"]
        record["images_per_s"] = rate
        line = {"step": self.step, "epoch": self.epoch, **record}
        with open(self.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(line) + "\n")
        if writer is not None:
            for name, value in record.items():
                group = "loss" if name[:2] in ("G_", "D_") else "train"
                writer.add_scalar(f"{group}/{name}", value, self.step)

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
        return make_grid(batch["panoptic"], fake, batch["image"])

    def write_samples(self, writer: Any = None) -> Path:
        from PIL import Image

        grid = self.sample_grid()
        directory = self.out_dir / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"step_{self.step:08d}.png"
        Image.fromarray(grid).save(path)
        if writer is not None:
            writer.add_image("samples/panoptic_generated_real", grid, self.step, dataformats="HWC")
        return path


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> uint8 (H, W, 3)."""
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def colorize(panoptic: Tensor) -> np.ndarray:
    """uint8 (H, W, 3) colours for a panoptic map (the report's colouring when available)."""
    try:
        from pansynth.eval.report import colorize_panoptic
    except ImportError:
        colorize_panoptic = None
    if colorize_panoptic is not None:
        return np.asarray(colorize_panoptic(panoptic))
    ids = panoptic.to(torch.int64).numpy()
    # A fixed pseudo-random colour per id (Knuth multiplicative hashing).
    hashed = (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**24)
    return np.stack([(hashed >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1).astype(np.uint8)


def make_grid(panoptic: Tensor, fake: Tensor, real: Tensor) -> np.ndarray:
    """Rows of ``colorized panoptic | generated | real``; panoptic (N, H, W), images (N, 3, H, W) in [-1, 1]."""
    rows = [
        np.concatenate([colorize(panoptic[i].cpu()), to_uint8(fake[i]), to_uint8(real[i].cpu())], axis=1)
        for i in range(panoptic.shape[0])
    ]
    return np.concatenate(rows, axis=0)


def train(config: TrainConfig, out_dir: str | os.PathLike, dataset: Dataset | None = None) -> Path:
    """Train (or resume) a run into ``out_dir``; the same call works under plain python and torchrun.

    Returns:
        the run directory.

    Raises:
        ValueError / FileNotFoundError: bad configuration, data or run directory (nothing written).
        TrainingDiverged: a loss became NaN/inf; the last good checkpoint is kept.
    """
    trainer = None
    try:
        trainer = Trainer(config, out_dir, dataset=dataset)
        return trainer.run()
    finally:
        distributed.cleanup()
