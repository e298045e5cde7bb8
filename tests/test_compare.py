"""`vaestudy summary` prints a study's table; `vaestudy compare` finds every value beyond a tolerance."""

import math
import shutil

import pandas as pd
import pytest
from test_report import synthetic_metrics

from vaestudy.cli import main
from vaestudy.compare import compare, summary_table
from vaestudy.tables import summarise


@pytest.fixture
def study(tmp_path):
    """A results folder with the synthetic study's summary.csv."""
    (tmp_path / "a" / "tables").mkdir(parents=True)
    summarise(synthetic_metrics()).to_csv(tmp_path / "a" / "tables" / "summary.csv", index=False)
    return tmp_path / "a"


def test_the_summary_has_a_row_per_configuration_sorted_and_filtered(study):
    summary = pd.read_csv(study / "tables" / "summary.csv")
    table = summary_table(
        summary, arena="continuous", metrics=["rate", "calibrated_bpd"], sort="calibrated_bpd"
    )
    assert list(table.columns) == ["seeds", "rate", "calibrated_bpd"]
    assert table.calibrated_bpd.is_monotonic_increasing and all(
        c.startswith("continuous/") for c in table.index
    )
    expected = summary[(summary.config == "continuous/mse-sum") & (summary.metric == "rate")]["mean"].iloc[0]
    assert table.loc["continuous/mse-sum", "rate"] == expected
    assert table.loc["continuous/gaussian_heteroscedastic-f0", "seeds"] == 2  # one of three diverged


def test_vaestudy_summary_prints_it_and_refuses_an_unknown_metric_in_one_line(study, capsys):
    assert main(["summary", str(study), "--metric", "rate,elbo", "--sort", "rate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["config", "seeds", "rate", "elbo"] and len(lines) == 1 + 11
    assert main(["summary", str(study), "--metric", "fid_magic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no metric 'fid_magic'" in err[0]


def test_compare_flags_exactly_the_values_beyond_the_tolerance(study):
    a = pd.read_csv(study / "tables" / "summary.csv")
    b = a.copy()
    assert compare(a, b, rtol=0, atol=0).within.all()
    row = (b.config == "continuous/gaussian_fixed-s0.1") & (b.metric == "rate")
    b.loc[row, "mean"] *= 1.01
    b.loc[b.metric == "train_seconds", "mean"] += 100  # timing: never compared
    dropped = (b.config == "binary/bernoulli") & (b.metric == "bpd")
    out = compare(a, b[~dropped], rtol=1e-3, atol=0)
    flagged = out[~out.within].set_index(["config", "metric"])
    assert set(flagged.index) == {("continuous/gaussian_fixed-s0.1", "rate"), ("binary/bernoulli", "bpd")}
    assert (
        flagged.loc[("binary/bernoulli", "bpd"), "in_a"]
        and not flagged.loc[("binary/bernoulli", "bpd"), "in_b"]
    )
    # within a looser tolerance the changed rate passes: |a - b| <= atol + rtol |b|
    assert ("continuous/gaussian_fixed-s0.1", "rate") not in set(
        compare(a, b[~dropped], rtol=0.02, atol=0).query("not within").set_index(["config", "metric"]).index
    )
    assert math.isnan(out.set_index(["config", "metric"]).loc[("binary/bernoulli", "bpd"), "b"])


def test_vaestudy_compare_exits_1_on_a_doctored_study_and_0_on_a_copy(study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    assert main(["compare", str(study), str(copy)]) == 0
    assert capsys.readouterr().out.strip().endswith("0 outside the tolerance")
    doctored = pd.read_csv(copy / "tables" / "summary.csv")
    doctored.loc[(doctored.config == "continuous/mse-sum") & (doctored.metric == "elbo"), "mean"] += 1
    doctored.to_csv(copy / "tables" / "summary.csv", index=False)
    assert main(["compare", str(study), str(copy)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("continuous/mse-sum  elbo: ") and out[-1].endswith("1 outside the tolerance")
    assert main(["compare", str(study), str(tmp_path / "nowhere")]) == 2
    assert "has no tables/summary.csv" in capsys.readouterr().err
