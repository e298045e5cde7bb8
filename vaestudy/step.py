"""The training step: eager, under torch.compile, or captured whole as CUDA graphs.

On CUDA the step (forward, backward and Adam) of each batch shape is captured once as a CUDA
graph and replayed, one launch instead of one per kernel; a step that cannot be compiled or
captured says so in one line and goes on a plainer way from the same batch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from vaestudy.config import check_compile
from vaestudy.errors import first_line
from vaestudy.fast import FusedAdam
from vaestudy.model import VAE


def compiles(compile: str, device: torch.device) -> bool:
    """Does the setting `compile` put the ELBO terms under torch.compile on this device? 'always',
    and 'auto' on CUDA, where it speeds up the captured step; on the CPU it costs more than it gains
    (docs/performance.md)."""
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

    `compile` (RunConfig.compile): never = eager; graph = on CUDA the whole step captured as one
    CUDA graph per batch shape (after an eager warm-up step) and replayed; always = the ELBO terms
    under torch.compile, captured too on CUDA; auto = always on CUDA, never on the CPU. The noise
    is drawn eagerly, so every mode sees the same draws; a mode that fails says so and falls back.
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
