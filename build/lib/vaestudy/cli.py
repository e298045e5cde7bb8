"""vaestudy's commands, each one step of the study that the Snakemake rules call (vaestudy CMD --help for its settings).

Every user mistake ends in one line on stderr and exit status 2, without a traceback, before
any work where the mistake can be seen then (a bad setting, an output that cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from vaestudy import commands, fast
from vaestudy.config import COMPILE_CHOICES, RunConfig, add_run_arguments
from vaestudy.data import ARENAS
from vaestudy.errors import UserError
from vaestudy.runs import SEED_FIELD
from vaestudy.runtime import log_startup

RUN = RunConfig()  # the run settings' defaults, which the data flags share
SAMPLES_HELP = "images per kind of sample (default and most: the test set size; the number used is recorded)"
FEATURE_NET_HELP = "network file (.pt) of vaestudy feature-net"
SUMMARY_HELP = "summary.csv of vaestudy collect"
METRICS_HELP = "metrics.csv of vaestudy collect"
# the pipeline's commands: their modules are imported before the start-up line is written, so that
# it counts the imports (vaestudy bench --pipeline sums these lines over a study's logs)
PIPELINE_IMPORTS = {
    "train": ["vaestudy.train"],
    "evaluate": ["vaestudy.evaluate"],
    "model": ["vaestudy.evaluate", "vaestudy.quality"],
    "prepare": ["vaestudy.data"],
    "collect": ["vaestudy.tables"],
    "feature-net": ["vaestudy.quality"],
    "anchors": ["vaestudy.quality"],
    "quality": ["vaestudy.quality"],
    "figures": ["vaestudy.figures"],
    "report": ["vaestudy.report"],
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs: refused, never guessed
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line instead of usage + message
        # a subcommand's parser names itself ("vaestudy train: ..."); the top one is "vaestudy: error:" already
        raise UserError(f"{self.prog}: {message}" if " " in self.prog else message)


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seeds expects integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds expects distinct integers separated by commas, got {text!r}")
    return seeds


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
        return value

    return parse


def _group(build) -> argparse.ArgumentParser:
    """A parent parser holding arguments that several commands share."""
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    build(parent)
    return parent


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=RUN.device, help=f"auto, cpu or cuda (default {RUN.device})")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=RUN.dataset, help=f"data set (default {RUN.dataset})")
    p.add_argument("--data-root", default=RUN.data_root, help="folder of the torchvision data sets")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    p.add_argument(
        "--data-seed", type=int, default=RUN.data_seed, help=f"seed of the splits (default {RUN.data_seed})"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=RUN.val_fraction,
        help=f"validation share of the training images (default {RUN.val_fraction})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=RUN.test_fraction,
        help=f"test share where the data set has no test split, as digits (default {RUN.test_fraction})",
    )


def _arena(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arena", default=RUN.arena, choices=ARENAS, help=f"where the images live (default {RUN.arena})"
    )


def _evaluation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=_positive_int("K"), default=100, help="importance samples (default 100)")
    p.add_argument(
        "--elbo-samples",
        type=_positive_int("elbo samples"),
        default=10,
        help="z samples per image for the ELBO (default 10)",
    )
    p.add_argument(
        "--max-elements",
        type=_positive_int("max elements"),
        default=None,
        help="memory bound: decoder-output floats alive at once in IWAE (default 2^20 on CPU, 2^24 on CUDA)",
    )


def _add_run_commands(sub, g: dict[str, argparse.ArgumentParser]) -> None:
    """train, evaluate and model: one run's training and scoring."""
    p = sub.add_parser(
        "train", parents=[g["threads"]], help="train one VAE into a folder (resumes from its checkpoint)"
    )
    add_run_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder of the run")
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser(
        "evaluate",
        parents=[g["evaluation"], g["device"], g["threads"]],
        help="evaluate a trained run on its test split",
    )
    p.add_argument("--run", required=True, type=Path, help="folder written by vaestudy train")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's seed)")
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser(
        "model",
        parents=[g["threads"], g["evaluation"]],
        help="train, evaluate and score a model, or one per seed, in one process (the pipeline's job)",
    )
    add_run_arguments(p)
    p.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        metavar="N[,N...]",
        help=f"one model per seed, one after the other (instead of --seed); --out and --figure then hold {SEED_FIELD}",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help=f"run folder (model, history, metrics.json, quality.json); {SEED_FIELD} is replaced by the seed",
    )
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument(
        "--quality-k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall"
    )
    p.add_argument(
        "--figure", type=Path, default=None, help=f"PNG of the model's sample grid ({SEED_FIELD} as in --out)"
    )
    p.set_defaults(func=commands.cmd_model)


def _add_data_commands(sub, g: dict[str, argparse.ArgumentParser]) -> None:
    """prepare, feature-net, anchors and quality: the data set and sample quality."""
    p = sub.add_parser(
        "prepare", parents=[g["data"]], help="check that a data set loads and record its splits"
    )
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.set_defaults(func=commands.cmd_prepare)

    data_on_device = [g["data"], g["arena"], g["device"], g["threads"]]
    p = sub.add_parser(
        "feature-net",
        parents=data_on_device,
        help="train the sample-quality feature network of a data set in one arena",
    )
    p.add_argument("--epochs", type=_positive_int("epochs"), default=30, help="training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of its initialisation and batches (default 0)")
    p.add_argument("--out", required=True, type=Path, help="network file (.pt) to write")
    p.add_argument("--facts", required=True, type=Path, help="JSON with its test accuracy")
    p.set_defaults(func=commands.cmd_feature_net)

    p = sub.add_parser(
        "anchors",
        parents=data_on_device,
        help="sample-quality anchors: test vs train images, and uniform noise",
    )
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument("--k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall")
    p.add_argument("--seed", type=int, default=0, help="seed of the images drawn (default 0)")
    p.add_argument("--out", required=True, type=Path, help="anchors JSON file to write")
    p.set_defaults(func=commands.cmd_anchors)

    p = sub.add_parser(
        "quality",
        parents=[g["device"], g["threads"]],
        help="sample quality of a trained run: FID, precision/recall, entropy, grids",
    )
    p.add_argument("--run", required=True, type=Path, help="folder written by vaestudy train")
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument("--k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the run's seed)")
    p.add_argument("--out", required=True, type=Path, help="quality JSON file to write")
    p.add_argument(
        "--figure", type=Path, default=None, help="PNG of test images, reconstructions, means, draws"
    )
    p.set_defaults(func=commands.cmd_quality)


def _add_study_commands(sub) -> None:
    """collect, study, figures, report and reference: a study's tables, figures and report."""
    p = sub.add_parser("collect", help="merge metrics JSON files into the tidy table and its summary")
    p.add_argument("metrics", nargs="+", help="metrics.json files under RESULTS/runs/<run>/")
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument("--metrics-csv", required=True, type=Path, help="the tidy table to write")
    p.add_argument("--summary-csv", required=True, type=Path, help="the per-configuration summary to write")
    p.add_argument("--anchors", nargs="*", default=[], help="anchors JSON files of vaestudy anchors")
    p.add_argument(
        "--feature-facts", nargs="*", default=[], help="JSON files of vaestudy feature-net (their accuracy)"
    )
    p.add_argument("--history-csv", type=Path, default=None, help="also write the training histories, tidy")
    p.set_defaults(func=commands.cmd_collect)

    p = sub.add_parser(
        "study",
        help="list the runs of a study config (checks it)",
        description="List the runs that `snakemake --configfile FILE` run from this folder would train: "
        "FILE's settings over config.yaml's, as Snakemake merges them (a mapping key by key), "
        "except `arenas`, which FILE gives whole where it names it.",
    )
    p.add_argument("--config", default="config.yaml", metavar="FILE", help="the study (default config.yaml)")
    p.add_argument(
        "--base",
        default=None,
        help="the config FILE overrides (default config.yaml where this folder has one; none: FILE alone)",
    )
    p.set_defaults(func=commands.cmd_study)

    p = sub.add_parser("figures", help="the study's seaborn figures from the tidy tables")
    p.add_argument("--summary", required=True, type=Path, help=SUMMARY_HELP)
    p.add_argument("--metrics", required=True, type=Path, help=METRICS_HELP)
    p.add_argument("--history", type=Path, default=None, help="tidy training histories")
    p.add_argument("--out-dir", required=True, type=Path, help="folder of the figures (PNG and SVG)")
    p.set_defaults(func=commands.cmd_figures)

    p = sub.add_parser("report", help="the answers from this run's numbers, tables and report.md")
    p.add_argument("--summary", required=True, type=Path, help=SUMMARY_HELP)
    p.add_argument("--metrics", required=True, type=Path, help=METRICS_HELP)
    p.add_argument("--results", required=True, type=Path, help="results folder (report texts go below it)")
    p.add_argument("--config", type=Path, default=None, help="the study config to show in the report")
    p.add_argument("--config-text", default=None, help="the study config as text (instead of --config)")
    p.add_argument("--samples-dir", type=Path, default=None, help="folder of the sample grids")
    p.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="another study's summary.csv: each answer says where it disagrees",
    )
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("reference", help="copy the Markdown report and its figures to a folder kept in git")
    p.add_argument("--results", default="results", type=Path, help="the study's results (default results)")
    p.add_argument(
        "--out",
        default=Path("results/reference"),
        type=Path,
        help="where to copy (default results/reference)",
    )
    p.set_defaults(func=commands.cmd_reference)


def _add_bench_command(sub, g: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        parents=[g["device"], g["threads"]],
        help="trainer and IWAE against the textbook loop and the matmul rate",
    )
    p.add_argument(
        "--train-images",
        type=_positive_int("train images"),
        default=10_000,
        help="synthetic 784-pixel images per timed training epoch (default 10000)",
    )
    p.add_argument(
        "--repeats",
        type=_positive_int("repeats"),
        default=3,
        help="interleaved epochs of each loop, passes of the step over ready batches, and timed IWAE runs "
        "(the FLOP rates take the fastest; default 3)",
    )
    p.add_argument(
        "--iwae-images",
        type=_positive_int("iwae images"),
        default=None,
        help="test images of the timed IWAE run (default 20 on CPU, 10000 on CUDA)",
    )
    p.add_argument(
        "--compile",
        choices=COMPILE_CHOICES,
        default=RUN.compile,
        help="the trainer's step: auto = compiled and captured as CUDA graphs on CUDA, eager on CPU; "
        f"graph = captured only; always = compiled (and on CUDA captured); never = eager (default {RUN.compile})",
    )
    p.add_argument(
        "--k", type=_positive_int("K"), default=5000, help="importance samples of the IWAE (default 5000)"
    )
    p.add_argument(
        "--max-elements",
        type=_positive_int("max elements"),
        default=None,
        help="decoder outputs per IWAE chunk (default as evaluate's)",
    )
    p.add_argument("--out", type=Path, default=None, help="CSV file of the table")
    p.add_argument(
        "--pipeline",
        type=Path,
        default=None,
        metavar="RESULTS",
        help="instead: the share of a finished study's job time spent in start-up and imports",
    )
    p.add_argument(
        "--wall",
        type=_positive_int("wall seconds"),
        default=None,
        metavar="SECONDS",
        help="with --pipeline and --full-epochs: the study's wall time, to project it to full epochs",
    )
    p.add_argument(
        "--full-epochs",
        type=_positive_int("full epochs"),
        default=None,
        metavar="N",
        help="with --pipeline and --wall: project the study's wall time to N epochs per model",
    )
    p.set_defaults(func=commands.cmd_bench)


def _add_reading_commands(sub) -> None:
    """summary, compare and families: reading studies and the package in the terminal."""
    p = sub.add_parser("summary", help="a study's table in the terminal: a row per configuration")
    p.add_argument("results", type=Path, help="results folder (or a kept reference, or a summary.csv)")
    p.add_argument("--arena", default=None, help="this arena's configurations only")
    p.add_argument(
        "--metric", default=None, metavar="M[,M...]", help="the metrics to show (default: the main ones)"
    )
    p.add_argument("--sort", default=None, metavar="M", help="sort by this metric's mean, lowest first")
    p.set_defaults(func=commands.cmd_summary)

    p = sub.add_parser(
        "compare",
        help="compare two studies metric by metric; exit status 1 where any differs beyond the tolerance",
    )
    p.add_argument("a", type=Path, help="results folder, kept reference or summary.csv")
    p.add_argument("b", type=Path, help="the one to compare it with")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (default 1e-6)")
    p.set_defaults(func=commands.cmd_compare)

    p = sub.add_parser("families", help="list the decoder likelihood families")
    p.set_defaults(func=commands.cmd_families)


def build_parser() -> argparse.ArgumentParser:
    from vaestudy import __version__

    parser = _Parser(prog="vaestudy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaestudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    groups = {
        name: _group(build)
        for name, build in [
            ("threads", _threads),
            ("device", _device),
            ("data", _data),
            ("arena", _arena),
            ("evaluation", _evaluation),
        ]
    }
    _add_run_commands(sub, groups)
    _add_data_commands(sub, groups)
    _add_study_commands(sub)
    _add_bench_command(sub, groups)
    _add_reading_commands(sub)
    return parser


def _run(argv: list[str] | None) -> int | None:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: what the commands are
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    fast.setting()  # a bad VAESTUDY_FAST is said before any work
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.command in PIPELINE_IMPORTS:
        for module in PIPELINE_IMPORTS[args.command]:
            importlib.import_module(module)
        log_startup()
    code = args.func(args)
    sys.stdout.flush()  # here, so that a reader that has gone (| head) is met in main
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
    except BrokenPipeError:
        # the reader of our output has gone (vaestudy study ... | head): stop quietly, as a
        # command killed by SIGPIPE does, with the rest of the output sent nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except UserError as exc:
        print(f"vaestudy: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder not writable, a full disk: one line, never a traceback
        where = f" {exc.filename}" if exc.filename else ""
        print(f"vaestudy: error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from vaestudy.train import TrainingInterrupted

        if not isinstance(exc, TrainingInterrupted):
            raise
        print(f"vaestudy: {exc}", file=sys.stderr)
        return 128 + exc.signum  # as a shell reports a job ended by the signal: 143, or 130 for Ctrl-C
    except KeyboardInterrupt:
        print("vaestudy: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
