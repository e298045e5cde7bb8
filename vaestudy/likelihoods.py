"""Decoder likelihood families p(x|z): one small class each, one registry (docs/study.md, section 3).

A family turns the decoder output o (shape (..., outputs_per_pixel * D)) into a
torch.distributions.Distribution over the D pixels (an Independent, so log_prob sums over pixels).
The rest of the code only calls `distribution` (its `mean` and `sample`), `log_prob` and
`reconstruction`.

To add a family: write one subclass here with a unique `name`, its parameters as keyword
arguments of __init__ (with defaults), and `distribution`; list it in the config. Nothing else
changes. `log_prob` may be overridden by a faster formula of the same value (the tests compare
every family's `log_prob` with its `distribution(o).log_prob`).
"""

from __future__ import annotations

import inspect
import math
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)
from torch.nn import functional as F

from vaestudy.utils import UserError, float_or_text, is_json_type, onednn_products

REGISTRY: dict[str, type[Likelihood]] = {}


class Likelihood(nn.Module):
    """Base class: decoder outputs -> p(x|z)."""

    name: ClassVar[str] = ""
    outputs_per_pixel: ClassVar[int] = 1
    arenas: ClassVar[tuple[str, ...]] = ("continuous",)  # where the family has a meaning
    loss_is_nll: ClassVar[bool] = True  # is the training loss exactly -log p(x|z)?
    fits_sigma_after_training: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in REGISTRY:
                raise TypeError(f"likelihood family {cls.name!r} is defined twice")
            REGISTRY[cls.name] = cls

    def __init__(self, num_pixels: int):
        super().__init__()
        self.num_pixels = num_pixels

    def distribution(self, o: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def log_prob(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, for decoder outputs o (..., outputs_per_pixel * D) and images x
        (..., D), broadcast over o's leading sample dimensions. The IWAE loop and the training
        loss call this: a family may override it with a formula of the same value that reads
        the outputs fewer times."""
        return self.distribution(o).log_prob(x)

    def normalised(self, arena: str) -> bool:
        """Is log_prob a normalised log-density (or mass) of the data in this arena?"""
        return True

    def reconstruction(self, x: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: (training loss term, log p(x|z)). They differ only for loss-only families."""
        log_px = self.log_prob(o, x)
        return -log_px, log_px

    def sigma(self) -> float | None:
        """The learned or fitted scalar sigma to log in the training history, if the family has one."""
        return None

    def _split(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return o[..., : self.num_pixels], o[..., self.num_pixels :]


def _normal(mean: torch.Tensor, scale: torch.Tensor) -> Distribution:
    return Independent(Normal(mean, scale.expand_as(mean), validate_args=False), 1)


def _normal_log_prob(mean: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i log N(x_i; mean_i, scale_i^2) with the log of scale taken before broadcasting (one
    log for a shared sigma instead of one per output)."""
    d = mean.shape[-1]
    log_scale = scale.log()
    log_norm = d * log_scale if log_scale.dim() == 0 else log_scale.expand(*log_scale.shape[:-1], d).sum(-1)
    return -0.5 * ((x - mean) / scale).pow(2).sum(-1) - log_norm - 0.5 * d * math.log(2 * math.pi)


class GaussianLikelihood(Likelihood):
    """Base of the families whose p(x|z) is N(mean, diag(scale^2)): subclasses give `mean_scale`."""

    def mean_scale(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean (..., D) and a scale broadcastable to it."""
        raise NotImplementedError

    def distribution(self, o):
        return _normal(*self.mean_scale(o))

    def log_prob(self, o, x):
        return _normal_log_prob(*self.mean_scale(o), x)


def _check_floor(floor: float, init: float | None = None) -> None:
    if not floor >= 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if init is not None and not init > floor:
        raise ValueError(f"init must be > floor, got init={init}, floor={floor}")


def _bernoulli_log_prob_softplus(o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x.o - sum softplus(o): two passes over o instead of the six of
    binary_cross_entropy_with_logits on a broadcast x. With samples in front of x's batch, x.o is
    a batched matrix-vector product: one read of o instead of a product written and summed (on
    a GPU, where IWAE is bound by memory traffic, the fewest passes over o)."""
    xo = torch.einsum("...bd,bd->...b", o, x) if o.dim() > x.dim() >= 2 else (o * x).sum(-1)
    return xo - F.softplus(o).sum(-1)


def _bernoulli_log_prob_samples(o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x.o - sum softplus(o) for outputs o (S..., B, D) of images x (B, D), with or without
    samples in front: the IWAE loop's hot spot, computed with one transcendental function per
    output instead of softplus's exp and log1p (on CPU softplus alone took a sixth of IWAE's time).

    softplus(o) = relu(o) - log sigmoid(|o|) and relu(o) = (o + |o|) / 2, so the value is
    (x - 1/2).o - sum |o| / 2 + sum log sigmoid(|o|): one batched matrix-vector product of o
    with x - 1/2 (a product summed where utils.onednn_products avoids MKL), then passes over |o|
    alone. The product of G sigmoids of |o| lies in
    [2^-G, 1], so with G = 16 one log of each product replaces 16 logs without underflow. In
    float32 this differs from softplus by rounding (about 1e-6 of the value)."""
    d = o.shape[-1]
    group = next(gr for gr in (16, 8, 4, 2, 1) if d % gr == 0)
    half = (x - 0.5).to(o.dtype)
    if o.dim() > x.dim() and not onednn_products():
        log_p = torch.einsum("...bd,bd->...b", o, half)
    else:  # one image per row, or MKL's batched product slow on this processor
        log_p = (o * half).sum(-1)
    a = o.abs()
    log_p = log_p - 0.5 * a.sum(-1)
    return log_p + a.sigmoid_().view(*o.shape[:-1], group, d // group).prod(-2).log().sum(-1)


class _BernoulliLogProb(torch.autograd.Function):
    """x.o - sum softplus(o) per image by _bernoulli_log_prob_samples's formula, for outputs o
    (S..., B, D) and images x (B, D), with its gradient in one pass over o: d/do = x - sigmoid(o).
    Through autograd the formula's abs, sigmoid, product and log would each add a backward pass,
    and softplus's exp and log1p are slow on some CPUs (docs/performance.md)."""

    @staticmethod
    def forward(ctx, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(o, x)
        return _bernoulli_log_prob_samples(o, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        o, x = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        grad_o = (x - o.sigmoid()).mul_(g) if ctx.needs_input_grad[0] else None
        grad_x = (o * g).sum_to_size(x.shape) if ctx.needs_input_grad[1] else None
        return grad_o, grad_x


class BernoulliLikelihood(Likelihood):
    """prod Bern(x_i; sigmoid(o_i)). On grey levels this is BCE: not a normalised density."""

    name = "bernoulli"
    arenas = ("binary", "continuous")

    def distribution(self, o):
        return Independent(Bernoulli(logits=o, validate_args=False), 1)

    def log_prob(self, o, x):
        # log sigmoid(o) x + log sigmoid(-o) (1 - x) = x.o - sum softplus(o)
        if o.dim() >= x.dim() >= 2 and o.device.type == "cpu" and not torch.compiler.is_compiling():
            return _BernoulliLogProb.apply(o, x)  # on CPU, where softplus's logs dominate
        return _bernoulli_log_prob_softplus(o, x)

    def normalised(self, arena):
        return arena == "binary"


class ContinuousBernoulliLikelihood(Likelihood):
    """prod CB(x_i; sigmoid(o_i)) with its normaliser (Loaiza-Ganem & Cunningham 2019)."""

    name = "continuous_bernoulli"

    def distribution(self, o):
        return Independent(ContinuousBernoulli(logits=o, validate_args=False), 1)


class GaussianFixed(GaussianLikelihood):
    """N(x; mu(z), sigma^2 I) with sigma a constant."""

    name = "gaussian_fixed"
    arenas = ("continuous", "linear")  # linear: the ground truth (vaestudy.ground_truth)

    def __init__(self, num_pixels: int, sigma: float = 0.1):
        super().__init__(num_pixels)
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.register_buffer("scale", torch.tensor(float(sigma)))

    def mean_scale(self, o):
        return o, self.scale

    def sigma(self):
        return float(self.scale)


class GaussianShared(GaussianLikelihood):
    """N(x; mu(z), sigma^2 I), one sigma = floor + exp(s) learned by gradient."""

    name = "gaussian_shared"

    def __init__(self, num_pixels: int, init: float = 1.0, floor: float = 1e-3):
        super().__init__(num_pixels)
        _check_floor(floor, init)
        self.floor = float(floor)
        self.log_excess = nn.Parameter(torch.tensor(math.log(init - floor)))

    def scale(self) -> torch.Tensor:
        return self.floor + self.log_excess.exp()

    def mean_scale(self, o):
        return o, self.scale()

    def sigma(self):
        return float(self.scale().detach())


class GaussianPixel(GaussianShared):
    """N(x; mu(z), diag(sigma_i^2)), one learned sigma per pixel, not depending on z."""

    name = "gaussian_pixel"

    def __init__(self, num_pixels: int, init: float = 1.0, floor: float = 1e-3):
        super().__init__(num_pixels, init, floor)
        self.log_excess = nn.Parameter(torch.full((num_pixels,), math.log(init - floor)))

    def sigma(self):  # the geometric mean over pixels
        return float(self.scale().detach().log().mean().exp())


class GaussianHeteroscedastic(GaussianLikelihood):
    """N(x; mu(z), diag(sigma_i(z)^2)): the decoder outputs mu and log sigma^2 (Kingma & Welling C.2).

    sigma = floor + exp(log sigma^2 / 2); floor 0 is allowed, to show the failure.
    """

    name = "gaussian_heteroscedastic"
    outputs_per_pixel = 2

    def __init__(self, num_pixels: int, floor: float = 1e-3):
        super().__init__(num_pixels)
        _check_floor(floor)
        self.floor = float(floor)

    def mean_scale(self, o):
        mean, log_var = self._split(o)
        return mean, self.floor + (0.5 * log_var).exp()


class GaussianOptimal(GaussianLikelihood):
    """sigma-VAE (Rybkin et al. 2021): shared sigma = sqrt(batch MSE), its closed-form optimum.

    In training the sigma is refit on each batch. For evaluation one sigma is fixed from the
    training data at the end of training (never refit on test batches).
    """

    name = "gaussian_optimal"
    fits_sigma_after_training = True

    def __init__(self, num_pixels: int, floor: float = 1e-3):
        super().__init__(num_pixels)
        _check_floor(floor)
        self.floor = float(floor)
        self.register_buffer("scale", torch.tensor(1.0))

    def optimal_scale(self, mean_squared_residual: torch.Tensor) -> torch.Tensor:
        return mean_squared_residual.sqrt().clamp_min(self.floor)

    def set_scale(self, mean_squared_residual: float) -> None:
        self.scale.fill_(float(self.optimal_scale(torch.tensor(mean_squared_residual))))

    def mean_scale(self, o):
        return o, self.scale

    def reconstruction(self, x, o):
        if not self.training:
            return super().reconstruction(x, o)
        scale = self.optimal_scale((x - o).pow(2).mean())
        self.scale.copy_(scale.detach())
        log_px = _normal_log_prob(o, scale, x)
        return -log_px, log_px

    def sigma(self):
        return float(self.scale)


class MSE(GaussianLikelihood):
    """Loss = sum (x-mu)^2 (reduction 'sum') or mean over pixels (reduction 'mean'), plus KL.

    As a density it is N(x; mu, sigma^2 I) with sigma^2 = 1/2 (sum) or D/2 (mean); the loss
    lacks that density's constant, so it is not itself a log-likelihood.
    """

    name = "mse"
    loss_is_nll = False

    def __init__(self, num_pixels: int, reduction: str = "sum"):
        super().__init__(num_pixels)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction
        variance = 0.5 if reduction == "sum" else num_pixels / 2
        self.register_buffer("scale", torch.tensor(math.sqrt(variance)))

    def mean_scale(self, o):
        return o, self.scale

    def reconstruction(self, x, o):
        squared = (x - o).pow(2)
        loss = squared.sum(-1) if self.reduction == "sum" else squared.mean(-1)
        return loss, self.log_prob(o, x)

    def sigma(self):
        return float(self.scale)


class Calibrated(GaussianLikelihood):
    """A fitted Gaussian around another family's decoder mean: N(x; E[x|z], sigma^2 I).

    Used by the `calibrated` evaluation, so that every model gets a normalised density.
    """

    def __init__(self, base: Likelihood, sigma: float):
        super().__init__(base.num_pixels)
        self.base = base
        self.register_buffer("scale", torch.tensor(float(sigma)))

    def mean_scale(self, o):
        return self.base.distribution(o).mean, self.scale


def family_parameters(name: str) -> dict[str, object]:
    """The parameters a family accepts, with their defaults."""
    cls = get_family(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, num_pixels
    return {p.name: p.default for p in params}


def get_family(name: str) -> type[Likelihood]:
    if name not in REGISTRY:
        raise UserError(f"unknown likelihood family {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


# a parameter's type, from its default's (bool before int: a bool is an int to Python), as the
# JSON type that utils.is_json_type checks, and what a value of it must be
PARAMETER_TYPES = (
    (bool, "boolean", "true or false"),
    (int, "integer", "an integer"),
    (float, "number", "a finite number"),
    (str, "string", "a string"),
)


def _parameter_type(default: object) -> tuple[str, str] | None:
    """(JSON type, what a value must be) of a parameter with this default; None where the
    default is None or another type (the family's constructor checks such a value)."""
    return next(((name, must) for kind, name, must in PARAMETER_TYPES if isinstance(default, kind)), None)


def _from_text(text: str, like: object) -> object:
    """text read as a value of the type of `like` (a float, an int or a bool), or text itself."""
    name, _ = _parameter_type(like) or (None, None)
    if name == "boolean":
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    if name == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    return float_or_text(text) if name == "number" else text


def coerce_params(name: str, params: dict) -> dict:
    """The given parameters with a number or a boolean written as text made one where the family's
    default is one: YAML 1.1 reads 1e-3 as a string, and Snakemake's --config reads every value
    inside a mapping or a list as one. An integer stands for a float, not the other way round.
    Other values, and unknown names, are left for check_params."""
    allowed = family_parameters(name)
    coerced = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and key in allowed:
            coerced[key] = _from_text(value, allowed[key])
    return coerced


def _type_error(default: object, value: object) -> str | None:
    """What is wrong with value for a parameter whose default is `default` (None if nothing):
    a value of its type, and a number finite."""
    kind = _parameter_type(default)
    if kind is None:
        return None
    name, must = kind
    fits = is_json_type(value, name) and (name != "number" or math.isfinite(value))
    return None if fits else must


def check_params(name: str, params: dict | None = None) -> dict:
    """The family's parameters with their defaults filled in and numbers as numbers; raise UserError
    for an unknown parameter or a bad value (by constructing the family once)."""
    allowed = family_parameters(name)
    for key in params or {}:
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise UserError(f"family {name} has no parameter {key!r} (it takes: {known})")
    params = coerce_params(name, params or {})
    for key, value in params.items():
        wanted = _type_error(allowed[key], value)
        if wanted:
            sweep = " (a list sweeps only in a study config's arenas)" if isinstance(value, list) else ""
            raise UserError(f"family {name}: {key} must be {wanted}, got {value!r}{sweep}")
    params = {**allowed, **params}
    build_likelihood(name, 1, params, checked=True)
    return params


def build_likelihood(
    name: str, num_pixels: int, params: dict | None = None, checked: bool = False
) -> Likelihood:
    """Construct a family by name; unknown parameters and bad values are user errors."""
    cls = get_family(name)
    params = dict(params or {}) if checked else check_params(name, params)
    try:
        return cls(num_pixels, **params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"family {name}: {exc}") from None
