"""Train one VAE: Adam over index-sliced batches of an on-device tensor, with checkpoints and resume.

Every epoch draws its shuffling, binarisation/dequantisation and reparameterisation noise from a
generator seeded by (seed, epoch), so a run resumed from a checkpoint at an epoch boundary ends
with exactly the weights and history of an uninterrupted run (on CPU).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import math
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaestudy import fast
from vaestudy.config import RunConfig
from vaestudy.data import ArenaData, arena_data
from vaestudy.errors import UserError, first_line, require
from vaestudy.fast import make_optimizer, set_lr
from vaestudy.files import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    torch_load,
)
from vaestudy.likelihoods import build_likelihood
from vaestudy.model import VAE, ModelConfig
from vaestudy.runtime import derive_seed, device_name, generator, resolve_device, versions
from vaestudy.step import TrainStep

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.csv"
FACTS = "train.json"
HISTORY_COLUMNS = ("epoch", "loss", "rate", "distortion", "sigma", "lr", "val_elbo", "seconds")


def load_data(config: RunConfig, device: torch.device) -> ArenaData:
    """The run's data set in its arena, on the device (the same splits for every model).

    The last one loaded is kept: training and then evaluating the seeds of a configuration in
    one process (vaestudy model --seeds) reads the data set once, not twice per seed. Nothing
    changes an ArenaData after it is built."""
    return _arena_data_cached(
        config.dataset,
        config.arena,
        device,
        config.data_root,
        config.download,
        config.data_seed,
        config.val_fraction,
        config.test_fraction,
        config.max_train,
        config.max_test,
    )


_arena_data_cached = functools.lru_cache(maxsize=1)(arena_data)


def build_model(config: RunConfig, data: ArenaData) -> VAE:
    """The VAE of a config, initialised from the run's seed without touching global RNG state."""
    likelihood = build_likelihood(config.family, data.num_pixels, config.params, levels=data.levels)
    model_config = ModelConfig(
        shape=data.shape,
        latent=config.latent,
        hidden=list(config.hidden),
        activation=config.activation,
        architecture=config.architecture,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = VAE(model_config, likelihood)
    return model.to(data.device)


@torch.no_grad()
def validation_elbo(model: VAE, x: torch.Tensor, g: torch.Generator, batch_size: int = 1024) -> float:
    """One-sample ELBO estimate, nats per image, averaged over x."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        terms = model(x[start : start + batch_size], g)
        total += float((terms["distortion"] + terms["rate"]).sum())
    model.train(was_training)
    return -total / len(x)


def load_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """Load a checkpoint and check that it belongs to this configuration and has trained no more
    epochs than it asks for."""
    state = torch_load(path, "checkpoint")
    require(
        isinstance(state, dict) and "config" in state and "model" in state,
        f"{path} is not a vaestudy checkpoint",
    )
    saved = RunConfig.from_dict(state["config"], source=str(path)).identity()
    differ = [k for k, v in config.identity().items() if saved.get(k) != v]
    require(
        not differ,
        f"checkpoint {path} belongs to another configuration "
        f"(differs in: {', '.join(differ)}); use another --out (a study: another results folder) or "
        "delete the run",
    )
    # nor is a run cut back: its model would be that of more epochs than its settings say
    require(
        int(state["epoch"]) <= config.epochs,
        f"run {path.parent} has trained {int(state['epoch'])} epochs, more than the {config.epochs} asked for; "
        "use another --out (a study: another results folder) or delete the run",
    )
    return state


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_COLUMNS})
    return buffer.getvalue()


class _Progress:
    """A tqdm bar on a terminal, else one line per epoch on stderr (which the pipeline logs)."""

    def __init__(self, total: int, initial: int, label: str, bar: bool | None):
        self.bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=label, unit="epoch", file=sys.stderr)
        self.total, self.label = total, label

    def update(self, row: dict[str, Any]) -> None:
        text = (
            f"loss {row['loss']:.3f} rate {row['rate']:.3f} val_elbo {row['val_elbo']:.3f}"
            if math.isfinite(row["loss"])
            else "non-finite loss"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        else:
            print(
                f"{self.label} epoch {row['epoch']}/{self.total} {text} ({row['seconds']:.2f}s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def seeds_of(config: RunConfig, eval_seed: int | None = None) -> dict[str, Any]:
    """Every seed a run uses, named for what it draws (the generators derive from these)."""
    seeds = {
        "data_split": config.data_seed,
        "evaluation_draws": config.data_seed,  # the fixed binarisation / dequantisation of val and test
        "initialisation": config.seed,
        "training_batches_and_noise": config.seed,  # shuffling, dynamic binarisation / dequantisation, z
    }
    if eval_seed is not None:
        seeds["evaluation"] = eval_seed
    return seeds


def lr_at(config: RunConfig, epoch: int) -> float:
    """The learning rate of the epoch after `epoch` completed ones: constant, or cosine annealing to 0
    (Loshchilov & Hutter 2017), which lets Adam settle where a constant rate leaves it jittering."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


def train_epoch(
    step: TrainStep,
    data: ArenaData,
    batch_size: int,
    g: torch.Generator,
    stop: Callable[[], bool] = lambda: False,
) -> torch.Tensor | None:
    """One epoch of Adam steps over index-sliced batches: the summed (loss, rate, distortion) in
    float64, or None when stop() turned true before the epoch ended."""
    terms_per_step = []
    for x in data.batches(batch_size, g):
        if stop():
            return None
        terms_per_step.append(step(x, g))
    return torch.cat(terms_per_step, 1).double().sum(1)


class TrainingInterrupted(Exception):
    """SIGTERM (a scheduler's preemption or time limit) or SIGINT (Ctrl-C): a checkpoint was
    written; rerun to resume. .signum: the signal, for the exit status 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


STOP_SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT (Ctrl-C)"}


class _StopSignals:
    """Within the block, SIGTERM and SIGINT set .raised (the first one's number) instead of ending
    the process, so that training stops at a batch's end with a checkpoint (main thread only)."""

    def __init__(self):
        self.raised: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # a signal the process was started to ignore (nohup, a shell's background job) stays so
            self._previous = {
                s: signal.signal(s, self._handle)
                for s in STOP_SIGNALS
                if signal.getsignal(s) is not signal.SIG_IGN
            }
        return self

    def _handle(self, signum, frame):
        self.raised = self.raised or signum

    @property
    def name(self) -> str:
        return STOP_SIGNALS.get(self.raised, "a signal")

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def train(config: RunConfig, out: str | Path, progress: bool | None = None) -> dict[str, Any]:
    """Train one model into the folder `out`, resuming from its checkpoint if one is there.

    Writes model.pt (final weights, config, status), history.csv and train.json. A non-finite
    loss stops training: the last finite weights are kept and status is 'diverged'. A failure
    leaves no new empty folder behind.
    """
    config.validate()
    out = Path(out)
    check_output_folder(out)
    created = not out.exists()
    try:
        return _train(config, out, progress)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _train(config: RunConfig, out: Path, progress: bool | None) -> dict[str, Any]:
    run = _Training(config, out)
    bar = _Progress(config.epochs, run.start_epoch, run.label, progress)
    board = None
    if config.tensorboard:
        from vaestudy.tensorboard import TensorBoardLog

        board = TensorBoardLog(out / "tensorboard", config.tensorboard_images_every, config.seed)
    started = time.perf_counter()
    run.model.train()
    with _StopSignals() as term:
        for epoch in range(run.start_epoch + 1, config.epochs + 1):
            if run.status != "ok" or run.out_of_patience(epoch - 1):
                break
            row = run.epoch(epoch, term)
            bar.update(row)
            if board is not None:
                board.epoch(row, run.model, run.data, last=epoch == config.epochs or run.status != "ok")
            if term.raised is not None and run.status == "ok" and epoch < config.epochs:
                raise TrainingInterrupted(
                    f"{out}: stopped by {term.name} after epoch {epoch}; checkpoint written, "
                    "rerun the same command to resume",
                    term.raised,
                )
    bar.close()
    if board is not None:
        board.close()
    return run.finish(time.perf_counter() - started)


class _Training:
    """One run's training state (model, optimizer, history, best epoch), from its checkpoint where
    there is one, with the steps of the loop: an epoch, a checkpoint, the final files."""

    def __init__(self, config: RunConfig, out: Path):
        self.config, self.out = config, out
        self.device = resolve_device(config.device)
        self.data = load_data(config, self.device)
        require(
            config.batch_size <= len(self.data),
            f"batch_size {config.batch_size} is larger than the training set ({len(self.data)} images)",
        )
        state = load_checkpoint(out / CHECKPOINT, config) if (out / CHECKPOINT).exists() else None
        fast.forget_paths()
        self.model = build_model(config, self.data)
        self.optimizer = make_optimizer(self.model, config.lr)
        self.step = TrainStep(self.model, self.optimizer, config.compile)
        self.label = f"{config.arena}/{config.family}"
        self.history: list[dict[str, Any]] = []
        self.status, self.diverged_epoch, self.start_epoch = "ok", None, 0
        # the epoch of the best validation ELBO, and its weights where keep_best asks for them
        self.best: dict[str, Any] = {"epoch": None, "val_elbo": -math.inf, "model": None}
        if state is not None:
            self._resume(state)
        out.mkdir(parents=True, exist_ok=True)

    def _resume(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(
                f"checkpoint {self.out / CHECKPOINT} does not fit this model: {first_line(exc)}"
            ) from None
        self.history, self.start_epoch = list(state["history"]), int(state["epoch"])
        self.status, self.diverged_epoch = state["status"], state["diverged_epoch"]
        self.best = state.get("best", self.best)
        print(f"resuming {self.out} from epoch {self.start_epoch}", file=sys.stderr)

    def checkpoint(self, epoch: int) -> None:
        # the curves so far, readable while the run trains (and resumes with the checkpoint)
        atomic_write_text(self.out / HISTORY, _history_csv(self.history))
        atomic_torch_save(
            self.out / CHECKPOINT,
            {
                "config": self.config.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "history": self.history,
                "status": self.status,
                "diverged_epoch": self.diverged_epoch,
                "best": self.best,
            },
        )

    def out_of_patience(self, epoch: int) -> bool:
        """No better validation ELBO for `patience` epochs up to this one."""
        return (
            self.config.patience is not None
            and self.best["epoch"] is not None
            and epoch - self.best["epoch"] >= self.config.patience
        )

    def epoch(self, epoch: int, term: _StopSignals) -> dict[str, Any]:
        """Train one epoch, validate, keep the best weights, checkpoint where due; its history row.
        A signal mid-epoch restores the epoch's start, checkpoints it and raises TrainingInterrupted."""
        config, model, optimizer = self.config, self.model, self.optimizer
        t0 = time.perf_counter()
        last_good = copy.deepcopy(model.state_dict())
        last_good_optimizer = copy.deepcopy(optimizer.state_dict())
        lr = lr_at(config, epoch - 1)
        set_lr(optimizer, lr)
        g = generator(self.device, config.seed, "epoch", epoch)
        sums = train_epoch(self.step, self.data, config.batch_size, g, stop=lambda: term.raised is not None)
        if sums is None:  # preempted mid-epoch: back to the epoch's start, which the checkpoint records
            model.load_state_dict(last_good)
            optimizer.load_state_dict(last_good_optimizer)
            self.checkpoint(epoch - 1)
            raise TrainingInterrupted(
                f"{self.out}: stopped by {term.name} in epoch {epoch}; checkpoint at epoch "
                f"{epoch - 1} written, rerun the same command to resume",
                term.raised,
            )
        loss_sum, rate_sum, dist_sum = (float(v) / len(self.data) for v in sums)
        if not math.isfinite(loss_sum):
            self.status, self.diverged_epoch = "diverged", epoch
            model.load_state_dict(last_good)
            print(
                f"{self.label}: non-finite loss in epoch {epoch}: stopped, status diverged", file=sys.stderr
            )
        val = validation_elbo(model, self.data.val, generator(self.device, config.seed, "val", epoch))
        row = {
            "epoch": epoch,
            "loss": loss_sum,
            "rate": rate_sum,
            "distortion": dist_sum,
            "sigma": model.likelihood.sigma(),
            "lr": lr,
            "val_elbo": val,
            "seconds": time.perf_counter() - t0,
        }
        self.history.append(row)
        if self.status == "ok" and val > self.best["val_elbo"]:
            self.best = {
                "epoch": epoch,
                "val_elbo": val,
                "model": copy.deepcopy(model.state_dict()) if config.keep_best else None,
            }
        if (
            self.status != "ok"
            or self.out_of_patience(epoch)
            or epoch % config.checkpoint_every == 0
            or epoch == config.epochs
            or term.raised is not None
        ):
            self.checkpoint(epoch)
        return row

    def finish(self, seconds_this_process: float) -> dict[str, Any]:
        """The final weights (the best epoch's where kept), a fitted scale where the family fits
        one, and model.pt, history.csv and train.json written; train.json's facts returned."""
        config, model, best = self.config, self.model, self.best
        if config.keep_best and best["model"] is not None:
            model.load_state_dict(best["model"])
        model.eval()
        if self.status == "ok" and model.likelihood.fits_sigma_after_training:
            g_fit = generator(self.device, config.seed, "final-fit")
            model.likelihood.set_scale(model.mean_squared_residual(self.data.train_fixed(), g_fit))
        facts = {
            "status": self.status,
            "diverged_epoch": self.diverged_epoch,
            "epochs": len(self.history),
            "best_epoch": best["epoch"],
            "best_val_elbo": best["val_elbo"] if best["epoch"] is not None else None,
            "weights": "best" if config.keep_best and best["model"] is not None else "last",
            "seconds": sum(r["seconds"] for r in self.history),
            "seconds_this_process": seconds_this_process,
            "device": device_name(self.device),
            "training_step": self.step.mode,
            "paths": fast.paths(),
            "peak_memory_mb": _peak_memory_mb(self.device),
            "final_sigma": model.likelihood.sigma(),
            "seeds": seeds_of(config),
            "versions": versions(),
            "config": config.to_dict(),
        }
        atomic_write_text(self.out / HISTORY, _history_csv(self.history))
        atomic_torch_save(
            self.out / MODEL,
            {
                "config": config.to_dict(),
                "model": model.state_dict(),
                "status": self.status,
                "diverged_epoch": self.diverged_epoch,
                "epochs": len(self.history),
                "best_epoch": best["epoch"],
            },
        )
        atomic_write_json(self.out / FACTS, facts)
        return facts


class Trained(NamedTuple):
    """A trained run as load_trained gives it: what evaluation and sample quality need of it."""

    model: VAE  # in eval mode
    config: RunConfig
    data: ArenaData  # its splits in its arena, on its device
    saved: dict[str, Any]  # model.pt: status, epochs, best epoch


def load_trained(run_dir: str | Path, device: str = "auto") -> Trained:
    """The model trained in run_dir (its model.pt), its config and its data, in eval mode on device."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL).is_file():  # a configuration's folder (vaestudy model's seed1/, ...)?
        seeds = sorted(p.parent.name for p in run_dir.glob(f"*/{MODEL}"))
        require(
            not seeds,
            f"{run_dir} is a configuration's folder, holding the runs {', '.join(seeds)}: pass one of them",
        )
    saved = torch_load(run_dir / MODEL, "model file")
    require(
        isinstance(saved, dict) and "config" in saved and "model" in saved,
        f"{run_dir / MODEL} is not a vaestudy model file",
    )
    config = RunConfig.from_dict(saved["config"], source=str(run_dir / MODEL))
    config.device = device
    config.validate()
    data = load_data(config, resolve_device(device))
    model = build_model(config, data)
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise UserError(f"{run_dir / MODEL} does not fit its own configuration: {first_line(exc)}") from None
    return Trained(model.eval(), config, data, saved)
