"""The benchmark runs end to end on tiny sizes and its FLOP counts match a hand count."""

import math
import os
from pathlib import Path

import pytest
import torch
from conftest import has_cxx_compiler

from vaestudy.bench import mlp_flops, run_bench, synthetic_levels


def test_flop_count_of_the_benchmark_mlp():
    # encoder 784*500 + 500*500 + 500*40, decoder 20*500 + 500*500 + 500*784, two FLOPs per multiply-add
    forward = 2 * (784 * 500 + 500 * 500 + 500 * 40 + 20 * 500 + 500 * 500 + 500 * 784)
    counts = mlp_flops(1)
    assert counts["forward"] == forward
    assert counts["step"] == 3 * forward - 2 * 784 * 500  # no input gradient for the first layer
    assert counts["decoder_per_sample"] == 2 * (20 * 500 + 500 * 500 + 500 * 784)


def test_synthetic_data_has_mnist_shape_and_levels():
    levels = synthetic_levels(60)
    assert (
        levels.train.shape == (60, 1, 28, 28) and levels.train.dtype == torch.uint8 and levels.levels == 256
    )
    assert 0 < float(levels.train.float().mean()) < 255


@pytest.mark.parametrize("compile", ["auto", "always"])
def test_the_benchmark_table_is_complete_and_consistent(tmp_path, compile):
    if compile == "always" and not has_cxx_compiler():
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    rows = run_bench(
        torch.device("cpu"),
        train_images=256,
        repeats=1,
        iwae_images=2,
        k=20,
        max_elements=2**16,
        out_csv=tmp_path / "bench.csv",
        compile=compile,
        memory_images=2,
    )
    measures = [r["measure"] for r in rows]
    expected = [
        "trainer (eager) images/s vs textbook loop",  # auto: eager on the CPU
        "large matmul FLOP/s, oneDNN vs MKL",
        "training step FLOP/s vs large matmul",
        "training step s, slowest vs fastest of 1 rounds",
        "training epoch (with batches) FLOP/s vs large matmul",
        "IWAE FLOP/s vs large matmul",
        "IWAE s/image at K=20",
        "IWAE s/image, slowest vs fastest of 1 runs",
        "IWAE images/s at K=20 vs 1,000",
        "IWAE peak MB, 8 vs 2 images",
        "IWAE peak MB, max_elements x4 (2 images)",
    ]
    if compile == "always":
        expected[0] = "trainer (compiled) images/s vs textbook loop"
        expected.insert(1, "trainer images/s, compiled vs eager")
    assert measures == expected
    for r in rows:
        assert r["value"] > 0
        if not math.isnan(r["reference"]):
            assert r["reference"] > 0 and math.isclose(r["ratio"], r["value"] / r["reference"], rel_tol=1e-9)
    assert (tmp_path / "bench.csv").read_text().count("\n") == len(expected) + 1
    spreads = [r for r in rows if "slowest vs fastest" in r["measure"]]
    assert len(spreads) == 2 and all(r["ratio"] == 1.0 for r in spreads)  # one round: no spread


def _write_study(results, jobs):
    """Snakemake benchmark files and logs as a finished study leaves them."""
    from vaestudy.runtime import STARTUP_LINE

    for i, (seconds, startup) in enumerate(jobs):
        bench = results / "benchmarks" / "model" / f"run{i}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text(
            "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
            f"{seconds}\t0:00:10\t100\t200\t90\t95\t0\t1\t50\t9\n"
        )
        log = results / "logs" / "model" / f"run{i}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"{STARTUP_LINE}{startup:.3f} s\nepoch 1/2 loss 3.0\n")


def test_pipeline_startup_share_sums_logs_and_benchmark_files(tmp_path):
    from vaestudy.bench import pipeline_startup

    _write_study(tmp_path, [(10.0, 1.5), (4.0, 2.0), (6.0, 0.5)])
    share = pipeline_startup(tmp_path)
    assert share["jobs"] == share["jobs_with_startup_line"] == 3
    assert math.isclose(share["job_seconds"], 20.0) and math.isclose(share["startup_seconds"], 4.0)
    assert math.isclose(share["startup_share"], 0.2)


def _write_histories(results, epoch_seconds):
    """A history.csv per model, with the given seconds of each epoch."""
    for i, seconds in enumerate(epoch_seconds):
        path = results / "runs" / "continuous" / f"model{i}" / "seed1" / "history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{e + 1},1.0,0.5,0.5,,-1.0,{s}" for e, s in enumerate(seconds)]
        path.write_text("epoch,loss,rate,distortion,sigma,val_elbo,seconds\n" + "\n".join(rows) + "\n")


def test_study_projection_extends_each_model_by_its_median_epoch_after_the_first(tmp_path):
    from vaestudy.bench import pipeline_rows, pipeline_startup, study_projection

    _write_study(tmp_path, [(10.0, 1.0), (20.0, 1.0)])
    _write_histories(tmp_path, [[5.0, 1.0, 1.2], [4.0, 2.0, 2.2]])
    p = study_projection(
        tmp_path, pipeline_startup(tmp_path)["job_seconds"], wall_seconds=40.0, full_epochs=10
    )
    # 7 more epochs each: 7 * 1.1 + 7 * 2.1 = 22.4 job seconds more than the 30 measured
    assert p["models"] == 2 and p["epochs"] == 3
    assert math.isclose(p["projected_job_seconds"], 52.4)
    assert math.isclose(p["projected_wall_seconds"], 40.0 * 52.4 / 30.0)
    rows = pipeline_rows(tmp_path, 40.0, 10)
    assert len(rows) == 2 and "projected from 3 to 10 epochs" in rows[1]["measure"]
    assert math.isclose(rows[1]["ratio"], 1800.0 / (40.0 * 52.4 / 30.0))
    assert len(pipeline_rows(tmp_path)) == 1
    # a diverged model stopped early: it neither trains more nor counts as a shorter run
    _write_histories(tmp_path, [[5.0, 1.0, 1.2], [4.0, 2.0, 2.2], [3.0, 9.0]])
    (tmp_path / "runs" / "continuous" / "model2" / "seed1" / "train.json").write_text(
        '{"status": "diverged"}'
    )
    p = study_projection(
        tmp_path, pipeline_startup(tmp_path)["job_seconds"], wall_seconds=40.0, full_epochs=10
    )
    assert p["models"] == 3 and p["epochs"] == 3 and math.isclose(p["projected_job_seconds"], 52.4)


def test_study_projection_refuses_models_of_different_epochs(tmp_path, capsys):
    from vaestudy.cli import main

    _write_study(tmp_path, [(10.0, 1.0), (20.0, 1.0)])
    _write_histories(tmp_path, [[5.0, 1.0, 1.2], [4.0, 2.0]])
    assert main(["bench", "--pipeline", str(tmp_path), "--wall", "40", "--full-epochs", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different epochs: [2, 3]" in err
    assert main(["bench", "--pipeline", str(tmp_path), "--wall", "40"]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["bench", "--wall", "40", "--full-epochs", "10"]) == 2
    assert "--pipeline" in capsys.readouterr().err


def test_pipeline_startup_of_an_unrun_study_is_one_line(tmp_path, capsys):
    from vaestudy.cli import main

    assert main(["bench", "--pipeline", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no benchmark files" in err


def test_startup_seconds_is_within_the_process_wall_time_seen_from_outside():
    """The child's own measure of its start-up (from /proc) lies between 0 and the wall time the
    parent measured around the whole child process."""
    import subprocess
    import sys
    import time

    code = "import torch, vaestudy.train\nfrom vaestudy.runtime import log_startup\nlog_startup()\n"
    env = {**os.environ, "VAESTUDY_LOG_STARTUP": "1"}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    wall = time.monotonic() - t0
    from vaestudy.runtime import STARTUP_LINE

    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(STARTUP_LINE)
    seconds = float(line[len(STARTUP_LINE) :].split()[0])
    assert 0.05 < seconds <= wall + 0.011  # a clock tick of slack; importing torch takes > 50 ms
    # without the variable: silent
    quiet = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "VAESTUDY_LOG_STARTUP"},
    )
    assert quiet.stderr == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the whole GPU check")
def test_gpu_checks_script_without_cuda_says_so_in_one_line_and_writes_nothing(tmp_path):
    import subprocess

    script = Path(__file__).parents[1] / "scripts" / "gpu_checks.sh"
    run = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "no CUDA device" in run.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_session_script_refuses_without_steps_out_or_wheels_in_one_line(tmp_path):
    """scripts/gpu_session.sh, in a copy of the repository without .whl/: each missing piece is one
    line and exit 2, before any install."""
    import shutil
    import subprocess

    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "gpu_session.sh"
    shutil.copy(Path(__file__).parents[1] / "scripts" / "gpu_session.sh", script)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    cases = [
        ([], env, "usage"),
        (["tests bench"], env, "$OUT is not a folder"),
        (["tests bench"], {**env, "OUT": str(out)}, "no wheels in .whl"),
    ]
    for args, run_env, says in cases:
        run = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=run_env)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.count("\n") == 1 and says in run.stderr, (args, run.stderr)
    assert list(out.iterdir()) == []


def test_gpu_wheels_script_needs_snakemake_in_its_python_to_pin_the_versions(tmp_path):
    """scripts/gpu_wheels.sh pins snakemake and its Slurm plugin to the versions of the Python it
    runs with: one without them (site-packages off) is one line and exit 2, and nothing fetched."""
    import shlex
    import subprocess
    import sys

    bare = tmp_path / "python"
    bare.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S "$@"\n')
    bare.chmod(0o755)
    script = Path(__file__).parents[1] / "scripts" / "gpu_wheels.sh"
    run = subprocess.run(
        ["bash", str(script), str(tmp_path / "wheels")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(bare)},
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "snakemake is not installed" in run.stderr
    assert not (tmp_path / "wheels").exists()
