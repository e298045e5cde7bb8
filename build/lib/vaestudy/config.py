"""One run's settings: a dataclass read from a small YAML file and/or command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaestudy.data import ARENAS, check_dataset
from vaestudy.errors import UserError, float_or_text, is_json_type, require
from vaestudy.files import read_yaml
from vaestudy.likelihoods import check_params, get_family
from vaestudy.model import ACTIVATIONS, ARCHITECTURES

# how the training step runs (vaestudy.step.TrainStep)
COMPILE_CHOICES = ("auto", "graph", "always", "never")
# the learning rate over the epochs (vaestudy.train.lr_at)
LR_SCHEDULES = ("constant", "cosine")


def check_compile(value: str) -> str:
    require(value in COMPILE_CHOICES, f"compile must be one of {', '.join(COMPILE_CHOICES)}, got {value!r}")
    return value


@dataclass
class RunConfig:
    """Everything that defines one trained model. Field comments are the --help texts."""

    dataset: str = "digits"  # digits, mnist5k (bundled), mnist, fashion_mnist, cifar10, synthetic_mnist
    arena: str = "continuous"  # where the images live (docs/study.md, section 2)
    family: str = "gaussian_fixed"  # decoder likelihood family (vaestudy families)
    params: dict[str, Any] = field(default_factory=dict)  # family parameters, e.g. sigma
    data_root: str | None = None  # folder of the torchvision data sets
    download: bool = False  # let torchvision download a missing data set
    data_seed: int = 0  # seed of the splits and the fixed evaluation draws
    val_fraction: float = 0.1  # share of the training images held out for validation
    test_fraction: float = 0.2  # share of the images used as test set (digits only)
    max_train: int | None = None  # use at most this many training images
    max_test: int | None = None  # use at most this many test images
    architecture: str = "mlp"  # mlp or conv (conv needs 28x28 or 32x32 images)
    latent: int = 8  # latent dimensions
    hidden: list[int] = field(default_factory=lambda: [256])  # hidden layer sizes
    activation: str = "tanh"  # tanh, relu, softplus, elu, gelu
    epochs: int = 150  # training epochs
    batch_size: int = 64  # images per batch
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # constant, or cosine: lr decays to 0 by the last epoch
    seed: int = 1  # seed of initialisation, batches and reparameterisation noise
    device: str = "auto"  # auto (CUDA where present), cpu or cuda
    compile: str = "auto"  # training step: auto (compiled+graphed on CUDA), graph, always, never
    checkpoint_every: int = 25  # epochs between checkpoints
    keep_best: bool = False  # keep the weights of the epoch with the best validation ELBO (early stopping)
    patience: int | None = None  # stop after this many epochs without a better validation ELBO (None: never)
    tensorboard: bool = False  # log scalars and image grids for TensorBoard into the run's tensorboard/
    tensorboard_images_every: int = 10  # epochs between TensorBoard's image grids

    # Settings that may change between an interrupted run and its resumption.
    RESUMABLE = (
        "epochs",
        "device",
        "compile",
        "checkpoint_every",
        "data_root",
        "download",
        "tensorboard",
        "tensorboard_images_every",
    )

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        require(isinstance(values, dict), f"{source}: expected a mapping of settings")
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = dict(values)
        for key, value in values.items():
            require(key in known, f"{source}: unknown setting {key!r}")
            if known[key].type.startswith("float") and isinstance(value, str):
                values[key] = value = float_or_text(value)  # YAML 1.1 reads 1e-3 as a string
            _check_type(key, value, known[key].type, source)
        config = cls(**values)
        if isinstance(config.hidden, int):
            config.hidden = [config.hidden]
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        require(path.is_file(), f"config file {path} does not exist")
        return cls.from_dict(read_yaml(path) or {}, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that must match for a checkpoint to belong to this run."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE}

    def validate_family(self, where: str = "params") -> None:
        """Check the family's parameters alone (sigma > 0, floor >= 0, ...)."""
        try:
            check_params(self.family, self.params)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def validate(self) -> RunConfig:
        """Check every value; raise UserError naming the first bad setting."""
        side = check_dataset(self.dataset).side
        require(self.arena in ARENAS, f"unknown arena {self.arena!r} (known: {', '.join(ARENAS)})")
        family = get_family(self.family)
        require(
            self.arena in family.arenas,
            f"family {self.family} has no meaning in the {self.arena} arena "
            f"(it belongs to: {', '.join(family.arenas)})",
        )
        self.params = check_params(self.family, self.params)  # checked, with the defaults used recorded
        require(
            self.architecture in ARCHITECTURES,
            f"unknown architecture {self.architecture!r} (known: {', '.join(ARCHITECTURES)})",
        )
        require(
            self.activation in ACTIVATIONS,
            f"unknown activation {self.activation!r} (known: {', '.join(ACTIVATIONS)})",
        )
        require(
            self.arena != "linear" or (self.architecture == "mlp" and self.hidden == []),
            f"the linear arena's models are linear: hidden must be empty (it is {self.hidden}), architecture mlp",
        )
        if self.architecture == "conv":
            require(
                side in (28, 32),
                f"architecture conv needs 28x28 or 32x32 images; {self.dataset} is {side}x{side} (use mlp)",
            )
        require(self.latent >= 1, f"latent must be >= 1, got {self.latent}")
        require(all(h >= 1 for h in self.hidden), f"hidden sizes must be >= 1, got {self.hidden}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, got {self.lr}")
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        check_compile(self.compile)
        require(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        require(
            self.patience is None or self.patience >= 1,
            f"patience must be >= 1 (or empty), got {self.patience}",
        )
        require(
            self.tensorboard_images_every >= 1,
            f"tensorboard_images_every must be >= 1, got {self.tensorboard_images_every}",
        )
        require(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        require(0 < self.test_fraction < 1, f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"{key} must be >= 1, got {value}")
        return self


def _check_type(key: str, value: Any, annotation: str, source: str) -> None:
    """Check a YAML value against the field's annotation (a string under postponed evaluation)."""
    if value is None:
        require("None" in annotation, f"{source}: {key} must not be empty")
        return
    base = annotation.split("|")[0].strip()
    ok = {
        "str": is_json_type(value, "string"),
        "bool": is_json_type(value, "boolean"),
        "int": is_json_type(value, "integer"),
        "float": is_json_type(value, "number"),
        "dict[str, Any]": isinstance(value, dict),
        "list[int]": is_json_type(value, "integer")
        or (isinstance(value, list) and all(is_json_type(v, "integer") for v in value)),
    }[base]
    kind = {"dict[str, Any]": "a mapping", "list[int]": "a list of integers"}.get(base, f"of type {base}")
    require(ok, f"{source}: {key} must be {kind}, got {value!r}")


def _parse_value(text: str):
    """A flag's text as int, float (1e-3 included, which YAML 1.1 reads as a string), bool, null or str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (overriding --config); --param KEY=VALUE for the family."""
    parser.add_argument("--config", help="YAML file with run settings (flags override it)")
    comments = _field_comments()
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "params":
            parser.add_argument(
                "--param",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="family parameter, e.g. sigma=0.1 (repeatable)",
            )
        elif f.name == "download":
            parser.add_argument(flag, action="store_true", default=None, help=comments[f.name])
        elif f.name == "hidden":
            parser.add_argument(flag, metavar="N[,N...]", help=f"{comments[f.name]}{_default(f)}")
        elif f.name in FIELD_CHOICES:
            parser.add_argument(flag, choices=FIELD_CHOICES[f.name], help=f"{comments[f.name]}{_default(f)}")
        else:
            parser.add_argument(flag, metavar=f.name.upper(), help=f"{comments[f.name]}{_default(f)}")


def _default(f: dataclasses.Field) -> str:
    """' (default VALUE)' for a help text, VALUE as the flag takes it (a list comma-separated)."""
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return "" if value is None else f" (default {value})"


# the run settings whose values are few: argparse lists them and refuses others in one line
FIELD_CHOICES = {
    "arena": ARENAS,
    "compile": COMPILE_CHOICES,
    "lr_schedule": LR_SCHEDULES,
    "architecture": ARCHITECTURES,
    "activation": tuple(ACTIVATIONS),
}


def _field_comments() -> dict[str, str]:
    comments = {}
    for line in inspect.getsource(RunConfig).splitlines():
        if ":" in line and "#" in line and line.startswith("    ") and not line.strip().startswith("#"):
            name = line.strip().split(":")[0]
            comments[name] = line.split("#", 1)[1].strip()
    return comments


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {}
    if args.config:
        values = RunConfig.from_yaml(args.config).to_dict()
    for f in dataclasses.fields(RunConfig):
        if f.name == "params":
            given: dict[str, str] = {}  # a flag overrides the config file, not another flag
            for item in args.param:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise UserError(f"--param expects KEY=VALUE, got {item!r}")
                if key in given:
                    raise UserError(
                        f"--param {key} is given twice ({given[key]} and {value}): a run takes one value "
                        "(a list in a study config sweeps several)"
                    )
                given[key] = value
                values.setdefault("params", {})[key] = _parse_value(value)
            continue
        raw = getattr(args, f.name)
        if raw is None:
            continue
        if f.name == "hidden":
            values["hidden"] = [_parse_value(v) for v in str(raw).split(",") if v.strip()]
        elif f.name == "download":
            values["download"] = bool(raw)
        else:
            values[f.name] = _parse_value(raw) if "str" not in f.type else raw
    return RunConfig.from_dict(values, source="settings").validate()
