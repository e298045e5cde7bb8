"""Reliability: random kills resume to bit-identical results, interrupted writes leave no truncated
file, bad data and a full disk are one-line errors, checkpoints never run code."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from vaestudy.cli import main
from vaestudy.data import Levels, check_levels
from vaestudy.errors import UserError
from vaestudy.files import atomic_write_bytes
from vaestudy.likelihoods import REGISTRY, Likelihood
from vaestudy.runtime import put_command_on_path
from vaestudy.study import expand_study
from vaestudy.train import CHECKPOINT, MODEL

ARGS = (
    "--family gaussian_shared --epochs 300 --checkpoint-every 7 --hidden 32 --latent 4 --device cpu "
    "--max-train 400 --threads 1"
).split()
TIMING = {
    "seconds",
    "seconds_this_process",
    "train_seconds",
    "eval_seconds",
    "peak_memory_mb",
    "peak_memory_mb_train",
}


def _cli(*args):
    return [sys.executable, "-m", "vaestudy.cli", *args]


def _evaluate(run, out):
    subprocess.run(
        _cli(
            "evaluate", "--run", str(run), "--out", str(out), "--k", "50", "--device", "cpu", "--threads", "1"
        ),
        check=True,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    return {k: v for k, v in result.items() if k not in TIMING}


def _state(run):
    saved = torch.load(run / MODEL, weights_only=True)
    history = (run / "history.csv").read_text().splitlines()
    drop_seconds = [",".join(line.split(",")[:-1]) for line in history]  # the last column is seconds
    return saved["model"], drop_seconds


def _kill_during_epoch(run, epoch: int, delay: float) -> None:
    """Start training into `run` and SIGKILL it `delay` seconds after it reports `epoch` done
    (its progress lines on stderr): a moment set by the run's own progress, not by the clock."""
    proc = subprocess.Popen(
        _cli("train", *ARGS, "--out", str(run)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        for line in proc.stderr:
            if f" epoch {epoch}/" in line:
                time.sleep(delay)
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def test_random_sigkills_resume_to_bit_identical_weights_history_and_metrics(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(_cli("train", *ARGS, "--out", str(whole)), check=True, capture_output=True)
    weights, history = _state(whole)
    metrics = _evaluate(whole, tmp_path / "whole.json")
    rng = random.Random(2026)
    killed_at = []
    for trial in range(5):
        run = tmp_path / f"trial{trial}"
        # after the first checkpoint (epoch 7), at a random point of a random later epoch
        _kill_during_epoch(run, rng.randint(8, 280), rng.uniform(0, 0.02))
        assert not (run / MODEL).exists(), f"trial {trial}: the run ended before the kill"
        killed_at.append(torch.load(run / CHECKPOINT, weights_only=True)["epoch"])
        subprocess.run(_cli("train", *ARGS, "--out", str(run)), check=True, capture_output=True)
        w, h = _state(run)
        assert w.keys() == weights.keys() and all(torch.equal(w[k], weights[k]) for k in w), f"trial {trial}"
        assert h == history, f"trial {trial}"
        assert _evaluate(run, tmp_path / f"trial{trial}.json") == metrics, f"trial {trial}"
    assert len(set(killed_at)) >= 2, killed_at  # the kills came at different epochs


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_write_leaves_no_truncated_file(tmp_path, monkeypatch, existing):
    target = tmp_path / "model.pt"
    if existing:
        target.write_bytes(b"the old, complete file")

    def interrupted(fd):
        raise KeyboardInterrupt  # as if the process were stopped between write and rename

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"x" * 1_000_000)
    assert [p.name for p in tmp_path.iterdir()] == (["model.pt"] if existing else [])
    if existing:
        assert target.read_bytes() == b"the old, complete file"


def test_the_command_beside_the_interpreter_is_put_on_path(tmp_path, monkeypatch):
    """The workflow's jobs call vaestudy; snakemake started as .venv/bin/snakemake, not activated."""
    venv, other = tmp_path / "venv" / "bin", tmp_path / "other"
    venv.mkdir(parents=True)
    other.mkdir()
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(other))
    with pytest.raises(UserError, match="the vaestudy command is neither on PATH nor beside this Python"):
        put_command_on_path()  # nowhere
    assert os.environ["PATH"] == str(other)
    (venv / "vaestudy").write_text("#!/bin/sh\n")
    (venv / "vaestudy").chmod(0o755)
    put_command_on_path()  # beside the interpreter only: its folder goes first on PATH
    assert os.environ["PATH"] == f"{venv}{os.pathsep}{other}"
    (other / "vaestudy").write_text("#!/bin/sh\n")
    (other / "vaestudy").chmod(0o755)
    monkeypatch.setenv("PATH", str(other))
    put_command_on_path()  # on PATH already: PATH as it was
    assert os.environ["PATH"] == str(other)


def test_a_write_onto_a_folder_names_the_folder_and_leaves_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        atomic_write_bytes(tmp_path / "out", b"x")
    assert raised.value.filename == str(tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())


def test_a_full_disk_is_one_line_and_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--epochs",
                "2",
                "--hidden",
                "16",
                "--latent",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("vaestudy: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and err.strip().endswith(errors[0])
    assert "Traceback" not in err
    assert not out.exists()


def test_an_output_folder_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a folder" in err


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.tensor([[0.0, float("nan")]]), "NaN or infinite pixels"),
        (torch.tensor([[0.0, 0.5]]), "non-integer grey levels"),
        (torch.tensor([[0, 17]]), "grey levels 0..17, outside 0..16"),
    ],
)
def test_bad_pixels_are_user_errors(bad, message):
    data = Levels(
        train=bad.view(1, 1, 1, 2), test=None, levels=17, train_labels=torch.zeros(1).long(), test_labels=None
    )
    with pytest.raises(UserError, match=message):
        check_levels(data, "custom")


def test_a_run_name_cannot_leave_the_results_folder():
    class Named(Likelihood):
        name = "named_test_family"

        def __init__(self, num_pixels: int, tag: str = "a"):
            super().__init__(num_pixels)

    try:
        with pytest.raises(UserError, match="has characters outside"):
            expand_study(
                {
                    "seeds": [1],
                    "arenas": {"continuous": [{"family": "named_test_family", "tag": "../../etc"}]},
                }
            )
    finally:
        del REGISTRY["named_test_family"]


def test_a_checkpoint_with_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "model": Evil()}, run / "model.pt")
    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "m.json")]) == 2
    assert "cannot read model file" in capsys.readouterr().err
    assert not marker.exists()
