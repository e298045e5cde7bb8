"""The CUDA paths, where a GPU is present (skipped elsewhere): the training step captured as
CUDA graphs (of eager or compiled kernels) against the eager step, its fallback, evaluation in
true float32 (TF32 off), and the benchmark's CUDA rows. On a machine with a GPU:
`pytest tests/test_cuda.py`."""

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


@pytest.mark.parametrize("compile,mode", [("graph", "graphed"), ("auto", "compiled+graphed")])
@pytest.mark.parametrize(
    "family,arena",
    [
        ("gaussian_shared", "continuous"),
        ("gaussian_optimal", "continuous"),
        ("gaussian_heteroscedastic", "continuous"),
        ("continuous_bernoulli", "continuous"),
        ("bernoulli", "binary"),
    ],
)
def test_the_captured_training_step_on_cuda_matches_eager(tmp_path, capsys, family, arena, compile, mode):
    """compile: graph on CUDA captures the whole step (forward, backward, Adam) as one CUDA graph
    per batch shape; auto (as always) does so around torch.compile's kernels. Stated tolerance against
    the eager step: weights and history within 1e-4 (relative) / 1e-5 (absolute) after 3 epochs
    of 4 full batches and a smaller last one (both shapes warmed up, captured and replayed)."""
    base = dict(SMALL, family=family, arena=arena)
    eager = train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    fast = train(RunConfig(compile=compile, **base), tmp_path / "fast", progress=False)
    assert "training step failed" not in capsys.readouterr().err
    assert eager["training_step"] == "eager" and fast["training_step"] == mode
    assert_runs_close(tmp_path / "fast", tmp_path / "eager", rtol=1e-4, atol=1e-5)


def test_the_captured_step_follows_the_annealed_learning_rate(tmp_path):
    """The captured Adam reads its rate from a tensor that each epoch refills: with a cosine schedule
    the graphed run stays with the eager one (a rate baked into the graph would not)."""
    base = dict(SMALL, family="gaussian_shared", arena="continuous", lr_schedule="cosine", lr=0.01)
    train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    fast = train(RunConfig(compile="graph", **base), tmp_path / "fast", progress=False)
    assert fast["training_step"] == "graphed"
    assert_runs_close(tmp_path / "fast", tmp_path / "eager", rtol=1e-4, atol=1e-5)


def test_a_step_that_cannot_be_captured_trains_eagerly(tmp_path, monkeypatch, capsys):
    """The automatic fallback on CUDA: a capture that fails (here: a stand-in for an operation
    that CUDA graphs refuse) says so, once compiled and once not, and trains on eagerly, from
    the same batch, to the eager run's weights."""

    class BrokenGraph:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("operation not permitted when stream is capturing\nlong traceback")

    base = dict(SMALL, family="bernoulli", arena="binary")
    train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    monkeypatch.setattr(torch.cuda, "graph", BrokenGraph)
    facts = train(RunConfig(compile="auto", **base), tmp_path / "fallback", progress=False)
    err = capsys.readouterr().err
    failure = "training step failed (operation not permitted when stream is capturing)"
    assert err.count(f"the compiled+graphed {failure}; training graphed") == 1
    assert err.count(f"the graphed {failure}; training eager") == 1
    assert facts["training_step"] == "eager"
    assert_runs_close(tmp_path / "fallback", tmp_path / "eager", rtol=1e-5, atol=1e-6)


def test_a_likelihood_that_waits_for_the_gpu_falls_back_to_eager(tmp_path, monkeypatch, capsys):
    """A real capture failure: a likelihood of one's own that synchronises with the GPU (as a
    .item() or a copy to the CPU would), which a CUDA graph cannot hold: captured with its eager
    kernels (compile: graph), it fails, and the run trains on eagerly to the eager run's weights.
    (Under torch.compile the wait did not stop the capture.)"""
    from vaestudy.likelihoods import BernoulliLikelihood

    base = dict(SMALL, family="bernoulli", arena="binary")
    train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    plain = BernoulliLikelihood.reconstruction

    def waiting(self, x, o):
        torch.cuda.synchronize()
        return plain(self, x, o)

    monkeypatch.setattr(BernoulliLikelihood, "reconstruction", waiting)
    facts = train(RunConfig(compile="graph", **base), tmp_path / "fallback", progress=False)
    err = capsys.readouterr().err
    assert err.count("vaestudy: the graphed training step failed (") == 1
    assert "previous error during capture" not in err  # the cause is named, not the capture's end
    assert facts["training_step"] == "eager"
    assert_runs_close(tmp_path / "fallback", tmp_path / "eager", rtol=1e-5, atol=1e-6)


def test_evaluation_on_cuda_turns_tf32_off_and_is_float32_exact(tmp_path):
    """With TF32 switched on globally, evaluation's decoder products still run in true float32:
    against float64 on the CPU within 1e-5 (TF32 would be about 1e-3 off)."""
    from vaestudy.evaluate import evaluate
    from vaestudy.runtime import exact_float32
    from vaestudy.train import load_trained

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
    assert measures[:4] == [
        "trainer (compiled+graphed) images/s vs textbook loop",
        "trainer (compiled+graphed) images/s vs 300,000",
        "trainer images/s, compiled+graphed vs eager",
        "trainer images/s, graphed vs eager",
    ]
    for r in rows:
        assert r["value"] > 0
        if not math.isnan(r["reference"]):
            assert math.isclose(r["ratio"], r["value"] / r["reference"], rel_tol=1e-9)
