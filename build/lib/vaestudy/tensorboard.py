"""Optional TensorBoard logging of a training run: each epoch's scalars, and every N epochs grids of
validation reconstructions, decoder means and true draws. Runs between epochs, outside any captured
CUDA graph, with generators of its own, so a logged run trains exactly as an unlogged one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vaestudy.errors import UserError
from vaestudy.runtime import generator

SCALARS = ("loss", "rate", "distortion", "sigma", "val_elbo")
IMAGES = 16  # images per grid


class TensorBoardLog:
    """A SummaryWriter in `folder` (the run's tensorboard/), images every `every` epochs."""

    def __init__(self, folder: str | Path, every: int, seed: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "tensorboard logging needs the tensorboard package: pip install 'vaestudy[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.every, self.seed = every, seed

    def epoch(self, row: dict[str, Any], model, data, last: bool) -> None:
        epoch = int(row["epoch"])
        for name in SCALARS:
            value = row.get(name)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(
                    f"train/{name}" if name != "val_elbo" else "validation/elbo", value, epoch
                )
        if epoch % self.every == 0 or last:
            for name, images in self.grids(model, data).items():
                self.writer.add_image(name, images, epoch)
        self.writer.flush()

    @torch.no_grad()
    def grids(self, model, data) -> dict[str, torch.Tensor]:
        """Validation images and their reconstructions, decoder means and draws for fixed z ~ N(0, I)."""
        from torchvision.utils import make_grid

        was_training = model.training
        model.eval()
        x = data.val[:IMAGES]
        mu, _ = model.encode(x)
        g = generator(data.device, self.seed, "tensorboard")  # the same z at every epoch
        z = torch.randn((IMAGES, model.config.latent), generator=g, device=data.device)
        dist = model.likelihood.distribution(model.decode(z))
        with torch.random.fork_rng(devices=[data.device] if data.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            draws = dist.sample()
        model.train(was_training)
        kinds = {
            "images/validation": x,
            "images/reconstructions": model.likelihood.distribution(model.decode(mu)).mean,
            "images/decoder_means": dist.mean,
            "images/draws": draws,
        }
        shape = (-1, *data.shape)
        return {
            name: make_grid(
                torch.nan_to_num(v.float(), nan=0.5).clamp(0, 1).view(shape).cpu(), nrow=8, pad_value=1
            )
            for name, v in kinds.items()
        }

    def close(self) -> None:
        self.writer.close()
