"""The Snakemake workflow: lint, dry runs, bad configs, the default study end to end, and Slurm.

The end-to-end and Slurm tests are marked `pipeline` (run alone with `pytest -m pipeline`).
Each run works in its own folder (`--directory`), so it never touches the repository's results/.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TIMING = {"train_seconds", "eval_seconds", "peak_memory_mb_train"}


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 1800, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the repository's workflow in workdir (which holds config.yaml and the results)."""
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_workdir(tmp: Path, **overrides) -> Path:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict) and key != "arenas":
            config[key].update(value)
        else:
            config[key] = value
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    counts, table = {}, False
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if line.startswith("job ") and "count" in line:
            table = True
        elif table and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
        elif table and counts and not parts:
            break
    return counts


def test_lint_is_clean_but_for_the_conda_suggestion():
    """The workflow runs in the project's own environment (README), so the one lint left is the
    suggestion of a conda environment per rule."""
    proc = subprocess.run([SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    lints = [line.strip() for line in out.splitlines() if line.strip().startswith("* ")]
    assert lints, out  # snakemake did lint
    assert set(lints) == {"* Specify a conda environment or container for each rule.:"}, out


def test_the_jobs_find_vaestudy_without_the_environment_activated(tmp_path):
    """`.venv/bin/snakemake --cores 2` without `. .venv/bin/activate`: the jobs call the vaestudy
    command beside snakemake's Python (before, every job failed with exit status 127)."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    assert shutil.which("vaestudy", path=env["PATH"]) is None  # the case this test is about
    workdir = make_workdir(tmp_path)
    snakemake(workdir, "--cores", "1", "results/data/digits.json", env=env)
    assert (workdir / "results" / "data" / "digits.json").is_file()


def test_dry_run_of_the_default_study_lists_every_job(tmp_path):
    proc = snakemake(make_workdir(tmp_path), "-n")
    counts = planned_jobs(proc)
    # 17 continuous configurations, 1 binary, 2 discrete and 4 linear: one job each, for its 3 seeds
    configs = 24
    assert counts == {
        "prepare_data": 1,
        "feature_net": 4,  # one per arena
        "anchors": 4,
        "model": configs,
        "collect": 1,
        "figures": 1,
        "report_text": 1,
        "all": 1,
        "total": configs + 13,
    }


@pytest.mark.parametrize("study", ["mnist", "fashion_mnist", "cifar10", "mnist5k"])
def test_dry_run_of_every_published_study(tmp_path, study):
    workdir = make_workdir(tmp_path)
    proc = snakemake(workdir, "-n", "--configfile", str(ROOT / "workflow" / "studies" / f"{study}.yaml"))
    counts = planned_jobs(proc)
    # every family (the mnist5k study: the default grid's images), cifar10 without the binary arena
    configs = {"cifar10": 24, "mnist5k": 19}.get(study, 25)
    assert counts["model"] == configs
    assert f"results/{study}/runs/continuous/gaussian_fixed-s0.01/seed1/model.pt" in proc.stdout


def test_a_study_file_or_config_that_names_arenas_runs_that_grid_alone(tmp_path):
    """`--configfile` and `--config` merge mappings key by key in Snakemake: a study file of the
    binary arena alone also ran config.yaml's 14 continuous configurations."""
    workdir = make_workdir(tmp_path)
    study = tmp_path / "binary.yaml"
    study.write_text("arenas:\n  binary:\n    - family: bernoulli\ntrain: {epochs: 5}\n")
    proc = snakemake(workdir, "-n", "-p", "--configfile", str(study))
    assert (planned_jobs(proc)["model"], planned_jobs(proc)["anchors"]) == (1, 1)
    assert "runs/continuous" not in proc.stdout and "--epochs 5 --batch-size 64" in proc.stdout
    # --config names the grid after the study file: the last that names one gives it
    published = str(ROOT / "workflow" / "studies" / "mnist.yaml")
    proc = snakemake(
        workdir, "-n", "--configfile", published, "--config", "arenas={continuous: [{family: mse}]}"
    )
    assert planned_jobs(proc)["model"] == 1 and "runs/continuous/mse/seed1" in proc.stdout
    vaestudy = str(Path(sys.executable).parent / "vaestudy")
    listed = subprocess.run(
        [vaestudy, "study", "--config", str(study)], capture_output=True, text=True, cwd=workdir
    )
    assert listed.stdout.split() == [
        "binary/bernoulli/seed1",
        "binary/bernoulli/seed2",
        "binary/bernoulli/seed3",
    ]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"arenas": {"continuous": [{"family": "gaussian_magic"}]}},
            "unknown likelihood family 'gaussian_magic'",
        ),
        ({"arenas": {"continuous": [{"family": "gaussian_fixed", "sigma": [0.1, -1]}]}}, "sigma must be > 0"),
        ({"arenas": {"binary": [{"family": "mse"}]}}, "has no meaning in the binary arena"),
        ({"arenas": {"continuous": [{"family": "mse"}, {"family": "mse"}]}}, "listed twice"),
        ({"train": {"epochs": 0}}, "epochs"),
        ({"trian": {"epochs": 3}}, "trian"),
        ({"dataset": "svhn"}, "svhn"),
        ({"device": "tpu"}, "(auto, cpu, cuda or cuda:N;"),
    ],
)
def test_a_bad_config_stops_before_any_job_and_names_the_problem(tmp_path, overrides, message):
    workdir = make_workdir(tmp_path, **overrides)
    proc = snakemake(workdir, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("results", ["", " ", "/", "//"])
def test_a_results_folder_at_the_file_systems_root_is_refused(tmp_path, results):
    """With results '' or '/', every output path (f"{results}/runs/...") would be at the root:
    /runs, /data, ... A dry run, so that a regression plans jobs there and writes nothing."""
    proc = snakemake(make_workdir(tmp_path, results=results), "-n", check=False)
    assert proc.returncode == 2
    assert "not empty and not the file system's root /" in proc.stderr
    assert "/runs/" not in proc.stdout


@pytest.mark.parametrize("results", ["results/", "./results", "x/../results"])
def test_other_spellings_of_the_results_folder_name_the_same_files(tmp_path, results):
    """Snakemake compares paths as text: with results/ the report's output was results//report.md,
    which never counted as made, so every later run made the report again."""
    proc = snakemake(make_workdir(tmp_path, results=results), "-n")
    assert (
        " results/report.md" in proc.stdout and " results/runs/binary/bernoulli/seed1/model.pt" in proc.stdout
    )
    assert "results//" not in proc.stdout and "./results" not in proc.stdout and "x/../" not in proc.stdout


def test_command_line_config_and_1e_3_reach_the_jobs_as_numbers(tmp_path):
    """Snakemake's --config reads every value inside a mapping or a list as a string, and YAML 1.1
    reads 1e-3 as one: both reach the jobs as the numbers they spell (the schema would reject
    them as text), and the run is named after the number."""
    workdir = make_workdir(tmp_path)
    (tmp_path / "study.yaml").write_text("train:\n  lr: 2e-3\n")
    proc = snakemake(
        workdir,
        "-n",
        "-p",
        "--configfile",
        str(tmp_path / "study.yaml"),
        "--config",
        "seeds=[4]",
        "train={epochs: 2}",
        "evaluate={k: 5, max_elements: null}",
        "arenas={continuous: [{family: gaussian_fixed, sigma: [1e-2]}], binary: null}",
        "data_root=null",
    )
    assert planned_jobs(proc)["model"] == 1
    shell = proc.stdout
    assert "runs/continuous/gaussian_fixed-s0.01/seed4/model.pt" in shell
    for flag in ("--seeds 4", "--epochs 2", "--lr 0.002", "--k 5", "--param sigma=0.01"):
        assert flag in shell, flag
    assert "--data-root" not in shell and "--max-elements" not in shell


def _read(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "results" / "tables" / "metrics.csv")


@pytest.mark.pipeline
def test_the_default_study_end_to_end(tmp_path):
    workdir = make_workdir(tmp_path / "study")
    snakemake(workdir, "--cores", "2")
    metrics = _read(workdir)
    summary = pd.read_csv(workdir / "results" / "tables" / "summary.csv")

    # every configuration and seed is present
    expected = {
        "continuous/" + c
        for c in (
            "bernoulli",
            "continuous_bernoulli",
            "gaussian_shared-f0.001",
            "gaussian_pixel-f0.001",
            "gaussian_heteroscedastic-f0.001",
            "gaussian_heteroscedastic-f0",
            "gaussian_optimal-f0.001",
            "mse-sum",
            "mse-mean",
            "laplace",
            "student_t",
            "beta",
        )
    } | {f"continuous/gaussian_fixed-s{s}" for s in ("0.01", "0.03", "0.1", "0.3", "1")}
    expected |= {"binary/bernoulli"} | {f"linear/gaussian_fixed-s{s}" for s in ("0.1", "0.3", "0.5", "0.7")}
    expected |= {"discrete/discretised_logistic", "discrete/discretised_gaussian"}
    arenas = ("binary", "continuous", "discrete", "linear")
    anchors = {f"{arena}/anchor-{kind}" for arena in arenas for kind in ("test", "noise")}
    nets = {f"{arena}/feature_net" for arena in arenas}
    assert set(metrics.config) == expected | anchors | nets
    models = metrics[metrics.config.isin(expected)]
    assert models.groupby("config").seed.nunique().eq(3).all()
    assert set(summary.config) == expected | anchors | nets
    # sample quality: the feature network's bound, the anchors, both kinds of sample for every model
    accuracy = metrics[metrics.metric == "feature_net_test_accuracy"].set_index("arena").value
    assert len(accuracy) == 4 and accuracy["binary"] >= 0.8  # 8x8 binarised: harder
    assert (accuracy[["continuous", "discrete", "linear"]] >= 0.95).all()
    fid = metrics[(metrics.family == "anchor") & (metrics.metric == "fid")].set_index("config").value
    assert (fid[[a for a in anchors if a.endswith("test")]] < 5).all()
    assert (fid[[a for a in anchors if a.endswith("noise")]] > 50).all()
    per_run = models.groupby("run").metric.apply(set)
    assert per_run.apply(lambda m: {"fid_mean", "fid_draw", "precision_draw", "recall_mean"} <= m).all()
    figures = list((workdir / "results" / "figures" / "samples").rglob("*.png"))
    assert len(figures) == models.run.nunique()

    # the report: figures and answers from this run, then the HTML report with every figure in it
    report_md = (workdir / "results" / "report.md").read_text()
    assert all(f"## Q{i}." in report_md for i in range(1, 8))
    snakemake(workdir, "--report", "results/report.html")
    html = (workdir / "results" / "report.html").read_text()
    for figure in (workdir / "results" / "figures").glob("*.png"):
        assert figure.name in html, figure.name
    assert "sample grids" in html and "the study's questions, answered by this run" in html
    # the ground truth: every linear model has its exact metrics
    linear = models[models.arena == "linear"].groupby("run").metric.apply(set)
    assert linear.apply(lambda m: {"ll_exact", "iwae_minus_exact", "active_units_exact"} <= m).all()
    for column in (
        "run",
        "dataset",
        "arena",
        "family",
        "sigma",
        "reduction",
        "seed",
        "metric",
        "value",
        "status",
    ):
        assert column in metrics.columns

    wide = models.pivot_table(index="run", columns="metric", values="value")
    ok = models.groupby("run").status.first().eq("ok")
    # IWAE >= ELBO up to Monte Carlo noise
    assert (wide.loc[ok, "ll_iwae"] >= wide.loc[ok, "elbo"] - 0.5).all()
    # the rate falls along the sigma sweep (means over seeds)
    fixed = (summary.family == "gaussian_fixed") & (summary.arena == "continuous")  # not the linear models
    sweep = summary[fixed & (summary.metric == "rate")].sort_values("sigma")
    assert sweep["mean"].is_monotonic_decreasing, sweep[["sigma", "mean"]]

    # the kept reference of the default study has the same numbers (within what another processor's
    # float32 rounding moves: the same machine gives them bit for bit); `vaestudy compare` says so
    vaestudy = str(Path(sys.executable).parent / "vaestudy")
    reference = str(ROOT / "results" / "reference")
    compared = subprocess.run(
        [vaestudy, "compare", "results", reference, "--rtol", "0.05", "--atol", "0.05"],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert compared.returncode == 0, compared.stdout[-3000:] + compared.stderr

    # a second run has nothing to do
    again = snakemake(workdir, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    # deleting one model's outputs (its folder) reruns its configuration's job and what depends on
    # it, nothing else; in that job only the deleted seed trains, the others resume at their end
    before = _table(workdir)
    config = "continuous/gaussian_fixed-s0.1"
    shutil.rmtree(workdir / "results" / "runs" / config / "seed2")
    counts = planned_jobs(snakemake(workdir, "-n"))
    assert counts == {
        "model": 1,
        "collect": 1,
        "figures": 1,
        "report_text": 1,
        "all": 1,
        "total": 5,
    }
    snakemake(workdir, "--cores", "2")
    log = (workdir / "results" / "logs" / "model" / f"{config}.log").read_text()
    resumed = [line for line in log.splitlines() if line.startswith("resuming ")]
    assert resumed == [f"resuming results/runs/{config}/seed{s} from epoch 150" for s in (1, 3)], log[-2000:]
    pd.testing.assert_frame_equal(_table(workdir), before)


def slurm_answers() -> bool:
    """Is a Slurm controller answering here? (.ci/slurm-up starts a one-node cluster.)"""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


SHRUNK = dict(
    seeds=[1, 2],
    train={"epochs": 5},
    evaluate={"k": 50, "elbo_samples": 2},
    arenas={
        "binary": [{"family": "bernoulli"}],
        "continuous": [{"family": "gaussian_fixed", "sigma": [0.1, 1.0]}, {"family": "gaussian_optimal"}],
    },
)


def _table(workdir: Path) -> pd.DataFrame:
    """metrics.csv without the columns that time or place a run."""
    t = _read(workdir)
    return t[~t.metric.isin(TIMING)].drop(columns="device").reset_index(drop=True)


@pytest.fixture(scope="module")
def shrunk_local(tmp_path_factory) -> Path:
    """The shrunk study, run once locally: the reference of the Slurm, determinism and kill tests."""
    workdir = make_workdir(tmp_path_factory.mktemp("shrunk") / "local", **SHRUNK)
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.pipeline
def test_two_runs_of_a_study_give_identical_tables(tmp_path, shrunk_local):
    again = make_workdir(tmp_path / "again", **SHRUNK)
    snakemake(again, "--cores", "2")
    pd.testing.assert_frame_equal(_table(shrunk_local), _table(again))


@pytest.mark.pipeline
def test_a_study_killed_mid_run_completes_to_the_same_table(tmp_path, shrunk_local):
    workdir = make_workdir(tmp_path / "killed", **SHRUNK)
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    runs = workdir / "results" / "runs"
    deadline = time.time() + 600
    while len(list(runs.rglob("metrics.json"))) < 3 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
    proc.wait()
    assert not (workdir / "results" / "tables" / "metrics.csv").exists(), "the study ended before the kill"
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    pd.testing.assert_frame_equal(_table(shrunk_local), _table(workdir))


@pytest.mark.pipeline
def test_diverged_runs_flow_through_the_tables_and_the_report(tmp_path):
    workdir = make_workdir(
        tmp_path / "diverged",
        seeds=[1],
        train={"epochs": 3, "lr": 1e20},
        evaluate={"k": 10, "elbo_samples": 1},
        arenas={
            "binary": [],
            "continuous": [{"family": "gaussian_fixed", "sigma": [0.01, 0.1]}, {"family": "mse"}],
        },
    )
    snakemake(workdir, "--cores", "2")
    metrics = _read(workdir)
    models = metrics[metrics.family.isin(["gaussian_fixed", "mse"])]
    assert set(models.status) == {"diverged"} and set(models.diverged_epoch) == {1.0}
    summary = pd.read_csv(workdir / "results" / "tables" / "summary.csv")
    rows = summary[summary.family.isin(["gaussian_fixed", "mse"])]
    assert (rows.n == 0).all() and (rows.n_diverged == 1).all()
    assert (workdir / "results" / "report.md").exists()
    table = pd.read_csv(workdir / "results" / "tables" / "continuous.csv")
    assert set(table.diverged) == {1}


def test_config_values_never_reach_the_shell_unquoted(tmp_path):
    marker = tmp_path / "PWNED"
    workdir = make_workdir(tmp_path / "study", data_root=f"x; touch {marker} #$(touch {marker})")
    snakemake(workdir, "--cores", "1", "results/data/digits.json")
    assert (workdir / "results" / "data" / "digits.json").exists()
    assert not marker.exists()


@pytest.mark.pipeline
def test_the_slurm_profile_runs_the_study_through_sbatch(tmp_path, shrunk_local):
    if not slurm_answers():
        # CI starts a cluster and sets VAESTUDY_TEST_SLURM=1: there a missing Slurm is a failure
        assert not os.environ.get("VAESTUDY_TEST_SLURM"), (
            "VAESTUDY_TEST_SLURM is set but Slurm does not answer"
        )
        pytest.skip("no Slurm here (start a one-node cluster with .ci/slurm-up)")
    slurm = make_workdir(tmp_path / "slurm", **SHRUNK)
    proc = snakemake(
        slurm,
        "--profile",
        str(ROOT / "workflow" / "profiles" / "slurm"),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "2",
        "--latency-wait",
        "5",
    )
    log = proc.stdout + proc.stderr
    submitted = log.count("SLURM jobid") + log.count("SLURM run ID")
    # the feature network and anchors of each arena and 4 model jobs (one per configuration) go to
    # Slurm; the data, the tables, the figures and the report texts (seconds each) run locally
    assert submitted >= 2 + 2 + 4, log[-3000:]
    for rule in ("prepare_data", "collect", "figures", "report_text"):
        assert f"localrule {rule}:" in log, rule
    pd.testing.assert_frame_equal(_table(shrunk_local), _table(slurm))
