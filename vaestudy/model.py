"""The VAE: a Gaussian encoder q(z|x), a decoder, and a likelihood family p(x|z).

Two architectures: an MLP in the style of Kingma & Welling (2014) appendix C, and a small
convolutional encoder/decoder for 28x28 and 32x32 images.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from vaestudy.likelihoods import Likelihood
from vaestudy.utils import cpu_matmul_choice, first_line, onednn_available, onednn_products

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU, "gelu": nn.GELU}
IN_PLACE = {nn.Tanh: torch.Tensor.tanh_, nn.ReLU: torch.Tensor.relu_}
FUSED = {nn.Tanh: "tanh", nn.ReLU: "relu"}  # the activations oneDNN's linear fuses, by its names for them
FUSED_ACTIVATIONS = tuple(FUSED.values())
ARCHITECTURES = ("mlp", "conv")
# Where utils.onednn_products says so, an MLP multiplies through oneDNN from this many
# multiply-adds per call (rows x the sum of its layers' inputs x outputs), and below it through
# MKL, unless VAESTUDY_CPU_MATMUL=onednn (see MLP).
ONEDNN_MIN_MACS = 2**22


@dataclass
class ModelConfig:
    shape: tuple[int, int, int]  # (C, H, W) of one image
    latent: int = 8
    hidden: list[int] = field(default_factory=lambda: [256])
    activation: str = "tanh"
    architecture: str = "mlp"


class MLP(nn.Sequential):
    """Linear layers with an element-wise activation between them, ending with a Linear layer.

    On the CPU the hidden activations are kept features first, as (features, rows): each hidden
    layer is addmm(b, W, h) instead of addmm(b, h, W^T), with a transposed view of the input
    going in and the last layer turning back to (rows, features), which MKL multiplies faster at
    these batch sizes. A tanh or relu is applied in place to the product it follows. Where
    utils.onednn_products says so, float32 layers instead run through oneDNN (OneDNNLinear), rows
    first, with a tanh or relu fused into the product, if the call has ONEDNN_MIN_MACS
    multiply-adds (always with VAESTUDY_CPU_MATMUL=onednn): oneDNN's fixed cost per product makes
    small MLPs faster through MKL (measurements in docs/performance.md). The choice depends on
    shapes alone, never on a timing, so that a resumed run computes as the uninterrupted one did.
    Same parameters, same state_dict, same function.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # no view taken where none is needed
        if (
            not torch.compiler.is_compiling()
            and x.dtype == torch.float32
            and onednn_products()
            and (len(flat) * self.macs_per_row() >= ONEDNN_MIN_MACS or cpu_matmul_choice() == "onednn")
        ):
            out = self._forward_onednn(flat)
        else:
            out = self._forward_features_first(flat)
        return out if x.dim() == 2 else out.view(*x.shape[:-1], -1)

    def macs_per_row(self) -> int:
        """Multiply-adds of the products for one row (image) through the MLP."""
        return sum(m.in_features * m.out_features for m in self if isinstance(m, nn.Linear))

    def _forward_onednn(self, h: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                after = layers[i + 1] if i + 1 < len(layers) else None
                fused = FUSED.get(type(after), "none")
                h = OneDNNLinear.apply(h, layer.weight, layer.bias, fused)
            elif type(layer) not in FUSED:  # applied by the layer before it
                h = layer(h)
        return h

    def _forward_features_first(self, flat: torch.Tensor) -> torch.Tensor:
        *hidden, last = self
        h = flat.t()
        for layer in hidden:
            if isinstance(layer, nn.Linear):
                h = torch.addmm(layer.bias.unsqueeze(1), layer.weight, h)
            else:  # after a Linear layer, whose fresh output autograd does not keep: in place if it can
                h = IN_PLACE.get(type(layer), layer)(h)
        return F.linear(h.t(), last.weight, last.bias)


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


class SampleDecoder:
    """model.decode for many latent samples at once (the IWAE loop, under torch.no_grad).

    On CPU an MLP decoder runs through oneDNN's linear layer (the kernels that torch.compile's
    CPU backend uses), with each weight matrix packed once for the chunk's number of rows and the
    bias and a tanh or relu fused into the product: no pass that copies the bias into every
    output row first (as addmm does), no separate activation pass, and faster products on packed
    weights (docs/performance.md). Elsewhere (CUDA, float64, other activations, the conv decoder) or if oneDNN fails, it
    is model.decode. The weights are read when the SampleDecoder is made.
    """

    def __init__(self, model: VAE, rows: int):
        self.model = model
        self.layers: list[tuple[torch.Tensor, torch.Tensor, str]] = []
        activation = model.config.activation
        weight = next(model.decoder.parameters())
        if (
            model.config.architecture != "mlp"
            or activation not in FUSED_ACTIVATIONS
            or weight.device.type != "cpu"
            or weight.dtype != torch.float32
            or not onednn_available()
        ):
            return
        linear = [m for m in model.decoder if isinstance(m, nn.Linear)]
        try:
            for i, layer in enumerate(linear):
                packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows)
                last = i == len(linear) - 1
                self.layers.append((packed, layer.bias.detach(), "none" if last else activation))
        except (AttributeError, RuntimeError):  # a torch without these operators
            self.layers = []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.layers:
            try:
                h = z
                for weight, bias, activation in self.layers:
                    h = torch.ops.mkldnn._linear_pointwise(h, weight, bias, activation, [], "")
                return h
            except RuntimeError as exc:
                print(
                    f"vaestudy: oneDNN's linear failed ({first_line(exc)}); decoding with torch",
                    file=sys.stderr,
                )
                self.layers = []
        return self.model.decode(z)


class OneDNNLinear(torch.autograd.Function):
    """activation(F.linear(x, weight, bias)), activation "tanh", "relu" or "none", with its three
    products (the output, the input's and the weight's gradients) computed by oneDNN's linear
    layer on unpacked weights, in float32 as torch's: x W^T + b, g W, g^T x. The activation is
    applied inside the product's kernel (no pass of its own); its gradient comes from the
    output, as torch's tanh and relu take theirs. For 2-d x on the CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str):
        x = x.contiguous()  # oneDNN multiplied a strided slice 100 times slower
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")
        ctx.activation = activation
        ctx.save_for_backward(x, weight, y if activation != "none" else None)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, y = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.activation == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, y)
        elif ctx.activation == "relu":
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        linear = torch.ops.mkldnn._linear_pointwise
        grad_x = linear(grad, weight.t(), None, "none", [], "") if ctx.needs_input_grad[0] else None
        grad_w = linear(grad.t(), x.t(), None, "none", [], "") if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per row (Kingma & Welling 2014, appendix B), with
    exp(log_var) - 1 as expm1(log_var): accurate where the variance is near 1."""
    return 0.5 * (mu.pow(2) + log_var.expm1() - log_var).sum(-1)
