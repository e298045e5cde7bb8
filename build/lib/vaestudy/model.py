"""The VAE: a Gaussian encoder q(z|x), a decoder, and a likelihood family p(x|z).

Two architectures: an MLP in the style of Kingma & Welling (2014) appendix C, and a small
convolutional encoder/decoder for 28x28 and 32x32 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from vaestudy import fast
from vaestudy.likelihoods import Likelihood

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU, "gelu": nn.GELU}
ARCHITECTURES = ("mlp", "conv")


@dataclass
class ModelConfig:
    shape: tuple[int, int, int]  # (C, H, W) of one image
    latent: int = 8
    hidden: list[int] = field(default_factory=lambda: [256])
    activation: str = "tanh"
    architecture: str = "mlp"


class MLP(nn.Sequential):
    """Linear layers with an activation between them; on the CPU through vaestudy.fast, which
    multiplies large ones through oneDNN on some processors (the same function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast.mlp_forward(self, x) if x.device.type == "cpu" else super().forward(x)


def _mlp(sizes: list[int], activation: str) -> MLP:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return MLP(*layers)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28->14->7 or 32->16->8), then a linear map to (mu, log var)."""

    def __init__(self, shape: tuple[int, int, int], latent: int, width: int, activation: str):
        super().__init__()
        c, h, w = shape
        act = ACTIVATIONS[activation]
        self.shape = shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1),
            act(),
            nn.Conv2d(32, 64, 4, 2, 1),
            act(),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), width),
            act(),
            nn.Linear(width, 2 * latent),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, *self.shape))


class ConvDecoder(nn.Module):
    """The mirror of ConvEncoder; outputs (B, outputs_per_pixel * D) in the flat pixel layout."""

    def __init__(self, shape, latent: int, width: int, activation: str, outputs_per_pixel: int):
        super().__init__()
        c, h, w = shape
        act = ACTIVATIONS[activation]
        self.hw = (h // 4, w // 4)
        self.net = nn.Sequential(nn.Linear(latent, width), act(), nn.Linear(width, 64 * h * w // 16), act())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), act(), nn.ConvTranspose2d(32, c * outputs_per_pixel, 4, 2, 1)
        )
        self.outputs_per_pixel = outputs_per_pixel

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.net(z.reshape(-1, z.shape[-1])).view(-1, 64, *self.hw)
        o = self.up(h)  # (N, P*C, H, W): parameter p of channel c at index p*C + c
        return o.reshape(*lead, -1)


class VAE(nn.Module):
    def __init__(self, config: ModelConfig, likelihood: Likelihood):
        super().__init__()
        self.config = config
        self.likelihood = likelihood
        d = math.prod(config.shape)
        out = likelihood.outputs_per_pixel * d
        if config.architecture == "mlp":
            self.encoder = _mlp([d, *config.hidden, 2 * config.latent], config.activation)
            self.decoder = _mlp([config.latent, *reversed(config.hidden), out], config.activation)
        else:
            width = config.hidden[0] if config.hidden else 256
            self.encoder = ConvEncoder(config.shape, config.latent, width, config.activation)
            self.decoder = ConvDecoder(
                config.shape, config.latent, width, config.activation, likelihood.outputs_per_pixel
            )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) = N(mu, diag(exp(log_var)))."""
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One-sample ELBO terms per image: loss (training objective), rate, distortion."""
        return self.terms(x, self.noise(x, g))

    def noise(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """The reparameterisation noise eps ~ N(0, I) of one sample per image of x."""
        return torch.randn((len(x), self.config.latent), generator=g, device=x.device, dtype=x.dtype)

    def terms(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """forward with its noise given: z = mu + sigma * eps. No random draws, so that it can be
        compiled (torch.compile does not take explicit generators)."""
        mu, log_var = self.encode(x)
        z = torch.addcmul(mu, (0.5 * log_var).exp(), eps)
        loss_rec, log_px = self.likelihood.reconstruction(x, self.decode(z))
        rate = kl_standard_normal(mu, log_var)
        return {"loss": loss_rec + rate, "rate": rate, "distortion": -log_px}

    @torch.no_grad()
    def mean_squared_residual(self, x: torch.Tensor, g: torch.Generator, batch_size: int = 1024) -> float:
        """mean over images and pixels of (x - E[x|z])^2 with z ~ q(z|x): the optimal sigma^2."""
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            mu, log_var = self.encode(xb)
            z = mu + (0.5 * log_var).exp() * torch.randn(mu.shape, generator=g, device=mu.device)
            mean = self.likelihood.distribution(self.decode(z)).mean
            total += float((xb - mean).pow(2).sum())
        return total / x.numel()


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per row (Kingma & Welling 2014, appendix B), with
    exp(log_var) - 1 as expm1(log_var): accurate where the variance is near 1."""
    return 0.5 * (mu.pow(2) + log_var.expm1() - log_var).sum(-1)
