"""The CUDA paths, where a GPU is present (skipped elsewhere): the training step compiled and
replayed as CUDA graphs against the eager step, evaluation in true float32 (TF32 off), and the
benchmark's CUDA rows. On a machine with a GPU: `pytest tests/test_cuda.py`."""

import math

import pytest
import torch
from conftest import assert_runs_close

from vaestudy.config import RunConfig
from vaestudy.train import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL = dict(epochs=3, hidden=[64], latent=4, batch_size=60, device="cuda", max_train=300, max_test=60)


@pytest.mark.parametrize(
    "family,arena",
    [("gaussian_shared", "continuous"), ("gaussian_optimal", "continuous"), ("bernoulli", "binary")],
)
def test_the_compiled_training_step_on_cuda_matches_eager(tmp_path, capsys, family, arena):
    """compile: auto on CUDA is torch.compile in 'reduce-overhead' mode (CUDA graphs). Stated
    tolerance against the eager step: weights and history within 1e-4 (relative) / 1e-5
    (absolute) after 3 epochs of 4 full batches and a smaller last one."""
    base = dict(SMALL, family=family, arena=arena)
    eager = train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    compiled = train(RunConfig(compile="auto", **base), tmp_path / "compiled", progress=False)
    assert "the compiled training step failed" not in capsys.readouterr().err
    assert eager["training_step"] == "eager" and compiled["training_step"] == "compiled"
    assert_runs_close(tmp_path / "compiled", tmp_path / "eager", rtol=1e-4, atol=1e-5)


def test_evaluation_on_cuda_turns_tf32_off_and_is_float32_exact(tmp_path):
    """With TF32 switched on globally, evaluation's decoder products still run in true float32:
    against float64 on the CPU within 1e-5 (TF32 would be about 1e-3 off)."""
    from vaestudy.evaluate import evaluate
    from vaestudy.train import load_trained
    from vaestudy.utils import exact_float32

    train(RunConfig(family="gaussian_fixed", **SMALL), tmp_path / "run", progress=False)
    trained = load_trained(tmp_path / "run", "cuda")
    model = trained[0]
    seen, decode = [], model.decode

    def recording_decode(z):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return decode(z)

    model.decode = recording_decode
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        evaluate(tmp_path / "run", tmp_path / "m.json", k=50, device="cuda", trained=trained)
        z = torch.randn((64, 4), generator=torch.Generator().manual_seed(0))
        with exact_float32():
            o = decode(z.cuda()).double().cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert seen and not any(seen)
    with torch.no_grad():
        reference = model.to("cpu").double().decoder(z.double())
    assert float(((o - reference).abs() / (reference.abs() + 1)).max()) < 1e-5


def test_the_benchmark_has_its_cuda_rows():
    from vaestudy.bench import run_bench

    rows = run_bench(
        torch.device("cuda"), train_images=2048, repeats=1, iwae_images=50, k=100, memory_images=2
    )
    measures = [r["measure"] for r in rows]
    assert measures[:3] == [
        "trainer (compiled) images/s vs textbook loop",
        "trainer (compiled) images/s vs 300,000",
        "trainer images/s, compiled vs eager",
    ]
    for r in rows:
        assert r["value"] > 0
        if not math.isnan(r["reference"]):
            assert math.isclose(r["ratio"], r["value"] / r["reference"], rel_tol=1e-9)
