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
from torch import nn

from vaestudy.config import RunConfig, check_compile
from vaestudy.data import ArenaData, arena_data
from vaestudy.likelihoods import build_likelihood
from vaestudy.model import VAE, ModelConfig
from vaestudy.utils import (
    UserError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    derive_seed,
    device_name,
    first_line,
    generator,
    require,
    resolve_device,
    torch_load,
    versions,
)

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


class FusedAdam:
    """Adam (Kingma & Ba 2015) exactly as torch.optim.Adam(fused=True) computes it: one fused
    kernel (torch._fused_adam_) per step for all parameters.

    Why not torch.optim.Adam itself: constructing any torch.optim optimizer imports torch._dynamo,
    about a second per process, which in the default study was a tenth of all job time. The tests
    check that the weights equal torch.optim.Adam(fused=True)'s, step for step, bit for bit.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # On the CPU the step counts are views of one tensor, counted up in one operation where
        # every parameter has a gradient, instead of one small addition each. On CUDA, where the
        # whole step is replayed as one CUDA graph, each count is a tensor of its own.
        devices = [p.device for p in self.params]
        f32 = torch.float32
        self.counts = {
            d: torch.zeros(devices.count(d), dtype=f32, device=d) for d in devices if d.type == "cpu"
        }
        views = {d: iter(count) for d, count in self.counts.items()}  # count[0], count[1], ...
        self.steps = [next(views[d]) if d in views else torch.zeros((), dtype=f32, device=d) for d in devices]
        # on CUDA the rate is read from a tensor, so that a captured step follows set_lr
        self.lr_on = {d: torch.tensor(self.lr, dtype=f32, device=d) for d in devices if d.type == "cuda"}

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        for t in self.lr_on.values():
            t.fill_(self.lr)

    @staticmethod
    def supports(params) -> bool:
        return hasattr(torch, "_fused_adam_") and all(
            p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as torch.optim: skip None
        for device in {self.params[i].device for i in live}:
            idx = [i for i in live if self.params[i].device == device]
            steps = [self.steps[i] for i in idx]
            if device in self.counts and len(idx) == len(self.counts[device]):
                self.counts[device].add_(1)
            else:
                torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [self.params[i] for i in idx],
                [self.params[i].grad for i in idx],
                [self.exp_avg[i] for i in idx],
                [self.exp_avg_sq[i] for i in idx],
                [],
                steps,
                lr=self.lr_on.get(device, self.lr),
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "fused_adam",
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "step": [s.clone() for s in self.steps],
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != "fused_adam":
            raise ValueError("the optimizer state is not vaestudy's fused Adam")
        pairs = [
            (self.steps, state["step"]),
            (self.exp_avg, state["exp_avg"]),
            (self.exp_avg_sq, state["exp_avg_sq"]),
        ]
        for mine, saved in pairs:  # check all before changing any
            if len(saved) != len(mine) or any(a.shape != b.shape for a, b in zip(saved, mine, strict=True)):
                raise ValueError("optimizer state has other shapes than the model's parameters")
        for mine, saved in pairs:
            for a, b in zip(mine, saved, strict=True):
                a.copy_(b)


def make_optimizer(model: nn.Module, lr: float) -> FusedAdam | torch.optim.Adam:
    """Adam: FusedAdam where torch has the fused kernel for the parameters, else torch.optim.Adam."""
    params = list(model.parameters())
    return FusedAdam(params, lr) if FusedAdam.supports(params) else torch.optim.Adam(params, lr=lr)


def lr_at(config: RunConfig, epoch: int) -> float:
    """The learning rate of the epoch after `epoch` completed ones: constant, or cosine annealing to 0
    (Loshchilov & Hutter 2017), which lets Adam settle where a constant rate leaves it jittering."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


def set_lr(optimizer: FusedAdam | torch.optim.Optimizer, lr: float) -> None:
    if isinstance(optimizer, FusedAdam):
        optimizer.set_lr(lr)
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr


def compiles(compile: str, device: torch.device) -> bool:
    """Does the setting `compile` put the ELBO terms under torch.compile on this device? 'always',
    and 'auto' on CUDA, where the compiled kernels inside the step's CUDA graph made it 1.5 times
    faster than the eager kernels (on one H100); on the CPU compiling gained 1 to 5% for seconds
    per model."""
    return check_compile(compile) == "always" or (compile == "auto" and device.type == "cuda")


def graphs(compile: str, device: torch.device) -> bool:
    """Does the setting `compile` capture the whole training step as CUDA graphs? On CUDA, unless 'never'."""
    return check_compile(compile) != "never" and device.type == "cuda"


def _allow_many_compiled_models() -> None:
    """Each model trained in a process (the seeds of a configuration, the families of a test)
    compiles VAE.terms anew, and torch.compile keeps 8 versions of a function by default, past
    which it would run the function eagerly without saying so. Keep 64, and fail past them, so
    that TrainStep falls back to eager and says so."""
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, and the older one
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def failure_cause(exc: BaseException) -> BaseException:
    """The error to report for a failed step. A capture broken by an operation that a CUDA graph
    cannot hold (a wait for the GPU, a copy to the CPU) ends in 'operation failed due to a
    previous error during capture' when the capture is closed; the error that broke it is that
    one's context."""
    if exc.__context__ is not None and "previous error during capture" in str(exc):
        return exc.__context__
    return exc


class _StepGraph:
    """The whole training step of one batch shape (forward, backward, Adam) captured as one CUDA
    graph: one replay instead of one launch per kernel from Python. Its inputs and outputs
    live in static tensors; the batch and its noise are copied in before each replay."""

    def __init__(self, step: TrainStep, x: torch.Tensor, eps: torch.Tensor):
        self.x, self.eps = x.clone(), eps.clone()
        step.optimizer.zero_grad(set_to_none=True)  # the captured backward writes the gradients anew
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step._step(step.terms_of, self.x, self.eps, zero_grad=False)

    def __call__(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.eps.copy_(eps)
        self.graph.replay()
        return self.out.clone()


class TrainStep:
    """One Adam step on a batch; returns the (loss, rate, distortion) of each image, detached.

    `compile` (RunConfig.compile) picks how the step runs:
    - never: eagerly;
    - graph: on CUDA the whole step (forward, backward and Adam) is captured as one CUDA graph
      per batch shape and replayed ('graphed'); each shape's first step runs eagerly (the warm-up
      that capturing needs), its second is captured. A small MLP at batch 128 is limited by
      kernel launches from Python, which the replay removes. On the CPU (no graphs): eagerly;
    - always: the ELBO terms (VAE.terms: forward and, through autograd, backward) under
      torch.compile ('compiled'), and on CUDA the whole step captured around its kernels as
      above ('compiled+graphed');
    - auto: always on CUDA, never on the CPU.
    The noise is drawn eagerly from the run's generator in every path, so all see the same draws.
    If compiling, capturing or running the step fails (no C++ compiler or Triton, an operation
    of a family that cannot be traced or captured), the step says so on stderr and goes on from
    the same batch without compiling (compiled+graphed -> graphed), or eagerly.
    """

    def __init__(self, model: VAE, optimizer: FusedAdam | torch.optim.Optimizer, compile: str = "never"):
        self.model, self.optimizer = model, optimizer
        device = next(model.parameters()).device
        self.terms_of: Callable = model.terms
        self.compiled = False
        if compiles(compile, device):
            _allow_many_compiled_models()
            self.terms_of, self.compiled = torch.compile(model.terms, dynamic=False), True
        # batch shape -> its captured step, or None after its eager warm-up step
        self.graphs: dict[torch.Size, _StepGraph | None] | None = {} if graphs(compile, device) else None

    @property
    def mode(self) -> str:
        """eager, compiled, graphed (CUDA graphs of eager kernels) or compiled+graphed."""
        if not self.compiled:
            return "eager" if self.graphs is None else "graphed"
        return "compiled" if self.graphs is None else "compiled+graphed"

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        eps = self.model.noise(x, g)
        while self.compiled or self.graphs is not None:
            try:
                return self._fast_step(x, eps)
            except Exception as exc:  # torch.compile's and capture's failures share no base class
                self._fall_back(exc)
        return self._step(self.model.terms, x, eps)

    def _fall_back(self, exc: Exception) -> None:
        """After a failure: compiled+graphed -> graphed (captured anew, from a warm-up), else eager.
        Nothing of the failed step has run: capturing runs no kernel, and compiling fails before."""
        failed = self.mode
        self.terms_of, self.compiled = self.model.terms, False
        self.graphs = {} if failed == "compiled+graphed" else None
        print(
            f"vaestudy: the {failed} training step failed ({first_line(failure_cause(exc))}); "
            f"training {self.mode}",
            file=sys.stderr,
        )

    def _fast_step(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.graphs is None:
            return self._step(self.terms_of, x, eps)
        if x.shape in self.graphs:  # warmed up: captured at its second step, replayed after
            if self.graphs[x.shape] is None:
                self.graphs[x.shape] = _StepGraph(self, x, eps)
            return self.graphs[x.shape](x, eps)
        # the shape's first step: eagerly (compiling here, not during the capture) on a side
        # stream, as capturing asks, so that lazily made workspaces are not made in the capture
        self.graphs[x.shape] = None
        side, main = torch.cuda.Stream(), torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = self._step(self.terms_of, x, eps)
        main.wait_stream(side)
        out.record_stream(main)  # made on the side stream, used on the main one
        return out

    def _step(
        self, terms_of: Callable, x: torch.Tensor, eps: torch.Tensor, zero_grad: bool = True
    ) -> torch.Tensor:
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        terms = terms_of(x, eps)
        terms["loss"].mean().backward()
        self.optimizer.step()
        return torch.stack((terms["loss"], terms["rate"], terms["distortion"])).detach()


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
    device = resolve_device(config.device)
    data = load_data(config, device)
    require(
        config.batch_size <= len(data),
        f"batch_size {config.batch_size} is larger than the training set ({len(data)} images)",
    )
    state = load_checkpoint(out / CHECKPOINT, config) if (out / CHECKPOINT).exists() else None

    model = build_model(config, data)
    optimizer = make_optimizer(model, config.lr)
    step = TrainStep(model, optimizer, config.compile)
    history: list[dict[str, Any]] = []
    status, diverged_epoch, start_epoch = "ok", None, 0
    best: dict[str, Any] = {"epoch": None, "val_elbo": -math.inf, "model": None}  # of validation ELBO
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError(
                f"checkpoint {out / CHECKPOINT} does not fit this model: {first_line(exc)}"
            ) from None
        history, start_epoch = list(state["history"]), int(state["epoch"])
        status, diverged_epoch = state["status"], state["diverged_epoch"]
        best = state.get("best", best)
        print(f"resuming {out} from epoch {start_epoch}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(epoch: int) -> None:
        # the curves so far, readable while the run trains (and resumes with the checkpoint)
        atomic_write_text(out / HISTORY, _history_csv(history))
        atomic_torch_save(
            out / CHECKPOINT,
            {
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "history": history,
                "status": status,
                "diverged_epoch": diverged_epoch,
                "best": best,
            },
        )

    def out_of_patience(epoch: int) -> bool:
        """No better validation ELBO for `patience` epochs up to this one."""
        return (
            config.patience is not None
            and best["epoch"] is not None
            and epoch - best["epoch"] >= config.patience
        )

    label = f"{config.arena}/{config.family}"
    board = None
    if config.tensorboard:
        from vaestudy.tensorboard import TensorBoardLog

        board = TensorBoardLog(out / "tensorboard", config.tensorboard_images_every, config.seed)
    bar = _Progress(config.epochs, start_epoch, label, progress)
    started = time.perf_counter()
    model.train()
    with _StopSignals() as term:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if status != "ok" or out_of_patience(epoch - 1):
                break
            t0 = time.perf_counter()
            last_good = copy.deepcopy(model.state_dict())
            last_good_optimizer = copy.deepcopy(optimizer.state_dict())
            lr = lr_at(config, epoch - 1)
            set_lr(optimizer, lr)
            g = generator(device, config.seed, "epoch", epoch)
            sums = train_epoch(step, data, config.batch_size, g, stop=lambda: term.raised is not None)
            if sums is None:  # preempted mid-epoch: back to the epoch's start, which the checkpoint records
                model.load_state_dict(last_good)
                optimizer.load_state_dict(last_good_optimizer)
                checkpoint(epoch - 1)
                raise TrainingInterrupted(
                    f"{out}: stopped by {term.name} in epoch {epoch}; checkpoint at epoch "
                    f"{epoch - 1} written, rerun the same command to resume",
                    term.raised,
                )
            loss_sum, rate_sum, dist_sum = (float(v) / len(data) for v in sums)
            if not math.isfinite(loss_sum):
                status, diverged_epoch = "diverged", epoch
                model.load_state_dict(last_good)
                print(f"{label}: non-finite loss in epoch {epoch}: stopped, status diverged", file=sys.stderr)
            val = validation_elbo(model, data.val, generator(device, config.seed, "val", epoch))
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
            history.append(row)
            bar.update(row)
            if board is not None:
                board.epoch(row, model, data, last=epoch == config.epochs or status != "ok")
            if status == "ok" and val > best["val_elbo"]:
                best = {
                    "epoch": epoch,
                    "val_elbo": val,
                    "model": copy.deepcopy(model.state_dict()) if config.keep_best else None,
                }
            if (
                status != "ok"
                or out_of_patience(epoch)
                or epoch % config.checkpoint_every == 0
                or epoch == config.epochs
                or term.raised is not None
            ):
                checkpoint(epoch)
            if term.raised is not None and status == "ok" and epoch < config.epochs:
                raise TrainingInterrupted(
                    f"{out}: stopped by {term.name} after epoch {epoch}; checkpoint written, "
                    "rerun the same command to resume",
                    term.raised,
                )
    bar.close()
    if board is not None:
        board.close()

    if config.keep_best and best["model"] is not None:
        model.load_state_dict(best["model"])
    model.eval()
    if status == "ok" and model.likelihood.fits_sigma_after_training:
        g_fit = generator(device, config.seed, "final-fit")
        model.likelihood.set_scale(model.mean_squared_residual(data.train_fixed(), g_fit))
    facts = {
        "status": status,
        "diverged_epoch": diverged_epoch,
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_elbo": best["val_elbo"] if best["epoch"] is not None else None,
        "weights": "best" if config.keep_best and best["model"] is not None else "last",
        "seconds": sum(r["seconds"] for r in history),
        "seconds_this_process": time.perf_counter() - started,
        "device": device_name(device),
        "training_step": step.mode,
        "peak_memory_mb": _peak_memory_mb(device),
        "final_sigma": model.likelihood.sigma(),
        "seeds": seeds_of(config),
        "versions": versions(),
        "config": config.to_dict(),
    }
    atomic_write_text(out / HISTORY, _history_csv(history))
    atomic_torch_save(
        out / MODEL,
        {
            "config": config.to_dict(),
            "model": model.state_dict(),
            "status": status,
            "diverged_epoch": diverged_epoch,
            "epochs": len(history),
            "best_epoch": best["epoch"],
        },
    )
    atomic_write_json(out / FACTS, facts)
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
