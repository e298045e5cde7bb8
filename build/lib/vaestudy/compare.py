"""A study's table in the terminal, and two studies compared metric by metric within a tolerance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from vaestudy.errors import require
from vaestudy.tables import read_table

# run facts that time or place a run: never compared, since they differ between any two runs
TIMING = ("train_seconds", "eval_seconds", "peak_memory_mb_train")
SHOWN = (
    "calibrated_bpd",
    "bpd",
    "ll_iwae",
    "elbo",
    "rate",
    "active_units",
    "elbo_gap",
    "fid_mean",
    "fid_draw",
)


def read_summary(path: str | Path) -> pd.DataFrame:
    """summary.csv of a results folder (RESULTS/tables/summary.csv), a kept reference, or the file itself."""
    path = Path(path)
    csv = path / "tables" / "summary.csv" if path.is_dir() else path
    require(csv.is_file(), f"{path} has no tables/summary.csv: run the study first, or name the file")
    return read_table(csv, "summary")


def summary_table(
    summary: pd.DataFrame, arena: str | None = None, metrics: list[str] | None = None, sort: str | None = None
) -> pd.DataFrame:
    """One row per configuration, a column per metric (its mean over seeds), sorted by `sort`."""
    s = summary[~summary.family.isin(["anchor", "feature_net"])]
    if arena is not None:
        arenas = sorted(s.arena.dropna().unique())
        require(arena in arenas, f"no arena {arena!r} in this study (it has: {', '.join(arenas)})")
        s = s[s.arena == arena]
    known = list(dict.fromkeys(s.metric))
    wanted = metrics or [m for m in SHOWN if m in known]
    unknown = [m for m in wanted + ([sort] if sort else []) if m not in known]
    require(
        not unknown, f"no metric {', '.join(map(repr, unknown))} in this study (it has: {', '.join(known)})"
    )
    table = s[s.metric.isin(wanted)].pivot_table(index="config", columns="metric", values="mean", sort=False)
    table = table[[m for m in wanted if m in table.columns]]
    table.insert(0, "seeds", s.groupby("config")["n"].max().reindex(table.index).astype(int))
    if sort:
        order = s[s.metric == sort].set_index("config")["mean"].reindex(table.index)
        table = table.loc[order.sort_values(na_position="last").index]
    return table


def format_table(table: pd.DataFrame) -> str:
    """The table as aligned text, numbers to 4 significant digits."""

    def cell(v) -> str:
        if isinstance(v, float):
            return "n/a" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)

    rows = [["config", *map(str, table.columns)]] + [
        [str(i), *map(cell, r)] for i, r in zip(table.index, table.values, strict=True)
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(
            v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)


def compare(a: pd.DataFrame, b: pd.DataFrame, rtol: float, atol: float) -> pd.DataFrame:
    """Every (config, metric) mean of study a against study b: within tolerance where
    |a - b| <= atol + rtol |b| (numpy.isclose), both missing (NaN) counting as equal; a value that one
    study lacks is a difference. Timing facts are left out."""
    key = ["config", "metric"]
    left = a[~a.metric.isin(TIMING)].groupby(key)["mean"].first().rename("a")
    right = b[~b.metric.isin(TIMING)].groupby(key)["mean"].first().rename("b")
    both = pd.concat([left, right], axis=1)
    both["in_a"], both["in_b"] = both.index.isin(left.index), both.index.isin(right.index)
    x, y = both["a"].to_numpy(float), both["b"].to_numpy(float)
    both["difference"] = x - y
    both["within"] = np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True) & both.in_a & both.in_b
    return both.reset_index()


def describe(row) -> str:
    """One line for a (config, metric) outside the tolerance."""
    if not row.in_a:
        return f"{row.config}  {row.metric}: only in B ({row.b:.6g})"
    if not row.in_b:
        return f"{row.config}  {row.metric}: only in A ({row.a:.6g})"
    return f"{row.config}  {row.metric}: {row.a:.6g} in A, {row.b:.6g} in B (difference {row.difference:.3g})"
