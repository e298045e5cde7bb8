"""`vaestudy bench`: the trainer and the evaluator side by side with the textbook loop and with the
machine's own matrix-product rate, measured in one run on the current device.

The textbook loop is that of pytorch/examples `vae/main.py`: a DataLoader over an MNIST-like data
set whose items are converted one by one from a PIL image by `transforms.ToTensor()`, on the same
MLP (784-500-500-20, batch 128, Adam). The data are synthetic, of MNIST's shape, and say so.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vaestudy.data import ArenaData, Levels, make_splits, synthetic_mnist
from vaestudy.errors import require
from vaestudy.fast import has, make_optimizer
from vaestudy.files import atomic_write_text
from vaestudy.likelihoods import build_likelihood
from vaestudy.model import VAE, ModelConfig
from vaestudy.runtime import exact_float32, generator
from vaestudy.step import TrainStep
from vaestudy.train import FACTS, HISTORY, train_epoch

HIDDEN, LATENT, SIDE = [500, 500], 20, 28


def synthetic_levels(n: int, seed: int = 0) -> Levels:
    """n MNIST-shaped training images (and n/6 test images) of vaestudy.data.synthetic_mnist."""
    return synthetic_mnist(n, max(1, n // 6), seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(device: torch.device, n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of a large float32 matrix product (TF32 off) by each library that torch multiplies
    with on the device: `torch` (`a @ b`: MKL on an x86 CPU, cuBLAS on CUDA) and, on a CPU with
    oneDNN, `onednn` (its linear layer on packed weights, as vaestudy.fast uses it). The best of
    them is the machine's limit for this work."""
    with exact_float32():
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        products = {"torch": lambda: a @ b}
        if device.type == "cpu" and has("onednn_linear"):
            packed = torch.ops.mkldnn._reorder_linear_weight(b.t().contiguous(), n)
            products["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
        rates = {}
        for name, product in products.items():
            product()
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                product()
            _sync(device)
            rates[name] = 2 * n**3 * repeats / (time.perf_counter() - t0)
    return rates


def mlp_flops(batch: int) -> dict[str, float]:
    """Matrix-product FLOPs of the 784-500-500-20 VAE: forward, and a training step (forward and backward)."""
    enc = [(784, 500), (500, 500), (500, 2 * LATENT)]
    dec = [(LATENT, 500), (500, 500), (500, 784)]
    forward = sum(2 * batch * a * b for a, b in enc + dec)
    # backward: weight gradients for every layer, input gradients for all but the first
    backward = forward + forward - 2 * batch * 784 * 500
    return {
        "forward": forward,
        "step": forward + backward,
        "decoder_per_sample": sum(2 * a * b for a, b in dec),
    }


class TextbookVAE(nn.Module):
    """pytorch/examples vae/main.py, with the benchmark's MLP sizes."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 500), nn.Tanh(), nn.Linear(500, 500), nn.Tanh())
        self.mu, self.logvar = nn.Linear(500, LATENT), nn.Linear(500, LATENT)
        self.dec = nn.Sequential(
            nn.Linear(LATENT, 500), nn.Tanh(), nn.Linear(500, 500), nn.Tanh(), nn.Linear(500, 784)
        )

    def forward(self, x):
        h = self.enc(x.view(-1, 784))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.dec(z)), mu, logvar


def textbook_loader(levels: Levels, batch: int):
    """torchvision's MNIST item path: uint8 array -> PIL image -> ToTensor(), one item at a time."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class Items(Dataset):
        def __init__(self, images):
            self.images, self.to_tensor = images[:, 0].numpy(), transforms.ToTensor()

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.to_tensor(Image.fromarray(self.images[i], mode="L")), 0

    return DataLoader(Items(levels.train), batch_size=batch, shuffle=True)


def textbook_epoch(model: TextbookVAE, optimizer, loader, device: torch.device) -> int:
    model.train()
    seen = 0
    for x, _ in loader:
        x = x.to(device)
        optimizer.zero_grad()
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        (bce + kld).backward()
        optimizer.step()
        seen += len(x)
    return seen


def benchmark_vae(device: torch.device) -> VAE:
    """The benchmark MLP (784-500-500-20) with the Bernoulli likelihood, on the device."""
    model = VAE(
        ModelConfig(shape=(1, SIDE, SIDE), latent=LATENT, hidden=HIDDEN), build_likelihood("bernoulli", 784)
    )
    return model.to(device)


def benchmark_trainer(device: torch.device, compile: str) -> TrainStep:
    """The vaestudy training step on the benchmark VAE."""
    model = benchmark_vae(device).train()
    return TrainStep(model, make_optimizer(model, 1e-3), compile)


def check_train_images(n: int, batch: int = 128) -> None:
    """At least two batches, of which the training split (all but 1%) keeps one full for the
    timed step."""
    require(n >= 2 * batch, f"train images must be >= {2 * batch} (two batches of {batch}), got {n}")


def bench_training(
    device: torch.device, n: int, repeats: int, batch: int = 128, compile: str = "auto"
) -> dict[str, Any]:
    """Images/s of vaestudy's trainer (in the mode `compile` gives, and eager; on CUDA also the other
    capture) against the textbook loop, in interleaved epochs after a warm-up, and the FLOP rates of
    the training step on ready batches and of whole epochs (with drawing the batches)."""
    check_train_images(n, batch)
    levels = synthetic_levels(n)
    data = ArenaData(make_splits(levels, 0, val_fraction=0.01), "binary", device, 0)
    trainers = {"ours": benchmark_trainer(device, compile)}
    if trainers["ours"].mode != "eager":
        trainers["eager"] = benchmark_trainer(device, "never")
    if device.type == "cuda":  # the other way of capturing: with compiled kernels or eager ones
        other = "graph" if trainers["ours"].mode == "compiled+graphed" else "always"
        trainers["other"] = benchmark_trainer(device, other)
    textbook = TextbookVAE().to(device)
    textbook_opt = torch.optim.Adam(textbook.parameters(), lr=1e-3)
    loader = textbook_loader(levels, batch)
    rates: dict[str, list[float]] = {name: [] for name in [*trainers, "textbook"]}
    for step in trainers.values():
        train_epoch(step, data, batch, generator(device, 0, "warm-up"))
    ready = [x for x in data.batches(batch, generator(device, 0, "ready")) if len(x) == batch]
    step_seconds = []
    for r in range(repeats):
        for name, step in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            train_epoch(step, data, batch, generator(device, 0, "bench", r))
            _sync(device)
            rates[name].append(len(data) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        seen = textbook_epoch(textbook, textbook_opt, loader, device)
        _sync(device)
        rates["textbook"].append(seen / (time.perf_counter() - t0))
        g = generator(device, 0, "ready", r)
        _sync(device)
        t0 = time.perf_counter()
        for x in ready:
            trainers["ours"](x, g)
        _sync(device)
        step_seconds.append((time.perf_counter() - t0) / len(ready))
    median = {name: statistics.median(values) for name, values in rates.items()}
    step_flops = mlp_flops(batch)["step"]
    return {
        "train_mode": trainers["ours"].mode,  # after the warm-up: eager if compiling failed
        "train_images_per_s": median["ours"],
        "eager_images_per_s": median.get("eager"),
        "other_mode": trainers["other"].mode if "other" in trainers else None,
        "other_images_per_s": median.get("other"),
        "textbook_images_per_s": median["textbook"],
        "step_flops_per_s": step_flops / min(step_seconds),
        "step_seconds_fastest": min(step_seconds),
        "step_seconds_slowest": max(step_seconds),
        "epoch_flops_per_s": max(rates["ours"]) * step_flops / batch,
        "train_images": len(data),
    }


def bench_iwae(
    device: torch.device, images: int, k: int, max_elements: int, repeats: int = 1
) -> dict[str, Any]:
    """Seconds per test image of IWAE at K, and its achieved matrix-product FLOP rate: the fastest
    of `repeats` runs over the same images, measured as the large matmul's rate is."""
    from vaestudy.evaluate import iwae

    model = benchmark_vae(device).eval()
    x = iwae_test_images(device, images)
    times = []
    with exact_float32():
        iwae(model, x[:2], min(k, 100), generator(device, 0, "warm-up"), max_elements=max_elements)
        for r in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            iwae(model, x, k, generator(device, 0, "iwae", r), max_elements=max_elements)
            _sync(device)
            times.append(time.perf_counter() - t0)
    seconds = min(times)
    flops = images * k * mlp_flops(1)["decoder_per_sample"]
    return {
        "iwae_seconds_per_image": seconds / images,
        "iwae_seconds_slowest": max(times) / images,
        "iwae_flops_per_s": flops / seconds,
        "iwae_images": images,
        "k": k,
    }


def iwae_test_images(device: torch.device, images: int) -> torch.Tensor:
    """The benchmark's binary test images: pixels on with probability 0.2, from a fixed seed."""
    return torch.bernoulli(torch.full((images, 784), 0.2, device=device), generator=generator(device, 0, "x"))


def iwae_peak_memory_mb(images: int, k: int, max_elements: int, device: str) -> float:
    """Peak memory of IWAE over `images` test images, measured in a fresh process, above the
    level before IWAE (with the model and the test images already in memory: what IWAE itself
    takes). CPU: the peak of the resident memory, sampled every millisecond, with glibc told to
    hand every block of 64 KiB or more back to the system when freed, so that the resident memory
    follows the live tensors instead of malloc's caches; CUDA: torch's peak allocation."""
    code = f"""
import threading, time, psutil, torch
from vaestudy.bench import benchmark_vae, iwae_test_images
from vaestudy.evaluate import iwae
from vaestudy.runtime import exact_float32, generator, resolve_device
dev = resolve_device({device!r})
model, x = benchmark_vae(dev).eval(), iwae_test_images(dev, {images})
def run(images, k):
    with exact_float32():
        iwae(model, x[:images], k, generator(dev, 0, "iwae"), max_elements={max_elements})
run(1, 10)  # warm-up: libraries loaded, first allocations made
proc, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.001)
if dev.type == "cuda":
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    run({images}, {k})
    torch.cuda.synchronize(dev)
    print((torch.cuda.max_memory_allocated(dev) - base) / 2**20)
else:
    base = proc.memory_info().rss
    thread = threading.Thread(target=sample)
    thread.start()
    run({images}, {k})
    done.set()
    thread.join()
    print((peak[0] - base) / 2**20)
"""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


CUDA_IMAGES_PER_S = 300_000  # the trainer's target on a GPU at batch 128 (docs/performance.md)
STUDY_SECONDS = 30 * 60  # its target for the whole MNIST-scale study on that GPU


def default_iwae_images(device: torch.device) -> int:
    """Test images of the timed IWAE run: 20 on CPU, a 10,000-image test set on CUDA."""
    return 10_000 if device.type == "cuda" else 20


def _row(measure: str, value: float, reference: float, target: float, device: str) -> dict[str, Any]:
    """A row of the table; its ratio is value / reference (NaN without a positive reference)."""
    ratio = value / reference if reference > 0 else math.nan
    return {
        "measure": measure,
        "value": value,
        "reference": reference,
        "ratio": ratio,
        "target_ratio": target,
        "device": device,
    }


def _trainer_rows(
    train: dict[str, Any], best: dict[str, float], limit: float, repeats: int, cpu: bool
) -> list[tuple[str, float, float, float]]:
    """(measure, value, reference, target) of the trainer and the large matmul."""
    mode = train["train_mode"]
    rows = [
        (
            f"trainer ({mode}) images/s vs textbook loop",
            train["train_images_per_s"],
            train["textbook_images_per_s"],
            1.8 if cpu else 10.0,
        ),
    ]
    if not cpu:
        rows.append(
            (
                f"trainer ({mode}) images/s vs {CUDA_IMAGES_PER_S:,}",
                train["train_images_per_s"],
                CUDA_IMAGES_PER_S,
                1.0,
            )
        )
    for name in ("train", "other"):
        if train["eager_images_per_s"] is not None and train[f"{name}_images_per_s"] is not None:
            rows.append(
                (
                    f"trainer images/s, {train[f'{name}_mode']} vs eager",
                    train[f"{name}_images_per_s"],
                    train["eager_images_per_s"],
                    math.nan,
                )
            )
    if "onednn" in best:
        rows.append(("large matmul FLOP/s, oneDNN vs MKL", best["onednn"], best["torch"], math.nan))
    rows += [
        ("training step FLOP/s vs large matmul", train["step_flops_per_s"], limit, 0.5 if cpu else math.nan),
        # how far the machine's speed moved during the run (a shared host): the rates above take the fastest
        (
            f"training step s, slowest vs fastest of {repeats} rounds",
            train["step_seconds_slowest"],
            train["step_seconds_fastest"],
            math.nan,
        ),
        ("training epoch (with batches) FLOP/s vs large matmul", train["epoch_flops_per_s"], limit, math.nan),
    ]
    return rows


def _iwae_rows(
    ev: dict[str, Any], limit: float, k: int, repeats: int, cpu: bool
) -> list[tuple[str, float, float, float]]:
    """(measure, value, reference, target) of the IWAE: its rate and time per image."""
    return [
        ("IWAE FLOP/s vs large matmul", ev["iwae_flops_per_s"], limit, 0.7 if cpu else math.nan),
        (f"IWAE s/image at K={k}", ev["iwae_seconds_per_image"], math.nan, math.nan),
        (
            f"IWAE s/image, slowest vs fastest of {repeats} runs",
            ev["iwae_seconds_slowest"],
            ev["iwae_seconds_per_image"],
            math.nan,
        ),
        # the CUDA target: a 10,000-image test set in under 10 s
        (
            f"IWAE images/s at K={k} vs 1,000",
            1 / ev["iwae_seconds_per_image"],
            1000.0,
            math.nan if cpu else 1.0,
        ),
    ]


def _memory_rows(
    device: torch.device, k: int, max_elements: int, images: int
) -> list[tuple[str, float, float, float]]:
    """IWAE's peak memory over `images` and 4 x `images` test images, and over `images` with
    4 x max_elements, each measured in a fresh process."""
    small = iwae_peak_memory_mb(images, k, max_elements, str(device))
    large = iwae_peak_memory_mb(4 * images, k, max_elements, str(device))
    bound = iwae_peak_memory_mb(images, k, 4 * max_elements, str(device))
    return [
        (f"IWAE peak MB, {4 * images} vs {images} images", large, small, 1.0),
        (f"IWAE peak MB, max_elements x4 ({images} images)", bound, small, math.nan),
    ]


def run_bench(
    device: torch.device,
    train_images: int = 10_000,
    repeats: int = 3,
    iwae_images: int | None = None,
    k: int = 5000,
    max_elements: int | None = None,
    out_csv: str | Path | None = None,
    compile: str = "auto",
    memory_images: int = 20,
) -> list[dict[str, Any]]:
    """The whole benchmark; returns rows (measure, value, reference, ratio, target) and writes them
    as CSV. IWAE's peak memory is measured over memory_images test images (_memory_rows)."""
    from vaestudy.evaluate import default_max_elements

    max_elements = max_elements or default_max_elements(device)
    iwae_images = iwae_images or default_iwae_images(device)
    # the machine's limit: the best of the large matmul's rates (of each library) before, between
    # and after the two workloads
    peaks = [matmul_rates(device)]
    train = bench_training(device, train_images, repeats, compile=compile)
    peaks.append(matmul_rates(device))
    ev = bench_iwae(device, iwae_images, k, max_elements, repeats)
    peaks.append(matmul_rates(device))
    best = {name: max(p.get(name, 0.0) for p in peaks) for name in peaks[0]}
    limit = max(best.values())
    cpu = device.type == "cpu"
    rows = (
        _trainer_rows(train, best, limit, repeats, cpu)
        + _iwae_rows(ev, limit, k, repeats, cpu)
        + _memory_rows(device, k, max_elements, memory_images)
    )
    table = [_row(*row, device=str(device)) for row in rows]
    if out_csv is not None:
        write_rows(table, out_csv)
    return table


def pipeline_startup(results: str | Path) -> dict[str, float]:
    """The share of a finished study's job time spent in process start-up and imports.

    Job time: the seconds (`s`) of every Snakemake `benchmark:` file under RESULTS/benchmarks.
    Start-up: the line that every vaestudy command writes to its log under RESULTS/logs as its
    work begins (the seconds from the process's creation: interpreter, imports, argument parsing).
    """
    import csv

    from vaestudy.errors import UserError
    from vaestudy.runtime import STARTUP_LINE

    results = Path(results)
    tables = sorted((results / "benchmarks").rglob("*.tsv"))
    if not tables:
        raise UserError(f"no benchmark files under {results / 'benchmarks'}: run the study first")
    job_seconds = 0.0
    for table in tables:
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or "s" not in rows[0]:
            raise UserError(f"{table} is not a Snakemake benchmark file")
        job_seconds += float(rows[0]["s"])
    startup, logged = 0.0, 0
    for log in sorted((results / "logs").rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(STARTUP_LINE):
                startup += float(line[len(STARTUP_LINE) :].split()[0])
                logged += 1
    return {
        "jobs": len(tables),
        "jobs_with_startup_line": logged,
        "job_seconds": job_seconds,
        "startup_seconds": startup,
        "startup_share": startup / job_seconds if job_seconds > 0 else math.nan,
    }


def study_projection(
    results: str | Path, job_seconds: float, wall_seconds: float, full_epochs: int
) -> dict[str, float]:
    """The wall time of a study at `full_epochs`, projected from a shorter run of it (jobs of
    `job_seconds` in `wall_seconds`): each model gains the median time of its later epochs for
    each missing one (a diverged model stays), and the wall time grows as the job time does."""
    import csv
    import json

    from vaestudy.errors import UserError

    results = Path(results)
    if job_seconds <= 0:
        raise UserError(f"the benchmark files under {results / 'benchmarks'} add up to no time")
    histories = sorted((results / "runs").rglob(HISTORY))
    if not histories:
        raise UserError(f"no training histories under {results / 'runs'}: run the study first")
    extra, epochs_run = 0.0, set()
    for path in histories:
        with path.open(newline="") as f:
            seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
        facts = path.parent / FACTS
        if facts.exists() and json.loads(facts.read_text()).get("status") == "diverged":
            continue  # it stopped at its divergence: no more epochs in the full study either
        if len(seconds) < 2:
            raise UserError(f"{path}: a projection needs at least 2 epochs per model")
        epochs_run.add(len(seconds))
        extra += max(full_epochs - len(seconds), 0) * statistics.median(seconds[1:])
    if not epochs_run:
        raise UserError(f"every model under {results / 'runs'} diverged: nothing to project")
    if len(epochs_run) != 1:
        raise UserError(f"the models under {results / 'runs'} ran for different epochs: {sorted(epochs_run)}")
    factor = (job_seconds + extra) / job_seconds
    return {
        "models": len(histories),
        "epochs": epochs_run.pop(),
        "full_epochs": full_epochs,
        "job_seconds": job_seconds,
        "projected_job_seconds": job_seconds + extra,
        "wall_seconds": wall_seconds,
        "projected_wall_seconds": wall_seconds * factor,
    }


def pipeline_rows(
    results: str | Path, wall_seconds: float | None = None, full_epochs: int | None = None
) -> list[dict[str, Any]]:
    """The start-up share of a finished study; with its wall time and a number of epochs, also
    30 minutes against the wall time projected to those epochs (the CUDA target of the
    MNIST-scale study)."""
    s = pipeline_startup(results)
    measure = f"pipeline start-up s vs job s ({s['jobs']} jobs)"
    rows = [_row(measure, s["startup_seconds"], s["job_seconds"], 0.2, device=str(results))]
    if wall_seconds is not None and full_epochs is not None:
        p = study_projection(results, s["job_seconds"], wall_seconds, full_epochs)
        measure = f"30 min vs study wall s projected from {p['epochs']} to {full_epochs} epochs"
        rows.append(_row(measure, STUDY_SECONDS, p["projected_wall_seconds"], 1.0, device=str(results)))
    return rows


def write_rows(rows: list[dict[str, Any]], out_csv: str | Path) -> None:
    import pandas as pd

    atomic_write_text(out_csv, pd.DataFrame(rows).to_csv(index=False))


def format_table(rows: list[dict[str, Any]]) -> str:
    def num(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"

    width = max(len(r["measure"]) for r in rows)
    lines = [f"{'measure':{width}s}  {'value':>11s}  {'reference':>11s}  {'ratio':>7s}  {'target':>7s}"]
    for r in rows:
        lines.append(
            f"{r['measure']:{width}s}  {num(r['value']):>11s}  {num(r['reference']):>11s}  "
            f"{num(r['ratio']):>7s}  {num(r['target_ratio']):>7s}"
        )
    return "\n".join(lines)
