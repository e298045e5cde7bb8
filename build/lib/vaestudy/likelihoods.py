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
    Beta,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Laplace,
    Normal,
    StudentT,
)
from torch.nn import functional as F

from vaestudy.errors import UserError, float_or_text, is_json_type

REGISTRY: dict[str, type[Likelihood]] = {}


class Likelihood(nn.Module):
    """Base class: decoder outputs -> p(x|z)."""

    name: ClassVar[str] = ""
    outputs_per_pixel: ClassVar[int] = 1
    arenas: ClassVar[tuple[str, ...]] = ("continuous",)  # where the family has a meaning
    loss_is_nll: ClassVar[bool] = True  # is the training loss exactly -log p(x|z)?
    fits_sigma_after_training: ClassVar[bool] = False
    levels: int = 256  # the data's grey levels L, set by build_likelihood (the discrete families' bins)

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


def _bernoulli_log_prob_samples(o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x.o - sum softplus(o) for outputs o (S..., B, D) of images x (B, D), with one transcendental
    function per output instead of softplus's exp and log1p (the IWAE loop's hot spot on a CPU).

    softplus(o) = (o + |o|) / 2 - log sigmoid(|o|), so the value is (x - 1/2).o - sum |o| / 2 +
    sum log sigmoid(|o|); a product of 16 sigmoids of |o| lies in [2^-16, 1], so one log of each
    product replaces 16 logs without underflow. Equal to softplus's form to float32 rounding."""
    d = o.shape[-1]
    group = next(gr for gr in (16, 8, 4, 2, 1) if d % gr == 0)
    a = o.abs()
    log_p = (o * (x - 0.5).to(o.dtype)).sum(-1) - 0.5 * a.sum(-1)
    return log_p + a.sigmoid_().view(*o.shape[:-1], group, d // group).prod(-2).log().sum(-1)


class BernoulliLikelihood(Likelihood):
    """prod Bern(x_i; sigmoid(o_i)). On grey levels this is BCE: not a normalised density."""

    name = "bernoulli"
    arenas = ("binary", "continuous")

    def distribution(self, o):
        return Independent(Bernoulli(logits=o, validate_args=False), 1)

    def log_prob(self, o, x):
        # log sigmoid(o) x + log sigmoid(-o) (1 - x) = x.o - sum softplus(o)
        if o.dim() > x.dim() and o.device.type == "cpu" and not torch.is_grad_enabled():
            return _bernoulli_log_prob_samples(o, x)  # many samples per image: the IWAE loop
        xo = torch.einsum("...bd,bd->...b", o, x) if o.dim() > x.dim() >= 2 else (o * x).sum(-1)
        return xo - F.softplus(o).sum(-1)

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


class _SharedScale(Likelihood):
    """Base of families with one scale for all pixels: fixed where `scale` > 0, else learned as
    floor + exp(s) from 1 (as gaussian_shared's sigma)."""

    def __init__(self, num_pixels: int, scale: float = 0.0, floor: float = 1e-3):
        super().__init__(num_pixels)
        if not scale >= 0:
            raise ValueError(f"scale must be > 0 (fixed) or 0 (learned), got {scale}")
        _check_floor(floor, None if scale > 0 else 1.0)
        self.floor = float(floor)
        if scale > 0:
            self.register_buffer("fixed", torch.tensor(float(scale)))
            self.log_excess = None
        else:
            self.log_excess = nn.Parameter(torch.tensor(math.log(1.0 - floor)))

    def scale(self) -> torch.Tensor:
        return self.fixed if self.log_excess is None else self.floor + self.log_excess.exp()

    def sigma(self):
        return float(self.scale().detach())


class LaplaceLikelihood(_SharedScale):
    """prod Laplace(x_i; mu_i(z), b), the "L1 loss" as a density, b fixed (scale > 0) or learned (0).

    The optimal b is the mean absolute error, as the optimal Gaussian sigma is the RMSE."""

    name = "laplace"

    def distribution(self, o):
        return Independent(Laplace(o, self.scale().to(o).expand_as(o), validate_args=False), 1)


class StudentTLikelihood(_SharedScale):
    """prod t_nu(x_i; mu_i(z), s), heavy tails for outlying pixels (cf. t3VAE, Kim et al. 2024).

    `df` is nu (> 1, so that the decoder mean exists); the scale s as in laplace."""

    name = "student_t"

    def __init__(self, num_pixels: int, df: float = 3.0, scale: float = 0.0, floor: float = 1e-3):
        super().__init__(num_pixels, scale, floor)
        if not df > 1:
            raise ValueError(f"df must be > 1 (the mean exists only there), got {df}")
        self.df = float(df)

    def distribution(self, o):
        scale = self.scale().to(o).expand_as(o)
        return Independent(StudentT(torch.tensor(self.df).to(o), o, scale, validate_args=False), 1)


class BetaLikelihood(Likelihood):
    """prod Beta(x_i; a_i(z), b_i(z)), both from the decoder (Loaiza-Ganem & Cunningham 2019).

    The concentrations are softplus of the outputs. Images are clamped into [1e-6, 1 - 1e-6]: a
    dequantised pixel can be exactly 0, where the density is 0 or infinite."""

    name = "beta"
    outputs_per_pixel = 2
    EDGE = 1e-6

    def distribution(self, o):
        a, b = self._split(o)
        return Independent(Beta(F.softplus(a) + 1e-4, F.softplus(b) + 1e-4, validate_args=False), 1)

    def log_prob(self, o, x):
        return self.distribution(o).log_prob(x.clamp(self.EDGE, 1 - self.EDGE))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0. Where exp(-d) is below float resolution this rounds to 0, an
    absolute error of exp(-d): negligible in a log-mass (Maechler 2012 keeps relative accuracy there)."""
    return torch.log(-torch.expm1(-d.clamp_min(1e-30)))


class Discretised(Distribution):
    """A mixture of logistics or Gaussians binned onto the L grey levels x_k = k / (L-1), with the
    edge bins open (x_0 takes all below its upper edge, x_{L-1} all above its lower edge), as in
    PixelCNN++ (Salimans et al. 2017). Parameters (..., n) for n components; batch shape (...)."""

    arg_constraints: ClassVar[dict] = {}
    support = torch.distributions.constraints.unit_interval

    def __init__(self, kind: str, loc: torch.Tensor, scale: torch.Tensor, logits: torch.Tensor, levels: int):
        self.kind, self.loc, self.scale, self.levels = kind, loc, scale, levels
        self.log_weights = torch.log_softmax(logits, -1)
        super().__init__(loc.shape[:-1], validate_args=False)

    def _log_mass(self, k: torch.Tensor) -> torch.Tensor:
        """log P(level k) per component, for float levels k (..., 1)."""
        half = 0.5 / (self.levels - 1)
        x = k / (self.levels - 1)
        a = (x + half - self.loc) / self.scale  # the bin's upper edge, standardised
        b = (x - half - self.loc) / self.scale  # and its lower edge
        if self.kind == "logistic":
            log_below, log_above = F.logsigmoid(a), F.logsigmoid(-b)  # log F(a), log (1 - F(b))
            # F(a) - F(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)): no difference of nearly equal numbers
            log_inner = log_below + log_above + _log1mexp(a - b)
        else:
            log_below, log_above = torch.special.log_ndtr(a), torch.special.log_ndtr(-b)
            # Phi(a) - Phi(b), or Phi(-b) - Phi(-a) where the bin lies above the mean: the lower tail
            flip = a + b > 0
            log_hi = torch.where(flip, log_above, log_below)
            log_lo = torch.special.log_ndtr(torch.where(flip, -a, b))
            log_inner = log_hi + _log1mexp(log_hi - log_lo)
        return torch.where(k < 0.5, log_below, torch.where(k > self.levels - 1.5, log_above, log_inner))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.round(x * (self.levels - 1)).unsqueeze(-1)
        return torch.logsumexp(self.log_weights + self._log_mass(k), -1)

    def _survival(self, edge: float) -> torch.Tensor:
        """P(x > edge) per component."""
        t = (edge - self.loc) / self.scale
        return torch.sigmoid(-t) if self.kind == "logistic" else torch.special.ndtr(-t)

    @property
    def mean(self) -> torch.Tensor:
        # E[x] = sum_k x_k P(k) = 1/(L-1) sum_{k>=1} P(x > lower edge of k)
        total = sum(self._survival((k - 0.5) / (self.levels - 1)) for k in range(1, self.levels))
        return (self.log_weights.exp() * total).sum(-1) / (self.levels - 1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            j = torch.distributions.Categorical(logits=self.log_weights).sample(sample_shape).unsqueeze(-1)
            loc, scale = (t.expand(shape).gather(-1, j).squeeze(-1) for t in (self.loc, self.scale))
            if self.kind == "logistic":
                u = torch.rand(loc.shape, device=loc.device, dtype=loc.dtype).clamp(1e-6, 1 - 1e-6)
                y = loc + scale * (u.log() - (-u).log1p())
            else:
                y = loc + scale * torch.randn(loc.shape, device=loc.device, dtype=loc.dtype)
            return torch.round(y * (self.levels - 1)).clamp(0, self.levels - 1) / (self.levels - 1)


class _DiscretisedLikelihood(Likelihood):
    """Base of the masses on the L grey levels (the discrete arena): exact bits per dimension."""

    arenas = ("discrete",)
    kind: ClassVar[str] = "logistic"
    MIN_LOG_SCALE = -7.0  # scales below e^-7 are clamped, as in PixelCNN++: the mass is already 1

    def components(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loc, log-scale, logits), each (..., D, n)."""
        loc, log_scale = (t.unsqueeze(-1) for t in self._split(o))
        return loc, log_scale, torch.zeros_like(loc)

    def distribution(self, o):
        loc, log_scale, logits = self.components(o)
        scale = log_scale.clamp_min(self.MIN_LOG_SCALE).exp()
        return Independent(Discretised(self.kind, loc, scale, logits, self.levels), 1, validate_args=False)


class DiscretisedLogistic(_DiscretisedLikelihood):
    """prod P(x_i) of a logistic(mu_i(z), s_i(z)) binned onto the grey levels (PixelCNN++)."""

    name = "discretised_logistic"
    outputs_per_pixel = 2


class DiscretisedGaussian(_DiscretisedLikelihood):
    """prod P(x_i) of a N(mu_i(z), s_i(z)^2) binned onto the grey levels (as in Ho et al. 2020)."""

    name = "discretised_gaussian"
    outputs_per_pixel = 2
    kind = "gaussian"


class DiscretisedLogisticMixture(_DiscretisedLikelihood):
    """A mixture of binned logistics per pixel (PixelCNN++'s, without its channel coupling).

    `mixtures` components; their weights, means and log-scales come from the decoder."""

    name = "discretised_logistic_mixture"

    def __init__(self, num_pixels: int, mixtures: int = 5):
        super().__init__(num_pixels)
        if not mixtures >= 1:
            raise ValueError(f"mixtures must be >= 1, got {mixtures}")
        self.mixtures = int(mixtures)
        self.outputs_per_pixel = 3 * self.mixtures

    def components(self, o):
        d, n = self.num_pixels, self.mixtures
        parts = o.unflatten(-1, (3, n, d)).movedim(-1, -3)  # (..., D, 3, n)
        return parts[..., 0, :], parts[..., 1, :], parts[..., 2, :]


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
# JSON type that errors.is_json_type checks, and what a value of it must be
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
    name: str, num_pixels: int, params: dict | None = None, checked: bool = False, levels: int = 256
) -> Likelihood:
    """Construct a family by name for images of `levels` grey levels; unknown parameters and bad
    values are user errors."""
    cls = get_family(name)
    params = dict(params or {}) if checked else check_params(name, params)
    try:
        likelihood = cls(num_pixels, **params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"family {name}: {exc}") from None
    likelihood.levels = int(levels)
    return likelihood
