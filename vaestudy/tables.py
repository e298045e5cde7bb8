"""Per-model metric JSON files -> the tidy table (one row per run and metric) and its summary."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from vaestudy.errors import UserError, first_line, require
from vaestudy.files import atomic_write_text, read_text
from vaestudy.likelihoods import REGISTRY, family_parameters


def short_name(config: str) -> str:
    """'continuous/gaussian_fixed-s0.1' -> 'gaussian_fixed-s0.1'."""
    return config.split("/", 1)[-1]


def param_columns() -> list[str]:
    """One column per family parameter of the registry (a new family's parameter is a new column)."""
    return list(dict.fromkeys(p for family in REGISTRY for p in family_parameters(family)))


# the columns every table has; the parameter columns are added after `family` (param_columns)
ID_COLUMNS = ["run", "config", "dataset", "arena", "family", "seed"]
FACT_METRICS = (
    "epochs",
    "best_epoch",
    "train_seconds",
    "eval_seconds",
    "peak_memory_mb_train",
    "num_pixels",
    "levels",
)
SUMMARY_KEYS = ["config", "dataset", "arena", "family", "metric"]
# the columns of the tables that write_tables writes, which figures and report read
TABLE_COLUMNS = {
    "metrics": [*ID_COLUMNS, "metric", "value", "status", "diverged_epoch", "normalised", "device"],
    "summary": [*SUMMARY_KEYS, "mean", "std", "ci95_low", "ci95_high", "n", "n_diverged", "normalised"],
    "history": ["epoch", "run", "config", "arena", "seed"],
}


def normalised(value: Any) -> bool | None:
    """A table's `normalised` cell as True, False or None (not stated, as for an anchor), whether it
    holds a bool or the text that a CSV round trip may leave."""
    return {"True": True, "False": False}.get(str(value))


def read_table(path: str | Path, kind: str) -> pd.DataFrame:
    """A table of write_tables (kind: metrics, summary or history), checked for its columns. A
    history without rows is an empty file (a study whose runs kept no history)."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        if kind == "history":
            return pd.DataFrame()
        raise UserError(f"{path} is empty: not a {kind} table of vaestudy collect") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read table {path}: {first_line(exc)}") from None
    missing = [c for c in TABLE_COLUMNS[kind] if c not in table.columns]
    if missing:
        raise UserError(f"{path} is not a {kind} table of vaestudy collect: no column {', '.join(missing)}")
    if kind != "history":  # a table written before a family's parameter existed has no column for it
        for column in param_columns():
            if column not in table.columns:
                table[column] = math.nan
    return table


def _identity(run: str, config: str, dataset: Any, arena: str, family: str, seed: Any, params: dict) -> dict:
    """The identifying columns of a row, with every family parameter's column (None where not set)."""
    ident = {"run": run, "config": config, "dataset": dataset, "arena": arena, "family": family}
    ident.update({p: params.get(p) for p in param_columns()})
    return {**ident, "seed": seed}


@contextmanager
def _fields_of(path: Path, what: str) -> Iterator[None]:
    """Reading the fields of a JSON file: a missing or mistyped one is a user's error, in one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"no field {exc}" if isinstance(exc, KeyError) else first_line(exc)
        raise UserError(f"{path} is not {what}: {detail}") from None


def run_rows(result: dict[str, Any], run: str) -> list[dict[str, Any]]:
    """The tidy rows of one evaluated run."""
    cfg = result["config"]
    params = cfg.get("params", {})
    ident = _identity(
        run, run.rsplit("/", 1)[0], cfg["dataset"], cfg["arena"], cfg["family"], cfg["seed"], params
    )
    shared = {
        "status": result["status"],
        "diverged_epoch": result.get("diverged_epoch"),
        "normalised": result.get("normalised"),
        "device": result.get("device"),
    }
    values = dict(result["metrics"])
    values.update({k: result.get(k) for k in FACT_METRICS})
    return [
        {**ident, "metric": name, "value": (math.nan if value is None else float(value)), **shared}
        for name, value in values.items()
    ]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    require(
        isinstance(value, dict),
        f"cannot read {what} {path}: its JSON is a {type(value).__name__}, not an object",
    )
    return value


def anchor_rows(anchors: dict[str, Any]) -> list[dict[str, Any]]:
    """Sample-quality anchors (test vs train images, uniform noise) as rows of family 'anchor'."""
    rows = []
    for kind, metrics in anchors["anchors"].items():
        name = f"{anchors['arena']}/anchor-{kind}"
        ident = _identity(name, name, anchors["dataset"], anchors["arena"], "anchor", None, {})
        rows += [
            {
                **ident,
                "metric": m,
                "value": float(v),
                "status": "ok",
                "diverged_epoch": None,
                "normalised": None,
                "device": None,
            }
            for m, v in metrics.items()
        ]
    return rows


def collect(
    paths: list[str | Path],
    results_root: str | Path,
    anchors: list[str | Path] = (),
    feature_facts: list[str | Path] = (),
) -> pd.DataFrame:
    """Read results_root/runs/<run>/metrics.json files (and quality.json beside each, where present),
    the anchors and the feature network's accuracy into one tidy frame."""
    rows = []
    root = Path(results_root) / "runs"
    for path in map(Path, paths):
        result = _read_json(path, "metrics file")
        quality = path.parent / "quality.json"
        if quality.is_file():
            quality_metrics = _read_json(quality, "quality file")
            with _fields_of(quality, "a quality file of vaestudy quality"):
                result["metrics"] = {**result["metrics"], **quality_metrics["metrics"]}
        try:
            run = str(path.parent.relative_to(root))
        except ValueError:
            run = str(path.parent)
        with _fields_of(path, "a metrics file of vaestudy evaluate"):
            rows.extend(run_rows(result, run))
    if not rows:
        raise UserError("no metrics files given")
    for path in map(Path, anchors):
        anchors_file = _read_json(path, "anchors file")
        with _fields_of(path, "an anchors file of vaestudy anchors"):
            rows.extend(anchor_rows(anchors_file))
    for path in map(Path, feature_facts):
        facts = _read_json(path, "feature network facts")
        with _fields_of(path, "the facts file of vaestudy feature-net"):
            accuracy, dataset, arena = float(facts["test_accuracy"]), facts.get("dataset"), facts["arena"]
        rows.append(
            {
                **_identity(
                    f"{arena}/feature_net", f"{arena}/feature_net", dataset, arena, "feature_net", None, {}
                ),
                "metric": "feature_net_test_accuracy",
                "value": accuracy,
                "status": "ok",
                "diverged_epoch": None,
                "normalised": None,
                "device": None,
            }
        )
    return pd.DataFrame(rows)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and 95% t-interval over the seeds of each configuration and metric.

    Only runs with status ok enter the statistics; n_diverged counts the others.
    """
    keys = [*SUMMARY_KEYS[:-1], *(c for c in param_columns() if c in metrics.columns), "metric"]
    rows = []
    for key, group in metrics.groupby(keys, dropna=False, sort=False):
        ok = group[group.status == "ok"]["value"].dropna()
        n = len(ok)
        mean = float(ok.mean()) if n else math.nan
        std = float(ok.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "mean": mean,
                "std": std,
                "ci95_low": mean - half,
                "ci95_high": mean + half,
                "n": n,
                "n_diverged": int((group.status != "ok").sum()),
                "normalised": group["normalised"].iloc[0],
            }
        )
    return pd.DataFrame(rows)


def collect_history(paths: list[str | Path], results_root: str | Path) -> pd.DataFrame:
    """The training histories (history.csv beside each metrics.json) as one tidy frame."""
    frames = []
    root = Path(results_root) / "runs"
    for path in map(Path, paths):
        history = path.parent / "history.csv"
        if not history.is_file():
            continue
        try:
            run = str(path.parent.relative_to(root))
        except ValueError:
            run = str(path.parent)
        config, seed = run.rsplit("/", 1)
        frame = pd.read_csv(history)
        frames.append(
            frame.assign(run=run, config=config, arena=run.split("/")[0], seed=int(seed.removeprefix("seed")))
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_tables(
    paths: list[str | Path],
    results_root: str | Path,
    metrics_csv: str | Path,
    summary_csv: str | Path,
    anchors: list[str | Path] = (),
    feature_facts: list[str | Path] = (),
    history_csv: str | Path | None = None,
) -> pd.DataFrame:
    """metrics.csv (tidy), summary.csv (over seeds) and, if asked, history.csv (training curves)."""
    metrics = collect(paths, results_root, anchors, feature_facts)
    atomic_write_text(metrics_csv, metrics.to_csv(index=False))
    atomic_write_text(summary_csv, summarise(metrics).to_csv(index=False))
    if history_csv is not None:
        atomic_write_text(history_csv, collect_history(paths, results_root).to_csv(index=False))
    return metrics


def one_scale(summary: pd.DataFrame) -> pd.DataFrame:
    """Every image model of the continuous and discrete arenas on one scale, the bits per dimension
    of the grey levels, best first: exact for a mass on the levels (discrete arena); for a density on
    dequantised pixels a bound (Theis et al. 2016), its own where normalised, else the calibrated
    Gaussian's. Beside it: diverged seeds, the overfitting gap and the draws' sample quality."""
    models = summary[
        summary.arena.isin(["continuous", "discrete"]) & ~summary.family.isin(["anchor", "feature_net"])
    ]
    means = models.pivot_table(index="config", columns="metric", values="mean", aggfunc="first")
    rows = []
    for config, group in models.groupby("config", sort=False):
        arena, is_normalised = group.arena.iloc[0], normalised(group.normalised.iloc[0])
        row = means.loc[config] if config in means.index else pd.Series(dtype=float)
        if arena == "discrete":
            bpd, measure = row.get("bpd", math.nan), "exact: a mass on the levels"
        elif is_normalised:
            bpd, measure = row.get("bpd", math.nan), "a bound: its density on dequantised pixels"
        else:
            bpd, measure = row.get("calibrated_bpd", math.nan), "a bound: the calibrated Gaussian"
        rows.append(
            {
                "config": config,
                "arena": arena,
                "family": group.family.iloc[0],
                "bpd": bpd,
                "measure": measure,
                "seeds": int((group.n + group.n_diverged).max()),
                "n_diverged": int(group.n_diverged.max()),
                "elbo_gap": row.get("elbo_gap", math.nan),
                "fid_draw": row.get("fid_draw", math.nan),
                "precision_draw": row.get("precision_draw", math.nan),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "config",
            "arena",
            "family",
            "bpd",
            "measure",
            "seeds",
            "n_diverged",
            "elbo_gap",
            "fid_draw",
            "precision_draw",
        ],
    )
    return table.sort_values("bpd", na_position="last", kind="stable").reset_index(drop=True)
