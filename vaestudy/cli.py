"""vaestudy's commands, each one step of the study that the Snakemake rules call (vaestudy CMD --help for its settings).

Every user mistake ends in one line on stderr and exit status 2, without a traceback, before
any work where the mistake can be seen then (a bad setting, an output that cannot be written).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import yaml

from vaestudy import fast
from vaestudy.config import COMPILE_CHOICES, LR_SCHEDULES, RunConfig
from vaestudy.data import ARENAS
from vaestudy.errors import UserError, require
from vaestudy.files import check_output_folder, read_text, read_yaml
from vaestudy.model import ACTIVATIONS, ARCHITECTURES
from vaestudy.runtime import log_startup


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch is not --epochs: refused, never guessed
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line instead of usage + message
        # a subcommand's parser names itself ("vaestudy train: ..."); the top one is "vaestudy: error:" already
        raise UserError(f"{self.prog}: {message}" if " " in self.prog else message)


def _parse_value(text: str):
    """A flag's text as int, float (1e-3 included, which YAML 1.1 reads as a string), bool, null or str."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (overriding --config); --param KEY=VALUE for the family."""
    parser.add_argument("--config", help="YAML file with run settings (flags override it)")
    comments = _field_comments()
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "params":
            parser.add_argument(
                "--param",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="family parameter, e.g. sigma=0.1 (repeatable)",
            )
        elif f.name == "download":
            parser.add_argument(flag, action="store_true", default=None, help=comments[f.name])
        elif f.name == "hidden":
            parser.add_argument(flag, metavar="N[,N...]", help=f"{comments[f.name]}{_default(f)}")
        elif f.name in FIELD_CHOICES:
            parser.add_argument(flag, choices=FIELD_CHOICES[f.name], help=f"{comments[f.name]}{_default(f)}")
        else:
            parser.add_argument(flag, metavar=f.name.upper(), help=f"{comments[f.name]}{_default(f)}")


def _default(f: dataclasses.Field) -> str:
    """' (default VALUE)' for a help text, VALUE as the flag takes it (a list comma-separated)."""
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return "" if value is None else f" (default {value})"


# the run settings whose values are few: argparse lists them and refuses others in one line
FIELD_CHOICES = {
    "arena": ARENAS,
    "compile": COMPILE_CHOICES,
    "lr_schedule": LR_SCHEDULES,
    "architecture": ARCHITECTURES,
    "activation": tuple(ACTIVATIONS),
}


def _field_comments() -> dict[str, str]:
    import inspect

    comments = {}
    for line in inspect.getsource(RunConfig).splitlines():
        if ":" in line and "#" in line and line.startswith("    ") and not line.strip().startswith("#"):
            name = line.strip().split(":")[0]
            comments[name] = line.split("#", 1)[1].strip()
    return comments


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {}
    if args.config:
        values = RunConfig.from_yaml(args.config).to_dict()
    for f in dataclasses.fields(RunConfig):
        if f.name == "params":
            given: dict[str, str] = {}  # a flag overrides the config file, not another flag
            for item in args.param:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise UserError(f"--param expects KEY=VALUE, got {item!r}")
                if key in given:
                    raise UserError(
                        f"--param {key} is given twice ({given[key]} and {value}): a run takes one value "
                        "(a list in a study config sweeps several)"
                    )
                given[key] = value
                values.setdefault("params", {})[key] = _parse_value(value)
            continue
        raw = getattr(args, f.name)
        if raw is None:
            continue
        if f.name == "hidden":
            values["hidden"] = [_parse_value(v) for v in str(raw).split(",") if v.strip()]
        elif f.name == "download":
            values["download"] = bool(raw)
        else:
            values[f.name] = _parse_value(raw) if "str" not in f.type else raw
    return RunConfig.from_dict(values, source="settings").validate()


def _cmd_train(args: argparse.Namespace) -> None:
    import vaestudy.train  # noqa: F401  (imported before the start-up is logged)

    log_startup()
    _train(run_config_from_args(args), args.out)


def _train(config: RunConfig, out: Path) -> None:
    """Train one run into `out` (resuming from its checkpoint), with a line saying how it ended."""
    from vaestudy.train import train

    facts = train(config, out, progress=None)
    print(f"{out}: {facts['status']} after {facts['epochs']} epochs ({facts['seconds']:.1f}s)")


SAMPLES_HELP = "images per kind of sample (default and most: the test set size; the number used is recorded)"
FEATURE_NET_HELP = "network file (.pt) of vaestudy feature-net"
SUMMARY_HELP = "summary.csv of vaestudy collect"
METRICS_HELP = "metrics.csv of vaestudy collect"
SEED_FIELD = "{seed}"  # in vaestudy model's --out and --figure: the seed of each model


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


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from vaestudy.evaluate import evaluate

    log_startup()
    _check_outputs(args.out)
    evaluate(
        args.run,
        args.out,
        k=args.k,
        device=args.device,
        elbo_samples=args.elbo_samples,
        max_elements=args.max_elements,
        seed=args.seed,
    )
    print(args.out)


def _check_outputs(*files: Path | None) -> None:
    """Before any work: each output file's folder can be made and written (a user error if not),
    so that a command does not fail after minutes of work, or with some of its files written."""
    for path in files:
        if path is not None:
            require(not Path(path).is_dir(), f"cannot write {path}: it is a folder, not a file")
            check_output_folder(Path(path).parent)


def _seed_path(template: Path | None, seed: int) -> Path | None:
    return None if template is None else Path(str(template).replace(SEED_FIELD, str(seed)))


def _cmd_model(args: argparse.Namespace) -> None:
    """Train, evaluate and score one model per seed in one process (the pipeline's job per
    configuration: interpreter start-up and imports are paid once for all its seeds)."""
    import vaestudy.quality  # noqa: F401  (imported before the start-up is logged)
    from vaestudy.evaluate import evaluate
    from vaestudy.quality import check_neighbours, images_per_set
    from vaestudy.runtime import resolve_device
    from vaestudy.train import load_data, load_trained

    log_startup()
    require(args.feature_net.is_file(), f"feature network {args.feature_net} not found")
    check_neighbours(args.quality_k, args.samples)  # before training, where it can be told
    require(
        args.seeds is None or args.seed is None,
        f"--seed {args.seed} and --seeds {','.join(map(str, args.seeds or []))} together: give one of them",
    )
    config = run_config_from_args(args)
    # and against the data set's size, also before training (training reuses the data loaded here)
    data = load_data(config, resolve_device(config.device))
    check_neighbours(args.quality_k, images_per_set(data, args.samples))
    seeds = [config.seed] if args.seeds is None else args.seeds
    _check_outputs(*(_seed_path(args.figure, seed) for seed in seeds))
    require(
        len(seeds) == 1 or SEED_FIELD in str(args.out),
        f"--out must contain {SEED_FIELD} when --seeds names several seeds (got {args.out})",
    )
    require(
        len(seeds) == 1 or args.figure is None or SEED_FIELD in str(args.figure),
        f"--figure must contain {SEED_FIELD} when --seeds names several seeds (got {args.figure})",
    )
    for seed in seeds:
        run = dataclasses.replace(config, seed=seed)
        out = _seed_path(args.out, seed)
        _train(run, out)
        trained = load_trained(out, run.device)  # the saved model, read once for both
        evaluate(
            out,
            out / "metrics.json",
            k=args.k,
            device=run.device,
            elbo_samples=args.elbo_samples,
            max_elements=args.max_elements,
            trained=trained,
        )
        _quality(
            out,
            args.feature_net,
            args.samples,
            args.quality_k,
            None,
            run.device,
            out / "quality.json",
            _seed_path(args.figure, seed),
            trained=trained,
        )
        print(f"{out}: trained, evaluated and scored")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from vaestudy.data import load_levels, make_splits
    from vaestudy.files import atomic_write_json

    log_startup()
    _check_outputs(args.out)

    levels = load_levels(args.dataset, args.data_root, args.download)
    splits = make_splits(levels, args.data_seed, args.val_fraction, args.test_fraction)
    facts = {
        "dataset": args.dataset,
        "levels": levels.levels,
        "shape": list(levels.shape),
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "data_seed": args.data_seed,
    }
    atomic_write_json(args.out, facts)
    print(
        f"{args.dataset}: {facts['train']} train, {facts['val']} validation, {facts['test']} test images, "
        f"{facts['levels']} levels, shape {tuple(facts['shape'])}"
    )


def _cmd_collect(args: argparse.Namespace) -> None:
    from vaestudy.tables import write_tables

    log_startup()
    _check_outputs(args.metrics_csv, args.summary_csv, args.history_csv)

    metrics = write_tables(
        args.metrics,
        args.results,
        args.metrics_csv,
        args.summary_csv,
        args.anchors,
        args.feature_facts,
        args.history_csv,
    )
    print(f"{metrics['run'].nunique()} runs, {len(metrics)} rows -> {args.metrics_csv}, {args.summary_csv}")


def _cmd_study(args: argparse.Namespace) -> None:
    from vaestudy.study import SCHEMA, check_schema, expand_study, merge_studies

    def read_study(path: str) -> dict:
        study = read_yaml(path, "study config") or {}
        require(
            isinstance(study, dict),
            f"{path}: a study config is a mapping of settings (as config.yaml), not a {type(study).__name__}",
        )
        return study

    study = read_study(args.config)
    base = args.base
    if base is None and Path(args.config).resolve() != Path("config.yaml").resolve():
        base = "config.yaml" if Path("config.yaml").is_file() else "none"
    if base not in (None, "none"):  # as `snakemake --configfile FILE` run from here merges FILE over it
        study = merge_studies(read_study(base), study)
    try:  # the workflow's schema, as the Snakefile checks it
        study = check_schema(study, SCHEMA)
    except UserError as exc:
        raise UserError(f"{args.config}: {exc}") from None
    for run in expand_study(study):
        print(run.name)


def _add_data_arguments(p: argparse.ArgumentParser, arena: bool = True, compute: bool = True) -> None:
    p.add_argument("--dataset", default="digits", help="data set (default digits)")
    if arena:
        p.add_argument(
            "--arena", default="continuous", choices=ARENAS, help="where the images live (default continuous)"
        )
    p.add_argument("--data-root", default=None, help="folder of the torchvision data sets")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the splits (default 0)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="validation share of the training images (default 0.1)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="test share where the data set has no test split, as digits (default 0.2)",
    )
    if compute:
        _add_compute_arguments(p)


def _add_compute_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")


def _data_from_args(args: argparse.Namespace, arena: str):
    from vaestudy.data import arena_data
    from vaestudy.runtime import resolve_device

    require(0 < args.val_fraction < 1, f"val fraction must be in (0, 1), got {args.val_fraction}")
    require(0 < args.test_fraction < 1, f"test fraction must be in (0, 1), got {args.test_fraction}")
    return arena_data(
        args.dataset,
        arena,
        resolve_device(args.device),
        args.data_root,
        args.download,
        args.data_seed,
        args.val_fraction,
        args.test_fraction,
    )


def _cmd_feature_net(args: argparse.Namespace) -> None:
    from vaestudy.files import atomic_write_json
    from vaestudy.quality import save_feature_net, train_feature_net

    log_startup()
    _check_outputs(args.out, args.facts)

    data = _data_from_args(args, args.arena)
    net, facts = train_feature_net(data, epochs=args.epochs, seed=args.seed)
    facts["dataset"] = args.dataset
    save_feature_net(net, facts, args.out)
    atomic_write_json(args.facts, facts)
    print(f"feature network for {args.dataset}: test accuracy {facts['test_accuracy']:.4f} -> {args.out}")


def _cmd_anchors(args: argparse.Namespace) -> None:
    from vaestudy.files import atomic_write_json
    from vaestudy.quality import anchors, load_feature_net

    log_startup()
    _check_outputs(args.out)

    data = _data_from_args(args, args.arena)
    net = load_feature_net(args.feature_net, data.device, args.arena)
    result = anchors(net, data, args.samples, args.seed, args.k)
    atomic_write_json(
        args.out, {"dataset": args.dataset, "arena": args.arena, "anchors": result, "k": args.k}
    )
    print(f"anchors {args.arena}: " + ", ".join(f"fid_{k} {v['fid']:.3f}" for k, v in result.items()))


def _cmd_quality(args: argparse.Namespace) -> None:
    import vaestudy.quality  # noqa: F401  (imported before the start-up is logged)

    log_startup()
    _check_outputs(args.out, args.figure)
    _quality(args.run, args.feature_net, args.samples, args.k, args.seed, args.device, args.out, args.figure)


def _quality(run, feature_net, samples, k, seed, device, out, figure, trained=None) -> None:
    """Sample quality of the model trained in `run`: the JSON `out` and, if asked, the PNG `figure`.
    trained: load_trained(run, device) where the caller has it already."""
    from vaestudy.quality import load_feature_net, sample_figure, score_model, write_quality
    from vaestudy.runtime import exact_float32
    from vaestudy.train import load_trained

    model, config, data, saved = trained or load_trained(run, device)
    net = load_feature_net(feature_net, data.device, config.arena)
    require(
        tuple(net.shape) == tuple(data.shape),
        f"{feature_net} is for images of shape {net.shape}, not {data.shape}",
    )
    seed = config.seed if seed is None else seed
    with exact_float32():
        result = score_model(model, net, data, samples, seed, k)
    result.update(
        {
            "run": str(run),
            "status": saved["status"],
            "config": config.to_dict(),
            "seed": seed,
            "clipped_for_features": True,
        }
    )
    if figure:
        sample_figure(
            result["kinds"],
            data.test,
            data.shape,
            figure,
            title=f"{config.arena} / {config.family} {config.params} / seed {config.seed}",
        )
    write_quality(result, out)
    m = result["metrics"]
    print(f"fid_mean {m['fid_mean']:.3f} fid_draw {m['fid_draw']:.3f} fid_recon {m['fid_recon']:.3f}")


def _cmd_figures(args: argparse.Namespace) -> None:
    import pandas as pd

    from vaestudy.figures import all_figures
    from vaestudy.tables import read_table

    log_startup()
    check_output_folder(args.out_dir)
    history = read_table(args.history, "history") if args.history else pd.DataFrame()
    summary, metrics = read_table(args.summary, "summary"), read_table(args.metrics, "metrics")
    paths = all_figures(summary, metrics, history, args.out_dir)
    print(f"{len(paths)} figure files -> {args.out_dir}")


def _cmd_report(args: argparse.Namespace) -> None:
    from vaestudy.report import write_report

    log_startup()
    check_output_folder(args.results)

    config_text = (
        args.config_text
        if args.config_text is not None
        else (read_text(args.config, "study config") if args.config else "")
    )
    written = write_report(
        args.summary,
        args.metrics,
        args.results,
        config_text,
        samples_dir=args.samples_dir,
        compare=args.compare,
    )
    print(f"report texts -> {written['front']}, {written['report_md']}")


def _cmd_reference(args: argparse.Namespace) -> None:
    from vaestudy.report import copy_reference

    copied = copy_reference(args.results, args.out)
    print(f"{len(copied)} files -> {args.out}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from vaestudy.bench import check_train_images, format_table, pipeline_rows, run_bench, write_rows
    from vaestudy.runtime import resolve_device

    _check_outputs(args.out)
    check_train_images(args.train_images)  # before the banner: a mistake is one line
    if (args.wall is None) != (args.full_epochs is None):
        raise UserError("--wall and --full-epochs go together (with --pipeline)")
    if args.wall is not None and args.pipeline is None:
        raise UserError("--wall and --full-epochs project a finished study: name it with --pipeline")
    if args.pipeline is not None:  # a finished study's logs and benchmark files, no device work
        rows = pipeline_rows(args.pipeline, args.wall, args.full_epochs)
        if args.out is not None:
            write_rows(rows, args.out)
        print(format_table(rows))
        return
    device = resolve_device(args.device)
    print(
        f"benchmark on {device} (synthetic MNIST-shaped data; half a minute on a 2-core CPU, more with compiling on CUDA)",
        file=sys.stderr,
    )
    rows = run_bench(
        device,
        args.train_images,
        args.repeats,
        args.iwae_images,
        args.k,
        args.max_elements,
        args.out,
        compile=args.compile,
    )
    print(format_table(rows))


def _cmd_summary(args: argparse.Namespace) -> None:
    from vaestudy.compare import format_table, read_summary, summary_table

    metrics = [m for m in (args.metric or "").split(",") if m] or None
    print(format_table(summary_table(read_summary(args.results), args.arena, metrics, args.sort)))


def _cmd_compare(args: argparse.Namespace) -> int:
    from vaestudy.compare import compare, describe, read_summary

    require(
        args.rtol >= 0 and args.atol >= 0, f"tolerances must be >= 0, got rtol {args.rtol}, atol {args.atol}"
    )
    table = compare(read_summary(args.a), read_summary(args.b), args.rtol, args.atol)
    outside = table[~table.within]
    for row in outside.itertuples():
        print(describe(row))
    print(
        f"{len(table)} values compared (A = {args.a}, B = {args.b}, rtol {args.rtol:g}, atol {args.atol:g}): "
        f"{len(outside)} outside the tolerance"
    )
    return 1 if len(outside) else 0


def _cmd_families(args: argparse.Namespace) -> None:
    from vaestudy.likelihoods import REGISTRY, family_parameters

    rows = []
    for name, cls in REGISTRY.items():
        params = ", ".join(f"{k}={v}" for k, v in family_parameters(name).items()) or "-"
        doc = next(iter((cls.__doc__ or "").strip().splitlines()), "")  # a family may have no docstring
        rows.append((name, ",".join(cls.arenas), params, doc))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, arenas, params, doc in rows:
        print(f"{name:{widths[0]}s}  arenas: {arenas:{widths[1]}s}  params: {params:{widths[2]}s}  {doc}")


def _add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    from vaestudy import __version__

    parser = _Parser(prog="vaestudy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vaestudy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one VAE into a folder (resumes from its checkpoint)")
    _add_run_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder of the run")
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on its test split")
    p.add_argument("--run", required=True, type=Path, help="folder written by vaestudy train")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON file to write")
    _add_evaluate_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's seed)")
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "model",
        help="train, evaluate and score a model, or one per seed, in one process (the pipeline's job)",
    )
    _add_run_arguments(p)
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
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")
    _add_evaluate_arguments(p)
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument(
        "--quality-k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall"
    )
    p.add_argument(
        "--figure", type=Path, default=None, help=f"PNG of the model's sample grid ({SEED_FIELD} as in --out)"
    )
    p.set_defaults(func=_cmd_model)

    p = sub.add_parser("prepare", help="check that a data set loads and record its splits")
    _add_data_arguments(p, arena=False, compute=False)
    p.add_argument("--out", required=True, type=Path, help="JSON file to write")
    p.set_defaults(func=_cmd_prepare)

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
    p.set_defaults(func=_cmd_collect)

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
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser(
        "feature-net", help="train the sample-quality feature network of a data set in one arena"
    )
    _add_data_arguments(p)
    p.add_argument("--epochs", type=_positive_int("epochs"), default=30, help="training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of its initialisation and batches (default 0)")
    p.add_argument("--out", required=True, type=Path, help="network file (.pt) to write")
    p.add_argument("--facts", required=True, type=Path, help="JSON with its test accuracy")
    p.set_defaults(func=_cmd_feature_net)

    p = sub.add_parser("anchors", help="sample-quality anchors: test vs train images, and uniform noise")
    _add_data_arguments(p)
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument("--k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall")
    p.add_argument("--seed", type=int, default=0, help="seed of the images drawn (default 0)")
    p.add_argument("--out", required=True, type=Path, help="anchors JSON file to write")
    p.set_defaults(func=_cmd_anchors)

    p = sub.add_parser(
        "quality", help="sample quality of a trained run: FID, precision/recall, entropy, grids"
    )
    p.add_argument("--run", required=True, type=Path, help="folder written by vaestudy train")
    p.add_argument("--feature-net", required=True, type=Path, help=FEATURE_NET_HELP)
    p.add_argument("--samples", type=_positive_int("samples"), default=None, help=SAMPLES_HELP)
    p.add_argument("--k", type=_positive_int("k"), default=3, help="nearest neighbours of precision/recall")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the run's seed)")
    _add_compute_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="quality JSON file to write")
    p.add_argument(
        "--figure", type=Path, default=None, help="PNG of test images, reconstructions, means, draws"
    )
    p.set_defaults(func=_cmd_quality)

    p = sub.add_parser("figures", help="the study's seaborn figures from the tidy tables")
    p.add_argument("--summary", required=True, type=Path, help=SUMMARY_HELP)
    p.add_argument("--metrics", required=True, type=Path, help=METRICS_HELP)
    p.add_argument("--history", type=Path, default=None, help="tidy training histories")
    p.add_argument("--out-dir", required=True, type=Path, help="folder of the figures (PNG and SVG)")
    p.set_defaults(func=_cmd_figures)

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
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("reference", help="copy the Markdown report and its figures to a folder kept in git")
    p.add_argument("--results", default="results", type=Path, help="the study's results (default results)")
    p.add_argument(
        "--out",
        default=Path("results/reference"),
        type=Path,
        help="where to copy (default results/reference)",
    )
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser("bench", help="trainer and IWAE against the textbook loop and the matmul rate")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
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
        "(the FLOP rates take the fastest)",
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
        default="auto",
        help="the trainer's step: auto = compiled and captured as CUDA graphs on CUDA, eager on CPU; "
        "graph = captured only; always = compiled (and on CUDA captured); never = eager",
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
    p.add_argument("--threads", type=_positive_int("threads"), default=None, help="CPU threads for torch")
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
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("summary", help="a study's table in the terminal: a row per configuration")
    p.add_argument("results", type=Path, help="results folder (or a kept reference, or a summary.csv)")
    p.add_argument("--arena", default=None, help="this arena's configurations only")
    p.add_argument(
        "--metric", default=None, metavar="M[,M...]", help="the metrics to show (default: the main ones)"
    )
    p.add_argument("--sort", default=None, metavar="M", help="sort by this metric's mean, lowest first")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser(
        "compare",
        help="compare two studies metric by metric; exit status 1 where any differs beyond the tolerance",
    )
    p.add_argument("a", type=Path, help="results folder, kept reference or summary.csv")
    p.add_argument("b", type=Path, help="the one to compare it with")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (default 1e-6)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("families", help="list the decoder likelihood families")
    p.set_defaults(func=_cmd_families)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        if not (sys.argv[1:] if argv is None else argv):  # no command: what the commands are
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        fast.setting()  # a bad VAESTUDY_FAST is said before any work
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        code = args.func(args)
        sys.stdout.flush()  # here, so that a reader that has gone (| head) is met below
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
