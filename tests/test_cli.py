"""The command line: every user mistake is one line, exit status 2, no traceback, no partial output."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from vaestudy.cli import build_parser, main

TINY = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--max-train", "200", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, "--family", "gaussian_fixed", "--out", str(out)]) == 0
    return out


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None


def _bad(tmp_path, make_args):
    """Build the case in tmp_path, run it, and return (stderr, listing before, listing after)."""
    return make_args(tmp_path)


def _write(path, content: str | bytes) -> None:
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def case_yaml(text: str | bytes):
    def make(tmp):
        _write(tmp / "run.yaml", text)
        return ["train", "--config", str(tmp / "run.yaml"), "--out", str(tmp / "out")]

    return make


def case_train(*args):
    return lambda tmp: ["train", *TINY, *args, "--out", str(tmp / "out")]


def case_checkpoint(content: bytes, *args):
    def make(tmp):
        (tmp / "out").mkdir()
        (tmp / "out" / "checkpoint.pt").write_bytes(content)
        return ["train", *TINY, *args, "--out", str(tmp / "out")]

    return make


def case_model_file(content: bytes, k="10"):
    def make(tmp):
        (tmp / "run").mkdir()
        (tmp / "run" / "model.pt").write_bytes(content)
        return ["evaluate", "--run", str(tmp / "run"), "--out", str(tmp / "out" / "m.json"), "--k", k]

    return make


def case_model_quality(*args):
    """vaestudy model with quality settings that cannot work: said before any training."""

    def make(tmp):
        (tmp / "net.pt").write_bytes(b"not read")
        out = ["--out", str(tmp / "out" / "seed{seed}"), "--figure", str(tmp / "out" / "seed{seed}.png")]
        return [
            "model",
            *TINY,
            "--family",
            "gaussian_fixed",
            "--feature-net",
            str(tmp / "net.pt"),
            *args,
            *out,
        ]

    return make


def case_config_folder(tmp):
    """`vaestudy model` writes a configuration's seeds into seed1/, seed2/, ... of its folder."""
    for seed in ("seed1", "seed2"):
        (tmp / "cfg" / seed).mkdir(parents=True)
        (tmp / "cfg" / seed / "model.pt").write_bytes(b"not read")
    return ["evaluate", "--run", str(tmp / "cfg"), "--out", str(tmp / "out" / "m.json")]


def case_tables(summary: str, command: str = "figures"):
    """figures or report of a summary table with the given text (the metrics table alike)."""

    def make(tmp):
        (tmp / "summary.csv").write_text(summary)
        tables = ["--summary", str(tmp / "summary.csv"), "--metrics", str(tmp / "summary.csv")]
        out = ["--out-dir", str(tmp / "figs")] if command == "figures" else ["--results", str(tmp / "res")]
        return [command, *tables, *out]

    return make


A_METRICS_FILE = {
    "config": {"dataset": "digits", "arena": "binary", "family": "bernoulli", "seed": 1},
    "status": "ok",
    "metrics": {"elbo": -20.0},
}


def case_collect_bytes(data: bytes):
    """vaestudy collect of a metrics file holding these bytes."""

    def make(tmp):
        (tmp / "metrics.json").write_bytes(data)
        return [
            "collect",
            "--metrics-csv",
            str(tmp / "m.csv"),
            "--summary-csv",
            str(tmp / "s.csv"),
            str(tmp / "metrics.json"),
        ]

    return make


def case_collect(metrics: object, anchors: object | None = None):
    """vaestudy collect of a metrics file (and an anchors file) with the given JSON."""

    def make(tmp):
        (tmp / "metrics.json").write_text(json.dumps(metrics))
        extra = []
        if anchors is not None:
            (tmp / "anchors.json").write_text(json.dumps(anchors))
            extra = ["--anchors", str(tmp / "anchors.json")]
        tables = ["--metrics-csv", str(tmp / "t" / "m.csv"), "--summary-csv", str(tmp / "t" / "s.csv")]
        return ["collect", *tables, str(tmp / "metrics.json"), *extra]

    return make


def case_study(text: str | bytes):
    def make(tmp):
        _write(tmp / "study.yaml", text)
        return ["study", "--config", str(tmp / "study.yaml")]

    return make


def case_truncated_idx(tmp):
    from conftest import write_mnist

    write_mnist(tmp / "data")
    path = tmp / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    return ["train", *TINY, "--dataset", "mnist", "--data-root", str(tmp / "data"), "--out", str(tmp / "out")]


def case_bench_out_under_a_file(tmp):
    (tmp / "table").write_text("not a folder")
    return ["bench", "--device", "cpu", "--out", str(tmp / "table" / "bench.csv")]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/vaestudy-pwned",))


CASES = {
    "unknown family": (
        case_train("--family", "gaussian_magic"),
        "unknown likelihood family 'gaussian_magic'",
    ),
    "sigma zero": (case_train("--param", "sigma=0"), "sigma must be > 0"),
    "sigma negative": (case_train("--param", "sigma=-0.5"), "sigma must be > 0"),
    "floor negative": (
        case_train("--family", "gaussian_shared", "--param", "floor=-1"),
        "floor must be >= 0",
    ),
    "unknown family parameter": (case_train("--param", "sgima=0.1"), "has no parameter 'sgima'"),
    "bad --param": (case_train("--param", "sigma"), "--param expects KEY=VALUE"),
    "model with --seed and --seeds": (
        case_model_quality("--seed", "5", "--seeds", "1,2"),
        "--seed 5 and --seeds 1,2 together: give one of them",
    ),
    "--param twice": (
        case_train("--param", "sigma=0.1", "--param", "sigma=0.2"),
        "--param sigma is given twice (0.1 and 0.2): a run takes one value",
    ),
    "family outside its arena": (case_train("--arena", "binary"), "has no meaning in the binary arena"),
    "unknown arena": (case_train("--arena", "grey"), "argument --arena: invalid choice: 'grey'"),
    "unknown data set": (case_train("--dataset", "svhn"), "unknown data set 'svhn'"),
    "missing data root": (
        case_train("--dataset", "mnist", "--data-root", "/nonexistent/vaestudy"),
        "data root /nonexistent/vaestudy does not exist",
    ),
    "no data root": (case_train("--dataset", "mnist"), "needs a data root"),
    "latent zero": (case_train("--latent", "0"), "latent must be >= 1"),
    "model with quality k not below its samples": (
        case_model_quality("--samples", "3", "--quality-k", "3"),
        "quality k (3 nearest neighbours) must be below the images per set (3)",
    ),
    "model with quality k not below its test set": (
        case_model_quality("--max-test", "20", "--quality-k", "20"),
        "quality k (20 nearest neighbours) must be below the images per set (20)",
    ),
    "infinite learning rate": (case_train("--lr", "inf"), "lr must be a finite number > 0, got inf"),
    "infinite sigma": (case_train("--param", "sigma=inf"), "sigma must be a finite number, got inf"),
    "epochs not a number": (case_train("--epochs", "ten"), "epochs must be of type int"),
    "batch larger than data": (
        case_train("--batch-size", "5000"),
        "batch_size 5000 is larger than the training set",
    ),
    "conv on 8x8 digits": (case_train("--architecture", "conv"), "conv needs 28x28 or 32x32"),
    "unknown flag": (case_train("--epohcs", "3"), "unrecognized arguments: --epohcs"),
    "unknown command": (lambda tmp: ["trian", "--out", str(tmp / "out")], "invalid choice: 'trian'"),
    "yaml syntax error": (case_yaml("family: [gaussian_fixed\n"), "YAML syntax error"),
    "run config that is binary": (case_yaml(b"\x7fELF\xf0\x28\x8c"), "run.yaml: not a text file (UTF-8)"),
    "study config that is binary": (
        case_study(b"\x7fELF\xf0\x28\x8c"),
        "study.yaml: not a text file (UTF-8)",
    ),
    "study config with a YAML syntax error": (
        case_study("seeds: [1\narenas: {\n"),
        "study.yaml: YAML syntax error at line 2: expected ',' or ']', but got ':'",
    ),
    "yaml unknown key": (case_yaml("family: mse\nlearning_rate: 0.1\n"), "unknown setting 'learning_rate'"),
    "yaml wrong type": (case_yaml("epochs: many\n"), "epochs must be of type int"),
    "config file missing": (
        lambda tmp: ["train", "--config", str(tmp / "no.yaml"), "--out", str(tmp / "out")],
        "config file",
    ),
    "truncated checkpoint": (case_checkpoint(b"PK\x03\x04truncated"), "cannot read checkpoint"),
    "truncated IDX file": (case_truncated_idx, "cannot read mnist under"),
    "pickle with code": (case_checkpoint(pickle.dumps(_Evil())), "not a file that vaestudy writes"),
    "model file garbage": (case_model_file(b"\x00" * 100), "cannot read model file"),
    "model file of text": (
        case_model_file(b"junk\n"),
        "not a file that torch.save writes (neither a zip archive nor a pickle; KeyError",
    ),
    "empty model file": (case_model_file(b""), "the file is empty or ends too early"),
    "a configuration's folder for a run": (
        case_config_folder,
        "holding the runs seed1, seed2: pass one of them",
    ),
    "figures of a table that is not collect's": (case_tables("a,b\n1,2\n"), "is not a summary table"),
    "report of an empty table": (case_tables("", "report"), "is empty: not a summary table"),
    "collect of a JSON that is not a metrics file": (
        case_collect({}),
        "is not a metrics file of vaestudy evaluate: no field 'config'",
    ),
    "collect of an anchors file that is not one": (
        case_collect(A_METRICS_FILE, {"anchors": 1}),
        "is not an anchors file of vaestudy anchors",
    ),
    "collect of a JSON list": (case_collect([1, 2]), "metrics.json: its JSON is a list, not an object"),
    "collect of a binary file": (case_collect_bytes(b"\x7fELF\xf0\x28\x8c\x28"), "cannot read metrics file"),
    "collect of an anchors file that is a JSON list": (
        case_collect(A_METRICS_FILE, [1, 2]),
        "anchors.json: its JSON is a list, not an object",
    ),
    "study config that is a list": (case_study("[1, 2]\n"), "a study config is a mapping of settings"),
    "study config with a mistyped section": (
        case_study("model: big\n"),
        "model: 'big' is not of type 'object'",
    ),
    "model file missing": (
        lambda tmp: ["evaluate", "--run", str(tmp / "none"), "--out", str(tmp / "out" / "m.json")],
        "does not exist",
    ),
    "bench with too few training images": (
        lambda tmp: ["bench", "--device", "cpu", "--train-images", "10"],
        "train images must be >= 256",
    ),
    "bench table under a file": (case_bench_out_under_a_file, "is not a folder"),
    "reference of a study not run": (
        lambda tmp: ["reference", "--results", str(tmp / "results"), "--out", str(tmp / "kept")],
        "report.md does not exist: run the study first",
    ),
    "K zero": (
        lambda tmp: ["evaluate", "--run", str(tmp), "--out", str(tmp / "out" / "m.json"), "--k", "0"],
        "K must be >= 1",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_user_mistakes_give_one_line_exit_2_and_no_output(tmp_path, capsys, name):
    make, message = CASES[name]
    args = make(tmp_path)
    before = _listing(tmp_path)
    with warnings.catch_warnings(record=True) as caught:  # a warning would print lines of its own
        warnings.simplefilter("always")
        assert main(args) == 2
    assert not caught, [str(w.message) for w in caught]
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaestudy: error:"), err
    assert not lines[0].startswith("vaestudy: error: vaestudy:"), err  # the program named once
    assert message in lines[0]
    assert "Traceback" not in err
    assert _listing(tmp_path) == before, "a failed command left files behind"
    assert not os.path.exists("/tmp/vaestudy-pwned")


def test_the_metrics_file_of_the_mistake_cases_is_one_that_collect_takes(tmp_path):
    """The anchors case above fails for its anchors, not for its metrics file."""
    assert main(case_collect(A_METRICS_FILE)(tmp_path)) == 0
    table = pd.read_csv(tmp_path / "t" / "m.csv")
    assert table.set_index("metric").loc["elbo", "value"] == -20.0


# command line (with {file}: a path under a regular file), and the work it must not start
OUTPUT_UNDER_A_FILE = {
    "bench": (["bench", "--device", "cpu", "--out", "{file}/bench.csv"], "vaestudy.bench.run_bench"),
    "feature-net": (
        ["feature-net", "--out", "net.pt", "--facts", "{file}/facts.json"],
        "vaestudy.quality.train_feature_net",
    ),
    "anchors": (["anchors", "--feature-net", "net.pt", "--out", "{file}/a.json"], "vaestudy.data.arena_data"),
    "quality": (
        ["quality", "--run", "run", "--feature-net", "net.pt", "--out", "q.json", "--figure", "{file}/q.png"],
        "vaestudy.train.load_trained",
    ),
    "model": (
        ["model", *TINY, "--feature-net", "{file}", "--out", "run", "--figure", "{file}/m.png"],
        "vaestudy.runs.train_run",
    ),
    "prepare": (["prepare", "--out", "{file}/p.json"], "vaestudy.data.load_levels"),
    "collect": (
        ["collect", "m.json", "--metrics-csv", "m.csv", "--summary-csv", "{file}/s.csv"],
        "vaestudy.tables.write_tables",
    ),
    "figures": (
        ["figures", "--summary", "s.csv", "--metrics", "m.csv", "--out-dir", "{file}/figures"],
        "vaestudy.figures.all_figures",
    ),
    "report": (
        ["report", "--summary", "s.csv", "--metrics", "m.csv", "--results", "{file}/results"],
        "vaestudy.report.write_report",
    ),
}


@pytest.mark.parametrize("command", OUTPUT_UNDER_A_FILE)
def test_outputs_that_cannot_be_written_are_said_before_the_work(tmp_path, monkeypatch, capsys, command):
    """An output that cannot be written is said at once, not after minutes of training or
    benchmark, and not with some of the command's files written."""
    args, work = OUTPUT_UNDER_A_FILE[command]
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(work, lambda *a, **k: pytest.fail(f"{work} ran"))
    before = _listing(tmp_path)
    assert main([a.replace("{file}", "file") for a in args]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert _listing(tmp_path) == before


# command line whose output file is an existing folder, and the work it must not start
OUTPUT_IS_A_FOLDER = {
    "evaluate": (["evaluate", "--run", "run", "--out", "folder"], "vaestudy.evaluate.evaluate"),
    "bench": (["bench", "--device", "cpu", "--out", "folder"], "vaestudy.bench.run_bench"),
    "prepare": (["prepare", "--out", "folder"], "vaestudy.data.load_levels"),
    "collect": (
        ["collect", "m.json", "--metrics-csv", "folder", "--summary-csv", "s.csv"],
        "vaestudy.tables.write_tables",
    ),
}


@pytest.mark.parametrize("command", OUTPUT_IS_A_FOLDER)
def test_an_output_file_that_is_a_folder_is_said_before_the_work(tmp_path, monkeypatch, capsys, command):
    """Not after the work, and naming the output rather than the temporary file beside it."""
    args, work = OUTPUT_IS_A_FOLDER[command]
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(work, lambda *a, **k: pytest.fail(f"{work} ran"))
    assert main(args) == 2
    assert capsys.readouterr().err == "vaestudy: error: cannot write folder: it is a folder, not a file\n"
    assert _listing(tmp_path) == ["folder"]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, capsys, trained):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    before = _listing(out)
    assert main(["train", *TINY, "--family", "mse", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "belongs to another configuration (differs in: family, params)" in err
    assert _listing(out) == before


def test_evaluate_refuses_a_model_file_that_does_not_fit_its_config(tmp_path, capsys, trained):
    saved = torch.load(trained / "model.pt", weights_only=True)
    saved["config"]["latent"] = 3
    (tmp_path / "run").mkdir()
    torch.save(saved, tmp_path / "run" / "model.pt")
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.json")]) == 2
    assert "does not fit its own configuration" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_cuda_without_a_gpu_is_a_user_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", *TINY[:-2], "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_a_bad_fast_setting_is_said_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAESTUDY_FAST", "blas")
    out = tmp_path / "o"
    assert main(["train", *TINY[:-2], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vaestudy: error: VAESTUDY_FAST='blas': must be one of auto, off, onednn"]
    assert not out.exists()


def test_console_script_exit_status_and_help():
    exe = shutil.which("vaestudy") or pytest.fail("the vaestudy console script is not installed")
    for sub in ("train", "evaluate", "families"):
        assert subprocess.run([exe, sub, "--help"], capture_output=True).returncode == 0
    bad = subprocess.run(
        [exe, "train", "--family", "nope", "--out", "/tmp/x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_numbers_in_e_notation_are_numbers(tmp_path):
    from vaestudy.cli import build_parser
    from vaestudy.config import run_config_from_args

    args = build_parser().parse_args(
        ["train", "--lr", "1e-3", "--param", "sigma=1e-2", "--out", str(tmp_path)]
    )
    config = run_config_from_args(args)
    assert config.lr == 0.001 and config.params["sigma"] == 0.01
    (tmp_path / "run.yaml").write_text("lr: 1e-3\nparams: {sigma: 2e-1}\n")
    args = build_parser().parse_args(
        ["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path)]
    )
    config = run_config_from_args(args)
    assert config.lr == 0.001 and config.params["sigma"] == 0.2


def test_train_then_evaluate_from_the_command_line(tmp_path, trained):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--run", str(trained), "--out", str(out), "--k", "20", "--device", "cpu"]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["status"] == "ok" and result["k"] == 20 and "ll_iwae_k10" in result["metrics"]


@pytest.fixture(scope="module")
def feature_net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("net")
    net = folder / "net.pt"
    assert main(["feature-net", "--epochs", "2", "--out", str(net), "--facts", str(folder / "f.json")]) == 0
    return net


def test_vaestudy_model_equals_train_evaluate_and_quality_run_one_by_one(tmp_path, feature_net):
    """The pipeline's job reads each saved model once for evaluation and sample quality, and runs
    the seeds of a configuration one after the other: its metrics and scores are those of the
    three separate commands run for one seed."""
    run = [*TINY, "--family", "gaussian_shared", "--max-test", "50"]
    model = ["model", *run, "--k", "20", "--feature-net", str(feature_net)]
    out = tmp_path / "both" / "seed{seed}"
    figure = tmp_path / "figures" / "seed{seed}.png"
    assert main([*model, "--seeds", "1,2", "--out", str(out), "--figure", str(figure)]) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["seed1.png", "seed2.png"]
    sep = tmp_path / "sep"
    assert main(["train", *run, "--seed", "2", "--out", str(sep)]) == 0
    evaluate = [
        "evaluate",
        "--run",
        str(sep),
        "--out",
        str(sep / "metrics.json"),
        "--k",
        "20",
        "--device",
        "cpu",
    ]
    assert main(evaluate) == 0
    quality = ["quality", "--run", str(sep), "--feature-net", str(feature_net), "--device", "cpu"]
    assert main([*quality, "--out", str(sep / "quality.json")]) == 0
    for name in ("metrics.json", "quality.json"):
        seed2 = json.loads((tmp_path / "both" / "seed2" / name).read_text())
        seed1 = json.loads((tmp_path / "both" / "seed1" / name).read_text())
        other = json.loads((sep / name).read_text())
        assert seed2["metrics"] == other["metrics"] != seed1["metrics"], name


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--seeds", "1,2", "--out", "OUT/run"],
            "--out must contain {seed} when --seeds names several seeds",
        ),
        (["--seeds", "1,2", "--out", "OUT/s{seed}", "--figure", "OUT/f.png"], "--figure must contain {seed}"),
        (["--seeds", "1,x", "--out", "OUT/s{seed}"], "--seeds expects integers separated by commas"),
        (["--seeds", "1,1", "--out", "OUT/s{seed}"], "--seeds expects distinct integers"),
    ],
)
def test_vaestudy_model_seed_errors_are_one_line(tmp_path, capsys, feature_net, extra, message):
    extra = [e.replace("OUT", str(tmp_path)) for e in extra]
    assert main(["model", *TINY, "--feature-net", str(feature_net), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_output_to_a_reader_that_has_gone_ends_quietly():
    """`vaestudy study ... | head -1`: the reader closes the pipe before the output is written.
    The command stops as one killed by SIGPIPE does (status 141), with nothing on stderr (it
    said 'vaestudy: error: cannot write or read: Broken pipe')."""
    study = Path(__file__).resolve().parents[1] / "config.yaml"  # the default study: 45 runs, a line each
    vaestudy = str(Path(sys.executable).parent / "vaestudy")
    proc = subprocess.Popen(
        [vaestudy, "study", "--config", str(study)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # gone before the child, still importing, writes anything
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, b"")


def test_every_option_of_every_command_says_what_it_is():
    """`vaestudy CMD --help` explains each flag (prepare, anchors, figures, ... listed several bare)."""
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [
        f"{name} {action.option_strings[-1]}"
        for name, parser in sub.choices.items()
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert bare == []


def test_an_abbreviated_option_is_refused_not_guessed(tmp_path, capsys):
    """argparse would read --epoch as --epochs; a typo must not train a different run."""
    assert main(["train", "--epoch", "3", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("unrecognized arguments: --epoch 3"), err
    assert not (tmp_path / "run").exists()


def test_version_from_the_package_metadata_and_help_without_a_command(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"vaestudy {version('vaestudy')}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vaestudy") and "summary" in out and "compare" in out
