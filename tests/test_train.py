"""Training: determinism, resume after a kill, divergence as a result, every family end to end."""

import functools
import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import assert_runs_close, has_cxx_compiler, run_history, run_weights

from vaestudy.config import RunConfig
from vaestudy.errors import UserError
from vaestudy.evaluate import evaluate
from vaestudy.likelihoods import REGISTRY
from vaestudy.train import CHECKPOINT, HISTORY, MODEL, lr_at, train

SMALL = dict(epochs=3, hidden=[32], latent=4, batch_size=64, device="cpu", max_train=300, max_test=60)


def _assert_same_run(a, b):
    _assert_same_weights(a, b)
    pd.testing.assert_frame_equal(run_history(a), run_history(b))


def _assert_resumed_run_is_the_whole_one(whole, parts, epochs=4, stop=2, **config):
    """Trains `config` for `epochs` (checkpoints every 2) into `whole`, and into `parts` for `stop`
    epochs and then, resumed from that checkpoint, to `epochs`; both must end the same."""
    base = dict(SMALL, epochs=epochs, checkpoint_every=2, **config)
    train(RunConfig(**base), whole, progress=False)
    for until in (stop, epochs):
        train(RunConfig(**dict(base, epochs=until)), parts, progress=False)
    _assert_same_run(whole, parts)


def test_the_cosine_schedule_anneals_the_rate_to_zero_by_the_last_epoch(tmp_path):
    config = RunConfig(lr=0.003, epochs=4, lr_schedule="cosine")
    # lr/2 (1 + cos(pi t / T)) for the t = 0..3 epochs completed (Loshchilov & Hutter 2017)
    expected = [0.003, 0.003 * (1 + 2**-0.5) / 2, 0.0015, 0.003 * (1 - 2**-0.5) / 2]
    assert [lr_at(config, t) for t in range(4)] == pytest.approx(expected, rel=1e-12)
    assert lr_at(RunConfig(lr=0.003, epochs=4), 3) == 0.003  # constant
    train(RunConfig(family="gaussian_shared", lr_schedule="cosine", **SMALL), tmp_path, progress=False)
    assert run_history(tmp_path)["lr"].tolist() == pytest.approx([0.001, 0.00075, 0.00025])
    with pytest.raises(UserError, match="lr_schedule must be one of constant, cosine, got 'step'"):
        RunConfig(lr_schedule="step").validate()


def test_training_is_deterministic_for_a_seed(tmp_path):
    config = RunConfig(family="gaussian_shared", **SMALL)
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    _assert_same_run(tmp_path / "a", tmp_path / "b")
    other = RunConfig(family="gaussian_shared", seed=2, **SMALL)
    train(other, tmp_path / "c", progress=False)
    assert not torch.equal(
        run_weights(tmp_path / "a")["decoder.0.weight"], run_weights(tmp_path / "c")["decoder.0.weight"]
    )


def test_resume_from_a_checkpoint_ends_with_identical_weights_and_history(tmp_path):
    # stop after epoch 3 (its checkpoint, though checkpoints come every 2), then resume to 6
    _assert_resumed_run_is_the_whole_one(
        tmp_path / "whole", tmp_path / "parts", epochs=6, stop=3, family="gaussian_optimal"
    )


# a tiny training set and a learned per-pixel variance: the validation ELBO peaks before the end
OVERFITS = dict(
    SMALL,
    family="gaussian_heteroscedastic",
    params={"floor": 0.001},
    epochs=30,
    max_train=40,
    batch_size=20,
    lr=0.01,
)


def test_keep_best_keeps_the_weights_of_the_best_validation_epoch(tmp_path):
    facts = train(RunConfig(**OVERFITS, keep_best=True), tmp_path / "best", progress=False)
    history = run_history(tmp_path / "best")
    best = int(history.epoch[history.val_elbo.idxmax()])
    assert facts["best_epoch"] == best < 30 and facts["epochs"] == 30 and facts["weights"] == "best"
    assert json.loads((tmp_path / "best" / "train.json").read_text())["best_epoch"] == best
    # the same run trained for `best` epochs alone ends with those weights
    train(RunConfig(**dict(OVERFITS, epochs=best)), tmp_path / "short", progress=False)
    _assert_same_weights(tmp_path / "best", tmp_path / "short")


def test_patience_stops_where_the_validation_elbo_last_improved_that_many_epochs_before(tmp_path):
    train(RunConfig(**OVERFITS), tmp_path / "all", progress=False)
    val = run_history(tmp_path / "all").val_elbo.tolist()
    patience = 3
    stop = next(
        e for e in range(1, len(val) + 1) if e - (max(range(e), key=lambda i: val[i]) + 1) >= patience
    )
    facts = train(RunConfig(**OVERFITS, patience=patience), tmp_path / "patient", progress=False)
    assert facts["epochs"] == stop < 30
    assert run_history(tmp_path / "patient").val_elbo.tolist() == val[:stop]
    # rerun: nothing more to train, the same model
    assert (
        train(RunConfig(**OVERFITS, patience=patience), tmp_path / "patient", progress=False)["epochs"]
        == stop
    )


def test_resume_with_keep_best_and_patience_is_bit_identical(tmp_path):
    overfits = {k: v for k, v in OVERFITS.items() if k != "epochs"}
    _assert_resumed_run_is_the_whole_one(
        tmp_path / "whole", tmp_path / "parts", epochs=30, stop=13, keep_best=True, patience=3, **overfits
    )


def test_history_csv_is_written_at_every_checkpoint_while_training_runs(tmp_path, monkeypatch):
    """A running model's curves can be read: history.csv holds every epoch up to the last checkpoint."""
    import vaestudy.train as training

    seen, save = [], training.atomic_torch_save

    def recording(path, obj):  # each checkpoint: what history.csv then held, beside its epoch
        save(path, obj)
        if path.name == CHECKPOINT:
            seen.append((obj["epoch"], pd.read_csv(path.parent / HISTORY).epoch.tolist()))

    monkeypatch.setattr(training, "atomic_torch_save", recording)
    train(
        RunConfig(family="gaussian_fixed", **dict(SMALL, epochs=5, checkpoint_every=2)),
        tmp_path,
        progress=False,
    )
    assert seen == [(2, [1, 2]), (4, [1, 2, 3, 4]), (5, [1, 2, 3, 4, 5])]


def _assert_same_weights(a, b):
    wa, wb = run_weights(a), run_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_run_is_never_cut_back_to_fewer_epochs(tmp_path):
    """Asked for fewer epochs than a run has trained, training stops with a user error and leaves
    the run as it was (it kept the longer model and said 'ok after 4 epochs')."""
    base = dict(SMALL, epochs=4, checkpoint_every=2)
    train(RunConfig(family="gaussian_fixed", **base), tmp_path / "run", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(UserError, match="has trained 4 epochs, more than the 2 asked for"):
        train(RunConfig(family="gaussian_fixed", **dict(base, epochs=2)), tmp_path / "run", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    # the same epochs again: nothing to train, the run as it was
    assert train(RunConfig(family="gaussian_fixed", **base), tmp_path / "run", progress=False)["epochs"] == 4


def _cli(*args):
    return [sys.executable, "-m", "vaestudy.cli", *args]


KILL_ARGS = (  # with the annealed rate, whose value at each epoch a resumed run must take up
    "train --family gaussian_pixel --epochs 150 --checkpoint-every 10 --hidden 32 --latent 4 "
    "--device cpu --max-train 400 --lr-schedule cosine"
).split()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    subprocess.run(_cli(*KILL_ARGS, "--out", str(out)), check=True, capture_output=True)
    return out


def _start_and_signal(out, sig, wait_for_checkpoint=True):
    proc = subprocess.Popen(
        _cli(*KILL_ARGS, "--out", str(out)),
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as in a terminal, also where pytest runs as a shell's background job (which
        # starts with it ignored, and so would the training)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while wait_for_checkpoint and not (out / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_a_training_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    killed = tmp_path / "killed"
    code, _ = _start_and_signal(killed, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (killed / MODEL).exists(), "the run finished before it could be killed"
    resumed = subprocess.run(_cli(*KILL_ARGS, "--out", str(killed)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    _assert_same_run(uninterrupted, killed)


@pytest.mark.parametrize(
    "sig, code_expected, name",
    [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT (Ctrl-C)")],
)
def test_sigterm_or_ctrl_c_writes_a_checkpoint_and_the_rerun_resumes(
    tmp_path, uninterrupted, sig, code_expected, name
):
    """SIGTERM (Slurm's preemption or time limit), and Ctrl-C as well: before, Ctrl-C lost the
    epochs since the last periodic checkpoint."""
    stopped = tmp_path / "stopped"
    code, err = _start_and_signal(stopped, sig)
    assert code == code_expected, err
    assert f"stopped by {name}" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert (stopped / CHECKPOINT).exists() and not (stopped / MODEL).exists()
    epoch = torch.load(stopped / CHECKPOINT, weights_only=True)["epoch"]
    assert epoch >= 10  # at least the first periodic checkpoint, and more when the signal came later
    resumed = subprocess.run(_cli(*KILL_ARGS, "--out", str(stopped)), capture_output=True, text=True)
    assert resumed.returncode == 0 and f"resuming {stopped} from epoch {epoch}" in resumed.stderr
    _assert_same_run(uninterrupted, stopped)


def test_a_non_finite_loss_ends_training_as_diverged(tmp_path):
    config = RunConfig(family="gaussian_fixed", params={"sigma": 0.01}, lr=1e20, **dict(SMALL, epochs=5))
    facts = train(config, tmp_path / "run", progress=False)
    assert facts["status"] == "diverged" and facts["diverged_epoch"] == 1
    saved = torch.load(tmp_path / "run" / MODEL, weights_only=True)
    assert saved["status"] == "diverged"
    assert all(torch.isfinite(v).all() for v in saved["model"].values())  # the last finite weights
    result = evaluate(tmp_path / "run", tmp_path / "metrics.json", k=10, device="cpu")
    assert result["status"] == "diverged" and result["diverged_epoch"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    "family,arena,params",
    [
        ("bernoulli", "binary", {}),
        ("bernoulli", "continuous", {}),
        ("continuous_bernoulli", "continuous", {}),
        ("gaussian_fixed", "continuous", {"sigma": 0.1}),
        ("gaussian_shared", "continuous", {"init": 0.5, "floor": 0.01}),
        ("gaussian_pixel", "continuous", {"floor": 0.01}),
        ("gaussian_heteroscedastic", "continuous", {"floor": 0.01}),
        ("gaussian_optimal", "continuous", {}),
        ("mse", "continuous", {"reduction": "sum"}),
        ("mse", "continuous", {"reduction": "mean"}),
        ("laplace", "continuous", {}),
        ("laplace", "continuous", {"scale": 0.1}),
        ("student_t", "continuous", {"df": 3.0}),
        ("beta", "continuous", {}),
        ("discretised_logistic", "discrete", {}),
        ("discretised_gaussian", "discrete", {}),
        ("discretised_logistic_mixture", "discrete", {"mixtures": 3}),
    ],
)
def test_every_family_trains_and_evaluates(tmp_path, family, arena, params):
    config = RunConfig(family=family, arena=arena, params=params, **SMALL)
    facts = train(config, tmp_path / "run", progress=False)
    assert facts["status"] == "ok" and facts["epochs"] == 3
    history = pd.read_csv(tmp_path / "run" / HISTORY)
    assert list(history.epoch) == [1, 2, 3] and history.loss.notna().all()
    result = evaluate(tmp_path / "run", tmp_path / "m.json", k=50, device="cpu", elbo_samples=5)
    m = result["metrics"]
    assert m["rate"] >= 0 and m["mse"] >= 0 and 0 <= m["active_units"] <= 4
    assert m["elbo"] == pytest.approx(-(m["rate"] + m["distortion"]))
    assert m["ll_iwae"] >= m["elbo"] - 1.0  # IWAE >= ELBO up to Monte Carlo noise
    assert result["normalised"] == (family != "bernoulli" or arena == "binary")
    if arena == "continuous":
        assert m["calibrated_ll_iwae"] >= m["calibrated_elbo"] - 1.0
        assert math.isfinite(m["calibrated_bpd"]) and m["calibrated_sigma"] > 0
    else:
        assert "calibrated_elbo" not in m
    if family in ("gaussian_fixed", "gaussian_optimal", "mse"):
        assert m["sigma"] > 0
    if arena == "discrete":  # a mass on the levels: log-likelihood <= 0, exact bits per dimension
        assert m["ll_iwae"] <= 0 and m["bpd"] == pytest.approx(-m["ll_iwae"] / (64 * math.log(2)))
    assert family in REGISTRY


def test_gaussian_optimal_fixes_its_sigma_from_the_training_data(tmp_path):
    from vaestudy.runtime import generator
    from vaestudy.train import build_model, load_data

    config = RunConfig(family="gaussian_optimal", **SMALL)
    train(config, tmp_path / "run", progress=False)
    data = load_data(config, torch.device("cpu"))
    model = build_model(config, data)
    model.load_state_dict(run_weights(tmp_path / "run"))
    model.eval()
    residual = model.mean_squared_residual(data.train_fixed(), generator(torch.device("cpu"), 1, "final-fit"))
    assert model.likelihood.sigma() == pytest.approx(math.sqrt(residual), rel=1e-5)


@pytest.mark.parametrize(
    "shape,family", [((1, 28, 28), "gaussian_heteroscedastic"), ((3, 32, 32), "gaussian_fixed")]
)
def test_the_conv_model_maps_28_and_32_pixel_images_to_their_decoder_outputs(shape, family):
    from vaestudy.likelihoods import build_likelihood
    from vaestudy.model import VAE, ModelConfig

    d = shape[0] * shape[1] * shape[2]
    lik = build_likelihood(family, d)
    model = VAE(ModelConfig(shape=shape, latent=5, hidden=[64], activation="relu", architecture="conv"), lik)
    x = torch.rand(4, d)
    mu, log_var = model.encode(x)
    assert mu.shape == log_var.shape == (4, 5)
    assert model.decode(torch.randn(7, 4, 5)).shape == (7, 4, lik.outputs_per_pixel * d)
    terms = model(x, torch.Generator().manual_seed(0))
    assert all(t.shape == (4,) and torch.isfinite(t).all() for t in terms.values())


def test_the_conv_model_trains_on_mnist_files(tmp_path):
    from conftest import write_mnist

    write_mnist(tmp_path / "data", n_train=80, n_test=20)
    config = RunConfig(
        dataset="mnist",
        data_root=str(tmp_path / "data"),
        architecture="conv",
        hidden=[32],
        latent=4,
        epochs=2,
        batch_size=16,
        device="cpu",
        family="gaussian_optimal",
    )
    assert train(config, tmp_path / "run", progress=False)["status"] == "ok"
    result = evaluate(tmp_path / "run", tmp_path / "m.json", k=10, device="cpu", elbo_samples=2)
    assert result["num_pixels"] == 784 and result["levels"] == 256 and result["test_images"] == 20
    assert math.isfinite(result["metrics"]["calibrated_bpd"])


def test_fused_adam_equals_torch_optim_fused_adam_bit_for_bit():
    """FusedAdam (no torch.optim, so no torch._dynamo import) against torch.optim.Adam(fused=True),
    with a parameter that gets no gradient in the first four steps (so that its step count lags
    behind the others': the steps counted one by one, then all at once), and its state through a
    save and load."""
    from torch import nn

    from vaestudy.fast import FusedAdam, set_lr

    def net():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        m.unused = nn.Parameter(torch.ones(2))
        return m

    ours, ref = net(), net()
    opt = FusedAdam(ours.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True)

    def loss(m, x, step):
        return m(x).pow(2).sum() + (m.unused.pow(2).sum() if step >= 4 else 0.0)

    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(4, 5, generator=g)
        for m, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad(set_to_none=True)
            loss(m, x, step).backward()
            o.step()
        if step == 2:  # a resumed optimizer continues identically
            saved = opt.state_dict()
            opt = FusedAdam(ours.parameters(), lr=1e-2)
            opt.load_state_dict(saved)
        if step == 3:  # and follows a new learning rate, as torch's does
            set_lr(opt, 3e-3)
            set_lr(ref_opt, 3e-3)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    # two steps with a gradient: counted twice, as torch.optim does (unlike the others' six)
    assert [float(s) for s in opt.steps] == [2.0] + [6.0] * 4  # its own parameter first
    assert float(ref_opt.state[ref.unused]["step"]) == 2.0
    # and it is Adam: torch's default (for-loop) Adam agrees to float32 rounding
    loop, loop_opt = net(), None
    loop_opt = torch.optim.Adam(loop.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(4, 5, generator=g)
        loop_opt.zero_grad()
        loss(loop, x, step).backward()
        loop_opt.step()
        if step == 3:
            set_lr(loop_opt, 3e-3)
    for a, b in zip(ours.parameters(), loop.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "activation,dtype",
    [("tanh", torch.float32), ("relu", torch.float32), ("softplus", torch.float32), ("relu", torch.float64)],
)
def test_the_mlp_computes_what_sequential_does(activation, dtype, fast_setting):
    """The MLP on the CPU, plain or with its float32 products (a tanh or relu fused) through oneDNN:
    the function and gradients of nn.Sequential's layer-by-layer forward, for any leading dimensions."""
    from torch import nn

    from vaestudy.model import _mlp

    torch.manual_seed(0)
    mlp = _mlp([6, 9, 7, 4], activation).to(dtype)
    assert list(mlp.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    for shape in [(5, 6), (3, 5, 6), (6,)]:
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        outputs, grads = [], []
        for forward in (mlp.forward, lambda x: nn.Sequential.forward(mlp, x)):
            out = forward(x)
            grads.append(torch.autograd.grad(out.pow(2).sum(), [x, *mlp.parameters()]))
            outputs.append(out)
        assert outputs[0].shape == (*shape[:-1], 4)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(outputs[0], outputs[1], **tol)
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, **tol)


def test_an_mlp_multiplies_through_onednn_by_processor_and_size(monkeypatch):
    """auto: an MLP call of ONEDNN_MIN_MACS multiply-adds or more (rows x its layers' inputs x
    outputs) through oneDNN on an AMD processor, fewer through torch, and never on others;
    VAESTUDY_FAST=onednn at every size on any processor, off never; another value is one user error."""
    from vaestudy import fast, model

    if not fast.has("onednn_linear"):
        pytest.skip("this torch has no usable oneDNN linear layer")
    mlp = model._mlp([6, 9, 7, 4], "tanh")
    assert fast._macs(mlp) == 6 * 9 + 9 * 7 + 7 * 4
    monkeypatch.setattr(fast, "ONEDNN_MIN_MACS", 5 * fast._macs(mlp))
    for setting, vendor, rows_kind in [
        (
            "auto",
            "AuthenticAMD",
            {4: "AddmmBackward0", 5: "OneDNNLinearBackward", 50: "OneDNNLinearBackward"},
        ),
        ("", "AuthenticAMD", {4: "AddmmBackward0", 5: "OneDNNLinearBackward"}),
        ("auto", "GenuineIntel", {5: "AddmmBackward0", 50: "AddmmBackward0"}),
        ("onednn", "GenuineIntel", {1: "OneDNNLinearBackward", 4: "OneDNNLinearBackward"}),
        ("off", "AuthenticAMD", {5: "AddmmBackward0", 50: "AddmmBackward0"}),
    ]:
        monkeypatch.setenv(fast.FAST_ENV, setting)
        monkeypatch.setattr(fast, "cpu_info", lambda key, vendor=vendor: vendor)
        for rows, kind in rows_kind.items():
            out = mlp(torch.randn(rows, 6, requires_grad=True))
            assert out.grad_fn.name() == kind, (setting, vendor, rows)
    monkeypatch.setenv(fast.FAST_ENV, "blas")
    with pytest.raises(UserError, match="VAESTUDY_FAST='blas': must be one of auto, off, onednn"):
        mlp(torch.randn(2, 6))


def test_the_oneDNN_linear_layer_against_float64(fast_setting):
    """The MLP's float32 values and gradients (input and parameters) within float32's rounding of
    the same MLP in float64, plain or through oneDNN."""
    from torch import nn

    from vaestudy.model import _mlp

    torch.manual_seed(0)
    mlp = _mlp([784, 500, 500, 40], "tanh")
    exact = _mlp([784, 500, 500, 40], "tanh").double()
    exact.load_state_dict({k: v.double() for k, v in mlp.state_dict().items()})
    x = torch.rand(128, 784, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    out, ref = mlp(x), nn.Sequential.forward(exact, x64)
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *mlp.parameters()])
    refs = torch.autograd.grad(ref.pow(2).sum(), [x64, *exact.parameters()])
    assert float((out - ref).detach().abs().max() / ref.detach().abs().max()) < 1e-5
    for a, b in zip(grads, refs, strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5


def test_a_private_operation_that_fails_falls_back_with_one_line(monkeypatch, capsys):
    """A private torch operation that is missing is found out once, said in one line, and the public
    path runs: torch.optim.Adam for the fused step, nn.Sequential for the MLP."""
    from torch import nn

    from vaestudy import fast, model

    monkeypatch.setattr(fast, "has", functools.cache(fast.has.__wrapped__))  # forget earlier answers
    monkeypatch.delattr(torch, "_fused_adam_")
    monkeypatch.setenv(fast.FAST_ENV, "onednn")
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", None, raising=False)
    net = model._mlp([6, 9, 4], "tanh")
    assert isinstance(fast.make_optimizer(net, 1e-3), torch.optim.Adam)
    assert isinstance(fast.make_optimizer(net, 1e-3), torch.optim.Adam)
    x = torch.randn(3, 6)
    torch.testing.assert_close(net(x), nn.Sequential.forward(net, x))
    net(x)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("vaestudy: torch's ") for line in err), err
    assert "fused_adam is not usable here" in err[0] and "onednn_linear is not usable here" in err[1]


def test_resume_is_bit_identical_plain_and_through_onednn(tmp_path, fast_setting):
    """A run resumed from its checkpoint ends with the weights and history of the uninterrupted
    run, plain and with every product through oneDNN; train.json says which path ran."""
    for family, arena in (("bernoulli", "binary"), ("gaussian_fixed", "continuous")):
        whole, parts = tmp_path / f"{family}-whole", tmp_path / f"{family}-parts"
        _assert_resumed_run_is_the_whole_one(whole, parts, family=family, arena=arena)
        paths = json.loads((whole / "train.json").read_text())["paths"]
        assert paths["VAESTUDY_FAST"] == fast_setting
        assert paths["mlp_products"] == {"off": "torch", "onednn": "oneDNN"}[fast_setting]
        assert paths["optimizer"] == {"off": "torch.optim.Adam", "onednn": "vaestudy FusedAdam"}[fast_setting]


def test_resume_is_bit_identical_where_batches_of_two_sizes_take_both_paths(tmp_path, monkeypatch):
    """With auto on an AMD processor and the size rule between an epoch's full batches and its
    last, shorter one, each epoch multiplies through oneDNN and through torch; a resumed run still
    ends with the weights and history of the uninterrupted one."""
    from vaestudy import fast, model

    if not fast.has("onednn_linear"):
        pytest.skip("this torch has no usable oneDNN linear layer")
    monkeypatch.setenv(fast.FAST_ENV, "auto")
    monkeypatch.setattr(fast, "cpu_info", lambda key: "AuthenticAMD")
    # per row, of SMALL's encoder on the 8x8 digits
    encoder_macs = fast._macs(model._mlp([64, *SMALL["hidden"], 2 * SMALL["latent"]], "tanh"))
    monkeypatch.setattr(fast, "ONEDNN_MIN_MACS", 50 * encoder_macs)  # batches of 64: oneDNN
    _assert_resumed_run_is_the_whole_one(
        tmp_path / "whole", tmp_path / "parts", family="gaussian_fixed", arena="continuous"
    )
    paths = json.loads((tmp_path / "whole" / "train.json").read_text())["paths"]
    assert paths["mlp_products"] == "oneDNN and torch" and paths["cpu_vendor"] == "AuthenticAMD"


def test_training_does_not_import_torch_dynamo():
    """The start-up the pipeline pays per model: no torch._dynamo (a second) in a training process."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from vaestudy.config import RunConfig\n"
        "from vaestudy.train import train\n"
        "import tempfile\n"
        "cfg = RunConfig(epochs=1, device='cpu', batch_size=32, max_train=64, max_test=32)\n"
        "train(cfg, tempfile.mkdtemp() + '/run', progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize(
    "family,arena", [(f, REGISTRY[f].arenas[0]) for f in sorted(REGISTRY)] + [("bernoulli", "continuous")]
)
def test_the_compiled_training_step_matches_eager(tmp_path, family, arena):
    """torch.compile (as on CUDA, where it is the default) against the eager step, on the CPU: the
    same draws, so the same run up to float32 rounding in another order of operations (seen:
    at most 3e-7 apart). Stated tolerance: weights and every history value within 1e-5
    (relative) / 1e-6 (absolute) after 3 epochs of 5 steps, four full batches and a smaller last
    one each (two compiled shapes), for every family; 1e-4 / 1e-5 for the discretised ones, whose
    log-masses add several logs and, in the mixture, a logsumexp that the compiler orders otherwise
    (seen: 4e-5 relative in one weight of 30,720), and for the continuous Bernoulli, whose
    normaliser divides by 1 - 2 lambda (seen: 1.4e-6 absolute in one weight of 2,048)."""
    base = dict(SMALL, batch_size=60, arena=arena, family=family)  # 270 training images: 4 x 60 + 30
    eager = train(RunConfig(compile="never", **base), tmp_path / "eager", progress=False)
    compiled = train(RunConfig(compile="always", **base), tmp_path / "compiled", progress=False)
    assert eager["training_step"] == "eager" and compiled["training_step"] == "compiled"
    loose = family.startswith("discretised") or family == "continuous_bernoulli"
    assert_runs_close(
        tmp_path / "compiled", tmp_path / "eager", rtol=1e-4 if loose else 1e-5, atol=1e-5 if loose else 1e-6
    )


def test_a_training_step_that_fails_to_compile_trains_eagerly(tmp_path, monkeypatch, capsys):
    """The automatic fallback: a compiled step that raises (here: a stand-in for torch.compile)
    is replaced by the eager step from the same batch on, so the run equals an eager one."""

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("backend compiler failed: no C++ compiler\nlong traceback")

        return compiled

    train(RunConfig(family="bernoulli", compile="never", **SMALL), tmp_path / "eager", progress=False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    facts = train(
        RunConfig(family="bernoulli", compile="always", **SMALL), tmp_path / "fallback", progress=False
    )
    err = capsys.readouterr().err
    assert facts["training_step"] == "eager"
    assert err.count("the compiled training step failed (backend compiler failed: no C++ compiler)") == 1
    _assert_same_run(tmp_path / "eager", tmp_path / "fallback")


def test_a_broken_capture_is_reported_by_the_error_that_broke_it():
    """Closing a capture that an operation broke raises 'operation failed due to a previous error
    during capture' (seen on an H100); the message names the operation's own error instead."""
    from vaestudy.errors import first_line
    from vaestudy.step import failure_cause

    def capture(inner: Exception | None):
        try:
            try:
                if inner is not None:
                    raise inner
            finally:  # as torch.cuda.graph's __exit__ closes the capture
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        except RuntimeError as exc:
            return exc

    broken = capture(RuntimeError("CUDA error: operation not permitted when stream is capturing\nhint"))
    assert first_line(failure_cause(broken)) == "CUDA error: operation not permitted when stream is capturing"
    alone = capture(None)  # nothing to point to: the capture's own error
    assert failure_cause(alone) is alone
    other = RuntimeError("backend compiler failed")
    other.__context__ = KeyError("unrelated")
    assert failure_cause(other) is other


def test_compile_setting_is_checked():
    from vaestudy.errors import UserError

    with pytest.raises(UserError, match="compile must be one of auto, graph, always, never, got 'yes'"):
        RunConfig(compile="yes").validate()


def test_tensorboard_logs_the_scalars_and_image_grids_and_changes_no_result(tmp_path):
    """TensorBoard's own reader finds every epoch's scalars and the grids every N epochs and at the
    end; the logged run ends with the weights and history of an unlogged one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = dict(SMALL, family="gaussian_shared", epochs=5)
    train(RunConfig(**base), tmp_path / "plain", progress=False)
    train(
        RunConfig(**base, tensorboard=True, tensorboard_images_every=2), tmp_path / "logged", progress=False
    )
    _assert_same_run(tmp_path / "plain", tmp_path / "logged")
    events = EventAccumulator(str(tmp_path / "logged" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    history = run_history(tmp_path / "logged")
    for tag, column in (
        ("train/loss", "loss"),
        ("train/rate", "rate"),
        ("train/sigma", "sigma"),
        ("validation/elbo", "val_elbo"),
    ):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5]
        assert [s.value for s in scalars] == pytest.approx(history[column].tolist(), rel=1e-6)
    for tag in ("images/validation", "images/reconstructions", "images/decoder_means", "images/draws"):
        assert tag in tags["images"] and [i.step for i in events.Images(tag)] == [2, 4, 5]
    assert not (tmp_path / "plain" / "tensorboard").exists()
