"""Machine-specific speed, in one place, behind one switch: VAESTUDY_FAST.

`auto` (the default) takes the paths below where the machine has them, `off` runs plain PyTorch
everywhere, `onednn` also multiplies every MLP through oneDNN (to test that path on any CPU). Each
path computes what the plain code computes, to float32 rounding, and is kept because it gained at
least 10% on a study's own workload (docs/performance.md). The private torch operations are tried
once on tiny tensors; where one is missing or fails, one line says so and the public path runs.
Which paths ran is recorded in train.json and metrics.json (`paths`).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any

import torch
from torch import nn

from vaestudy.errors import UserError, first_line, require

FAST_ENV = "VAESTUDY_FAST"
FAST_CHOICES = ("auto", "off", "onednn")
# An MLP call multiplies through oneDNN (on AMD processors, with auto) from this many multiply-adds:
# oneDNN's fixed cost per product makes smaller ones no faster than MKL's.
ONEDNN_MIN_MACS = 2**22
FUSED = {nn.Tanh: "tanh", nn.ReLU: "relu"}  # the activations oneDNN's linear applies in its kernel

_ran: dict[str, set[str]] = {}  # what ran since forget_paths(): a kind of work -> its paths


def setting() -> str:
    """VAESTUDY_FAST, checked: auto (also where unset or empty), off or onednn."""
    raw = os.environ.get(FAST_ENV, "auto")
    choice = raw.strip().lower() or "auto"
    require(choice in FAST_CHOICES, f"{FAST_ENV}={raw!r}: must be one of {', '.join(FAST_CHOICES)}")
    return choice


def _ran_path(kind: str, path: str) -> None:
    _ran.setdefault(kind, set()).add(path)


def forget_paths() -> None:
    _ran.clear()


def paths() -> dict[str, Any]:
    """The switch, the processor and its BLAS, and which path each kind of work took since forget_paths()."""
    blas = re.findall(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return {
        FAST_ENV: setting(),
        "cpu_vendor": cpu_info("vendor_id") or "unknown",
        "cpu_blas": blas[0] if blas else "unknown",
        **{kind: " and ".join(sorted(ran)) for kind, ran in sorted(_ran.items())},
    }


@functools.cache
def cpu_info(key: str) -> str:
    """A field of the first processor in /proc/cpuinfo ('vendor_id'); '' where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return ""


@functools.cache
def has(op: str) -> bool:
    """Whether the private torch operation `op` runs here: tried once on tiny tensors, one line if not."""
    try:
        if op == "onednn_linear":
            require(torch.backends.mkldnn.is_available(), "torch was built without oneDNN")
            x, w = torch.ones(2, 3), torch.ones(4, 3)
            y = torch.ops.mkldnn._linear_pointwise(x, w, torch.zeros(4), "tanh", [], "")
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 2)
            y = y + torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            ok = torch.allclose(y, torch.full((2, 4), 3.0 + torch.tanh(torch.tensor(3.0))))
        elif op == "fused_adam":
            p, grad, zero = torch.ones(2), torch.ones(2), torch.zeros(2)
            torch._fused_adam_([p], [grad], [zero.clone()], [zero.clone()], [], [torch.ones(())],
                               lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                               amsgrad=False, maximize=False)  # fmt: skip
            ok = torch.allclose(p, torch.full((2,), 0.9))
        else:
            raise ValueError(f"no such operation: {op}")
        require(ok, "it computed a wrong value")
        return True
    except (AttributeError, RuntimeError, TypeError, UserError) as exc:
        print(
            f"vaestudy: torch's {op} is not usable here ({first_line(exc)}); using the public path",
            file=sys.stderr,
        )
        return False


def onednn_mlp(mlp: nn.Sequential, rows: int) -> bool:
    """Whether this MLP call multiplies through oneDNN: on AMD processors, where MKL's float32
    products ran at about half of oneDNN's rate, from ONEDNN_MIN_MACS; at every size with `onednn`.
    Shapes and processor alone decide, never a timing, so that a resumed run computes as before."""
    choice = setting()
    if choice == "off":
        return False
    if choice == "auto" and (cpu_info("vendor_id") != "AuthenticAMD" or rows * _macs(mlp) < ONEDNN_MIN_MACS):
        return False
    return has("onednn_linear")


def _macs(mlp: nn.Sequential) -> int:
    """Multiply-adds of the MLP's products for one row (counted once per MLP: it is asked every call)."""
    if "_macs_per_row" not in mlp.__dict__:
        mlp._macs_per_row = sum(m.in_features * m.out_features for m in mlp if isinstance(m, nn.Linear))
    return mlp._macs_per_row


def mlp_forward(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The MLP on the CPU in float32: through oneDNN where onednn_mlp says so, else nn.Sequential's."""
    flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    if x.dtype != torch.float32 or torch.compiler.is_compiling() or not onednn_mlp(mlp, len(flat)):
        _ran_path("mlp_products", "torch")
        return nn.Sequential.forward(mlp, x)
    _ran_path("mlp_products", "oneDNN")
    layers, h = list(mlp), flat
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            after = layers[i + 1] if i + 1 < len(layers) else None
            h = OneDNNLinear.apply(h, layer.weight, layer.bias, FUSED.get(type(after), "none"))
        elif type(layer) not in FUSED:  # a fused activation was applied by the layer before it
            h = layer(h)
    return h if x.dim() == 2 else h.view(*x.shape[:-1], -1)


class OneDNNLinear(torch.autograd.Function):
    """activation(x W^T + b) for 2-d float32 x, activation tanh, relu or none, and its gradients
    (g W, g^T x), each product by oneDNN's linear layer with the activation inside its kernel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str):
        x = x.contiguous()  # oneDNN multiplies a strided slice far more slowly
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


class SampleDecoder:
    """model.decode for many latent samples at once, under torch.no_grad (the IWAE loop).

    On the CPU an MLP decoder with a tanh or relu runs through oneDNN's linear layer on weights
    packed once for the chunk's rows, with bias and activation inside the product; elsewhere, or
    with VAESTUDY_FAST=off, it is model.decode."""

    def __init__(self, model: nn.Module, rows: int):
        self.model = model
        self.layers: list[tuple[torch.Tensor, torch.Tensor, str]] = []
        activation = model.config.activation
        weight = next(model.decoder.parameters())
        if (
            model.config.architecture == "mlp"
            and activation in FUSED.values()
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and setting() != "off"
            and has("onednn_linear")
        ):
            linear = [m for m in model.decoder if isinstance(m, nn.Linear)]
            for i, layer in enumerate(linear):
                packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows)
                last = i == len(linear) - 1
                self.layers.append((packed, layer.bias.detach(), "none" if last else activation))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if not self.layers:
            _ran_path("iwae_decoder", "torch")
            return self.model.decode(z)
        _ran_path("iwae_decoder", "oneDNN, packed weights")
        h = z
        for weight, bias, activation in self.layers:
            h = torch.ops.mkldnn._linear_pointwise(h, weight, bias, activation, [], "")
        return h


class FusedAdam:
    """Adam (Kingma & Ba 2015) exactly as torch.optim.Adam(fused=True): one torch._fused_adam_ call
    per step. Without torch.optim, whose first use imports torch._dynamo (about a second a process)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # on the CPU the step counts are views of one tensor, counted up in one operation; on CUDA,
        # where the step is replayed as a CUDA graph, each is a tensor of its own
        devices = [p.device for p in self.params]
        f32 = torch.float32
        self.counts = {
            d: torch.zeros(devices.count(d), dtype=f32, device=d) for d in devices if d.type == "cpu"
        }
        views = {d: iter(count) for d, count in self.counts.items()}
        self.steps = [next(views[d]) if d in views else torch.zeros((), dtype=f32, device=d) for d in devices]
        # on CUDA the rate is read from a tensor, so that a captured step follows set_lr
        self.lr_on = {d: torch.tensor(self.lr, dtype=f32, device=d) for d in devices if d.type == "cuda"}

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)
        for t in self.lr_on.values():
            t.fill_(self.lr)

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
    """Adam: FusedAdam where its kernel runs and the switch allows, else torch.optim.Adam (fused
    where torch has the kernel for the parameters)."""
    params = list(model.parameters())
    fusable = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    if fusable and setting() != "off" and has("fused_adam"):
        _ran_path("optimizer", "vaestudy FusedAdam")
        return FusedAdam(params, lr)
    _ran_path("optimizer", "torch.optim.Adam")
    return torch.optim.Adam(params, lr=lr, fused=fusable and hasattr(torch, "_fused_adam_") or None)


def set_lr(optimizer: FusedAdam | torch.optim.Optimizer, lr: float) -> None:
    if isinstance(optimizer, FusedAdam):
        optimizer.set_lr(lr)
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr
