"""What each vaestudy command does, given its parsed arguments (vaestudy.cli builds the parser).

Heavy modules are imported inside the command that needs them, so that `vaestudy families` or a
mistake in the arguments answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaestudy.config import run_config_from_args
from vaestudy.errors import UserError, require
from vaestudy.files import check_output_folder, read_text, read_yaml
from vaestudy.runs import check_outputs, quality_of_run, train_run


def cmd_train(args: argparse.Namespace) -> None:
    train_run(run_config_from_args(args), args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vaestudy.evaluate import evaluate

    check_outputs(args.out)
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


def cmd_model(args: argparse.Namespace) -> None:
    from vaestudy.runs import Scoring, model_job

    require(
        args.seeds is None or args.seed is None,
        f"--seed {args.seed} and --seeds {','.join(map(str, args.seeds or []))} together: give one of them",
    )
    scoring = Scoring(
        args.k, args.elbo_samples, args.max_elements, args.feature_net, args.samples, args.quality_k
    )
    config = run_config_from_args(args)
    model_job(config, [config.seed] if args.seeds is None else args.seeds, args.out, args.figure, scoring)


def cmd_prepare(args: argparse.Namespace) -> None:
    from vaestudy.data import load_levels, make_splits
    from vaestudy.files import atomic_write_json

    check_outputs(args.out)

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


def cmd_collect(args: argparse.Namespace) -> None:
    from vaestudy.tables import write_tables

    check_outputs(args.metrics_csv, args.summary_csv, args.history_csv)

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


def cmd_study(args: argparse.Namespace) -> None:
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


def cmd_feature_net(args: argparse.Namespace) -> None:
    from vaestudy.files import atomic_write_json
    from vaestudy.quality import save_feature_net, train_feature_net

    check_outputs(args.out, args.facts)

    data = _data_from_args(args, args.arena)
    net, facts = train_feature_net(data, epochs=args.epochs, seed=args.seed)
    facts["dataset"] = args.dataset
    save_feature_net(net, facts, args.out)
    atomic_write_json(args.facts, facts)
    print(f"feature network for {args.dataset}: test accuracy {facts['test_accuracy']:.4f} -> {args.out}")


def cmd_anchors(args: argparse.Namespace) -> None:
    from vaestudy.files import atomic_write_json
    from vaestudy.quality import anchors, load_feature_net

    check_outputs(args.out)

    data = _data_from_args(args, args.arena)
    net = load_feature_net(args.feature_net, data.device, args.arena)
    result = anchors(net, data, args.samples, args.seed, args.k)
    atomic_write_json(
        args.out, {"dataset": args.dataset, "arena": args.arena, "anchors": result, "k": args.k}
    )
    print(f"anchors {args.arena}: " + ", ".join(f"fid_{k} {v['fid']:.3f}" for k, v in result.items()))


def cmd_quality(args: argparse.Namespace) -> None:
    check_outputs(args.out, args.figure)
    quality_of_run(
        args.run, args.feature_net, args.samples, args.k, args.seed, args.device, args.out, args.figure
    )


def cmd_figures(args: argparse.Namespace) -> None:
    import pandas as pd

    from vaestudy.figures import all_figures
    from vaestudy.tables import read_table

    check_output_folder(args.out_dir)
    history = read_table(args.history, "history") if args.history else pd.DataFrame()
    summary, metrics = read_table(args.summary, "summary"), read_table(args.metrics, "metrics")
    paths = all_figures(summary, metrics, history, args.out_dir)
    print(f"{len(paths)} figure files -> {args.out_dir}")


def cmd_report(args: argparse.Namespace) -> None:
    from vaestudy.report import write_report

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


def cmd_reference(args: argparse.Namespace) -> None:
    from vaestudy.report import copy_reference

    copied = copy_reference(args.results, args.out)
    print(f"{len(copied)} files -> {args.out}")


def cmd_bench(args: argparse.Namespace) -> None:
    from vaestudy.bench import check_train_images, format_table, pipeline_rows, run_bench, write_rows
    from vaestudy.runtime import resolve_device

    check_outputs(args.out)
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


def cmd_summary(args: argparse.Namespace) -> None:
    from vaestudy.compare import format_table, read_summary, summary_table

    metrics = [m for m in (args.metric or "").split(",") if m] or None
    print(format_table(summary_table(read_summary(args.results), args.arena, metrics, args.sort)))


def cmd_compare(args: argparse.Namespace) -> int:
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


def cmd_families(args: argparse.Namespace) -> None:
    from vaestudy.likelihoods import REGISTRY, family_parameters

    rows = []
    for name, cls in REGISTRY.items():
        params = ", ".join(f"{k}={v}" for k, v in family_parameters(name).items()) or "-"
        doc = next(iter((cls.__doc__ or "").strip().splitlines()), "")  # a family may have no docstring
        rows.append((name, ",".join(cls.arenas), params, doc))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, arenas, params, doc in rows:
        print(f"{name:{widths[0]}s}  arenas: {arenas:{widths[1]}s}  params: {params:{widths[2]}s}  {doc}")
