"""Figures, tables and the report texts build from a small synthetic metrics table (with a diverged
run and a missing metric) and contain what they must."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from vaestudy.figures import FIGURES, _label_apart, all_figures
from vaestudy.report import (
    QUESTIONS,
    TABLE_METRICS,
    Numbers,
    answers,
    arena_table,
    f,
    findings_markdown,
    sanity_order,
    write_report,
)
from vaestudy.tables import read_table, summarise

CONFIGS = {  # config -> (family, sigma param, reduction, learned/implied sigma or None, normalised)
    "continuous/gaussian_fixed-s0.01": ("gaussian_fixed", 0.01, None, 0.01, True),
    "continuous/gaussian_fixed-s0.1": ("gaussian_fixed", 0.1, None, 0.1, True),
    "continuous/gaussian_fixed-s1": ("gaussian_fixed", 1.0, None, 1.0, True),
    "continuous/gaussian_shared-f0.001": ("gaussian_shared", None, None, 0.12, True),
    "continuous/gaussian_optimal-f0.001": ("gaussian_optimal", None, None, 0.11, True),
    "continuous/gaussian_heteroscedastic-f0": ("gaussian_heteroscedastic", None, None, None, True),
    "continuous/mse-sum": ("mse", None, "sum", math.sqrt(0.5), True),
    "continuous/mse-mean": ("mse", None, "mean", math.sqrt(32), True),
    "continuous/bernoulli": ("bernoulli", None, None, None, False),
    "continuous/continuous_bernoulli": ("continuous_bernoulli", None, None, None, True),
    "binary/bernoulli": ("bernoulli", None, None, None, True),
}


def synthetic_metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for config, (family, sigma, reduction, own_sigma, normalised) in CONFIGS.items():
        arena = config.split("/")[0]
        for seed in (1, 2, 3):
            s = own_sigma or 0.2
            status = "diverged" if family == "gaussian_heteroscedastic" and seed == 2 else "ok"
            rate = 30 / (1 + 10 * s) + rng.normal(0, 0.3)
            values = {
                "rate": rate,
                "distortion": 50 * s,
                "elbo": -(rate + 50 * s),
                "loss": rate + 50 * s - 3,
                "mse": 0.01 + 0.05 * s,
                "ll_iwae": -(rate + 50 * s) + 2,
                "ll_iwae_k1": -(rate + 50 * s),
                "ll_iwae_k10": -(rate + 50 * s) + 1.5,
                "bpd": 3 + s,
                "active_units": max(0, 8 - 8 * s),
                "fid_mean": 10 + 20 * s,
                "fid_draw": 12 + 40 * s,
                "fid_recon": 3 + s,
                "precision_draw": 0.5,
                "recall_draw": 0.4,
                "num_pixels": 64,
                "levels": 17,
            }
            if own_sigma is not None:
                values["sigma"] = own_sigma
            if arena == "continuous":
                values.update(
                    {
                        "calibrated_bpd": 3.5 + 0.2 * s,
                        "calibrated_elbo": -1 - s,
                        "calibrated_ll_iwae_k1": -1 - s,
                        "calibrated_ll_iwae_k10": -0.5 - s,
                        "calibrated_sigma": 0.15,
                    }
                )
            if config == "continuous/continuous_bernoulli":
                del values["fid_draw"]  # a missing metric
            for metric, value in values.items():
                rows.append(
                    {
                        "run": f"{config}/seed{seed}",
                        "config": config,
                        "dataset": "digits",
                        "arena": arena,
                        "family": family,
                        "sigma": sigma,
                        "reduction": reduction,
                        "floor": None,
                        "seed": seed,
                        "metric": metric,
                        "value": value,
                        "status": status,
                        "diverged_epoch": 7 if status == "diverged" else None,
                        "normalised": normalised,
                        "device": "cpu (test)",
                    }
                )
    for arena in ("continuous", "binary"):
        for kind, fid in (("test", 1.5), ("noise", 90.0)):
            rows.append(
                {
                    "run": f"{arena}/anchor-{kind}",
                    "config": f"{arena}/anchor-{kind}",
                    "dataset": "digits",
                    "arena": arena,
                    "family": "anchor",
                    "metric": "fid",
                    "value": fid,
                    "status": "ok",
                    "normalised": None,
                }
            )
    return pd.DataFrame(rows)


def synthetic_history() -> pd.DataFrame:
    rows = []
    for config in CONFIGS:
        for seed in (1, 2):
            for epoch in range(1, 6):
                rows.append(
                    {
                        "epoch": epoch,
                        "loss": 100 / epoch,
                        "rate": epoch,
                        "distortion": 100 / epoch - epoch,
                        "sigma": 0.1 if "fixed" in config else None,
                        "val_elbo": -100 / epoch,
                        "seconds": 0.1,
                        "run": f"{config}/seed{seed}",
                        "config": config,
                        "arena": config.split("/")[0],
                        "seed": seed,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    metrics = synthetic_metrics()
    summary = summarise(metrics)
    (out / "tables").mkdir()
    metrics.to_csv(out / "tables" / "metrics.csv", index=False)
    summary.to_csv(out / "tables" / "summary.csv", index=False)
    paths = all_figures(summary, metrics, synthetic_history(), out / "figures")
    written = write_report(
        out / "tables" / "summary.csv", out / "tables" / "metrics.csv", out, "seeds: [1, 2, 3]\n"
    )
    return out, paths, written, summary


def test_every_figure_is_written_as_png_and_svg(built):
    out, paths, _, _ = built
    for name in FIGURES:
        for ext in ("png", "svg"):
            path = out / "figures" / f"{name}.{ext}"
            assert path in paths and path.stat().st_size > 5000, path


def test_the_sigma_sweep_names_every_family_and_its_axes(built):
    out, _, _, _ = built
    svg = (out / "figures" / "sigma_sweep.svg").read_text()
    for config in CONFIGS:
        if config.startswith("continuous/") and "gaussian_fixed" not in config:
            assert config.split("/", 1)[1] in svg, config
    assert "sigma of gaussian_fixed" in svg and "active units" in svg and "calibrated bits/dim" in svg


def test_the_diverged_run_is_left_out_of_the_statistics_and_counted(built):
    *_, summary = built
    row = summary[
        (summary.config == "continuous/gaussian_heteroscedastic-f0") & (summary.metric == "rate")
    ].iloc[0]
    assert row.n == 2 and row.n_diverged == 1


def test_tables_sort_by_calibrated_bpd_and_mark_unnormalised_numbers(built):
    *_, summary = built
    table = arena_table(summary, "continuous")
    bpd = [float(v.split(" ")[0]) for v in table.calibrated_bpd]
    assert bpd == sorted(bpd)
    bce = table[table.model == "bernoulli"].iloc[0]
    assert bce.bpd.endswith("*") and bce.elbo.endswith("*") and not bce.calibrated_bpd.endswith("*")
    assert "±" in table.rate.iloc[0]
    assert table[table.model == "gaussian_heteroscedastic-f0"].diverged.iloc[0] == 1
    # a blank where a model has no such metric (the Bernoulli's sigma), never 'nan'; the columns in
    # TABLE_METRICS's order, whichever model sorts first
    assert table[table.model == "bernoulli"].sigma.iloc[0] == ""
    assert not table.map(lambda v: str(v).lower() == "nan").any().any()
    assert list(table.columns) == ["model", "seeds", "diverged", *[m for m in TABLE_METRICS if m in table]]
    first = table.model.iloc[0]
    no_sigma = summary[~((summary.config == f"continuous/{first}") & (summary.metric == "sigma"))]
    assert list(arena_table(no_sigma, "continuous").columns) == list(table.columns)


def test_the_front_page_answers_all_five_questions_from_the_numbers(built):
    out, _, written, summary = built
    text = written["front"].read_text()
    for i in range(1, 6):
        assert f"**Q{i}." in text
    ans = {a.key: a for a in answers(summary)}
    # Q1: the constant between the MSE loss and the implied Gaussian's -ELBO is stated with its value
    assert "continuous/mse-sum" in " ".join(ans["q1"].evidence)
    # Q2: the sweep's end points come from the table
    rate = summary[summary.metric == "rate"].set_index("config")["mean"]
    low, high = f(rate["continuous/gaussian_fixed-s0.01"]), f(rate["continuous/gaussian_fixed-s1"])
    assert f"From sigma 0.01 to 1 the rate falls from {low} to {high} nats" in ans["q2"].short
    # Q3: the divergence of the floor-0 heteroscedastic run is reported
    assert "gaussian_heteroscedastic-f0" in ans["q3"].short
    parts = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})
    assert "Q5." in parts["body"]


def test_the_front_page_is_a_line_per_question_and_the_details_go_to_captions_and_tables(built):
    """The front page fits a screen: one line per question. Each question's per-model evidence is in
    the caption of its first figure; which numbers compare and the run's facts under the tables."""
    out, _, written, summary = built
    front = written["front"].read_text()
    items = [line for line in front.splitlines() if line.startswith("* **Q")]
    assert len(items) == len(QUESTIONS) and all(len(line) < 300 for line in items), items
    assert "git revision" not in front and "Which numbers compare" not in front
    about = (out / "report" / "about.rst").read_text()
    assert (
        "Which numbers compare, and why" in about and "git revision" in about and "seeds: [1, 2, 3]" in about
    )
    for rst in (front, about):
        publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})
    caption = (out / "report" / "conclusions" / "sigma_sweep.rst").read_text()
    assert "**This run (Q1):**" in caption and "* ``continuous/mse-sum``: training loss" in caption


def test_the_markdown_report_has_every_question_figure_and_table(built):
    out, _, written, _ = built
    md = written["report_md"].read_text()
    for i in range(1, 6):
        assert f"## Q{i}." in md
    for name in ("sigma_sweep", "rate_distortion", "sample_quality", "bpd_by_model", "training_loss"):
        assert f"(figures/{name}.png)" in md
        assert (out / "figures" / f"{name}.png").exists()
    assert "## Every model, continuous arena" in md and "## Every model, binary arena" in md
    # the key to `*` under the continuous arena (BCE on grey levels is starred), not the binary one
    continuous, binary = md.split("## Every model, continuous arena")[1].split("## Every model, binary arena")
    assert "`*`: not a normalised density" in continuous and " *" in continuous
    assert "`*`" not in binary.split("## Training curves")[0]
    assert (out / "tables" / "summary.md").read_text().count("|") > 50
    for name in FIGURES:
        assert (out / "report" / "conclusions" / f"{name}.rst").exists()


def test_q3_says_what_the_run_cannot_answer():
    summary = summarise(synthetic_metrics())

    def q3(*kept):
        return {a.key: a for a in answers(summary[summary.config.isin(kept)])}["q3"].short

    # no learned variance at all: says so, and claims nothing about divergence
    short = q3("continuous/gaussian_fixed-s0.1", "continuous/gaussian_fixed-s1")
    assert short == (
        "No configuration with a learned variance (gaussian_shared, gaussian_pixel, gaussian_optimal, "
        "gaussian_heteroscedastic) ran, so this run cannot answer it; the best fixed sigma of the sweep is 0.1 "
        f"(calibrated bpd {f(summary.set_index(['config', 'metric']).loc[('continuous/gaussian_fixed-s0.1', 'calibrated_bpd'), 'mean'])})."
    )
    # only sigma(z) per pixel: no single sigma to 'land' at, and its diverged seed is reported
    short = q3("continuous/gaussian_fixed-s0.1", "continuous/gaussian_heteroscedastic-f0")
    assert short.startswith(
        "The variance learned here is sigma(z) per pixel, no single sigma to set beside the sweep"
    )
    assert "Unstable here: continuous/gaussian_heteroscedastic-f0 (diverged runs)." in short
    assert "lands" not in short


def _diverged(metrics: pd.DataFrame, *configs: str) -> pd.DataFrame:
    """metrics with every seed of these configurations (all where none is named) diverged."""
    metrics = metrics.copy()
    hit = metrics.config.isin(configs) if configs else metrics.family != "anchor"
    metrics.loc[hit, "status"], metrics.loc[hit, "diverged_epoch"] = "diverged", 1
    return metrics


def test_a_study_whose_every_run_diverged_claims_nothing():
    """No answer draws a conclusion from numbers that are not there ('the rate stays from n/a to
    n/a', 'a small difference', 'the variance learned is sigma(z) per pixel' of a shared sigma)."""
    ans = {a.key: a for a in answers(summarise(_diverged(synthetic_metrics())))}
    assert (
        ans["q1"].short
        == "Every `mse` configuration diverged in all its seeds, so this run cannot answer it."
    )
    assert ans["q2"].short.startswith("Fewer than two fixed sigmas have numbers")
    assert ans["q3"].short.startswith("Every learned-variance configuration diverged in all its seeds")
    assert ans["q4"].short == (
        "`continuous/bernoulli` and `continuous/continuous_bernoulli` diverged in all their seeds, so this run "
        "cannot compare the two."
    )
    assert ans["q5"].short == "Every model diverged in all its seeds: no samples to score."
    for a in ans.values():
        assert "n/a" not in a.short + " ".join(a.evidence), a.key
    assert "`continuous/gaussian_shared-f0.001`: diverged in all 3 seeds, no numbers" in ans["q3"].evidence


def test_a_configuration_whose_every_seed_diverged_is_left_out_of_the_answers():
    lost = ("continuous/gaussian_fixed-s0.01", "continuous/gaussian_shared-f0.001", "continuous/mse-mean")
    summary = summarise(_diverged(synthetic_metrics(), *lost))
    ans = {a.key: a for a in answers(summary)}
    rate = summary[summary.metric == "rate"].set_index("config")["mean"]
    low, high = f(rate["continuous/gaussian_fixed-s0.1"]), f(rate["continuous/gaussian_fixed-s1"])
    assert ans["q2"].short.startswith(f"From sigma 0.1 to 1 the rate falls from {low} to {high} nats")
    assert ans["q2"].evidence[-1] == "`continuous/gaussian_fixed-s0.01`: diverged in all 3 seeds, no numbers"
    assert ans["q3"].short.startswith(
        "Learning sigma lands optimal at 0.11;"
    )  # not shared, which has no sigma
    assert "continuous/gaussian_shared-f0.001" in ans["q3"].short.split("Unstable here: ")[1]
    assert "mse-mean" not in ans["q1"].short and "`continuous/mse-sum` minimised" in ans["q1"].short
    assert "`continuous/mse-mean`: diverged in all 3 seeds, no numbers" in ans["q1"].evidence
    assert "`continuous/mse-mean`: diverged in all 3 seeds, no numbers" in ans["q5"].evidence
    for a in ans.values():
        assert "n/a" not in a.short, a.key


def test_a_study_of_the_binary_arena_alone_gives_every_figure_and_answer(tmp_path, recwarn):
    metrics = synthetic_metrics()
    metrics = metrics[metrics.arena == "binary"]
    history = synthetic_history()
    summary = summarise(metrics)
    paths = all_figures(summary, metrics, history[history.arena == "binary"], tmp_path / "figures")
    assert {p.stem for p in paths} == set(FIGURES)
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]  # no empty legends
    ans = {a.key: a.short for a in answers(summary)}
    assert ans["q1"] == "No configuration with `mse` ran, so this run cannot answer it."
    assert ans["q4"] == "This run lacks the Bernoulli or the continuous Bernoulli on grey levels."
    # the continuous arena's table has no rows but reads as a table (it was an empty file)
    (tmp_path / "tables").mkdir()
    metrics.to_csv(tmp_path / "tables" / "metrics.csv", index=False)
    summary.to_csv(tmp_path / "tables" / "summary.csv", index=False)
    write_report(
        tmp_path / "tables" / "summary.csv", tmp_path / "tables" / "metrics.csv", tmp_path, "seeds: [1]\n"
    )
    continuous = pd.read_csv(tmp_path / "tables" / "continuous.csv")
    assert continuous.empty and list(continuous.columns) == ["model", "seeds", "diverged"]
    assert len(pd.read_csv(tmp_path / "tables" / "binary.csv")) == 1
    md = (tmp_path / "tables" / "summary.md").read_text()
    assert "continuous arena" not in md and "binary arena" in md
    assert "`*`" not in md  # the binary Bernoulli is a normalised pmf: no number to mark


def test_labels_of_points_close_together_do_not_overlap():
    """The rate-distortion plane labels every model; coincident models (mse-mean on gaussian_fixed-s1,
    heteroscedastic floors 0 and 0.001) had their labels printed over each other."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig, ax = plt.subplots(figsize=(7, 5))
    points = [(f"model-{i}", 1.0 + 0.01 * (i % 3), 2.0) for i in range(8)] + [("far", 9.0, 9.0)]
    ax.plot([p[1] for p in points], [p[2] for p in points], "o")
    labels = _label_apart(ax, points)
    fig.canvas.draw()  # places every label, lines included
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(note, renderer) for note in labels]  # the texts alone
    assert sorted(note.get_text() for note in labels) == sorted(p[0] for p in points)
    overlapping = [
        (a.get_text(), b.get_text())
        for i, (a, box_a) in enumerate(zip(labels, boxes, strict=True))
        for b, box_b in zip(labels[i + 1 :], boxes[i + 1 :], strict=True)
        if box_a.overlaps(box_b)
    ]
    assert not overlapping
    plt.close(fig)


def test_an_answer_says_where_another_study_disagrees_and_nothing_where_it_agrees():
    summary = summarise(synthetic_metrics())
    alike = answers(summary, summary.copy())
    assert all("disagrees" not in a.short for a in alike)
    assert any("agrees on all" in a.short for a in alike)
    # the other study's best fixed sigma moves from 0.01 to 1: Q2 says so, with both values
    other = synthetic_metrics().assign(dataset="digits")
    moved = (other.config == "continuous/gaussian_fixed-s1") & (other.metric == "calibrated_bpd")
    other.loc[moved, "value"] = 0.0
    q2 = answers(summary.assign(dataset="mnist5k"), summarise(other))[1]
    assert (
        "Where the digits study disagrees: the fixed sigma of the best calibrated bits/dim: 0.01 here, 1 on digits"
        in q2.short
    )


def test_q5_checks_each_arenas_order_of_test_images_best_model_and_noise():
    q5 = answers(summarise(synthetic_metrics()))[4]  # anchors: test images 1.5, uniform noise 90
    # the lowest FID of any model's means or draws: 10 + 20 * 0.01 in the continuous arena, 14 binary
    assert (
        "continuous arena: test images 1.5 < best model (gaussian_fixed-s0.01, means) 10.2 < uniform noise 90"
        in q5.short
    )
    assert "binary arena: test images 1.5 < best model (bernoulli, means) 14 < uniform noise 90" in q5.short
    assert "FID ranks draws worse but precision does not" in q5.short  # no precision of the means here
    assert any("cannot see" in e for e in q5.evidence)


ROOT = Path(__file__).resolve().parents[1]
KEPT = {"digits": ROOT / "results" / "reference", "mnist5k": ROOT / "results" / "reference" / "mnist5k"}


@pytest.mark.parametrize("dataset", sorted(KEPT))
def test_each_kept_reports_feature_spaces_order_test_images_best_model_and_noise(dataset):
    """FID in a feature space worth reading puts test images below the best model's samples, and
    those below uniform noise, in both arenas of both kept studies."""
    summary = read_table(KEPT[dataset] / "tables" / "summary.csv", "summary")
    assert set(summary.dataset.dropna()) == {dataset}
    n = Numbers(summary)
    for arena in ("binary", "continuous"):
        test, (best, config, kind), noise = sanity_order(n, arena)
        assert test < best < noise, (arena, config, kind)


def test_the_kept_mnist5k_report_answers_from_its_own_numbers_against_the_digits():
    mnist5k = read_table(KEPT["mnist5k"] / "tables" / "summary.csv", "summary")
    digits = read_table(KEPT["digits"] / "tables" / "summary.csv", "summary")
    report = (KEPT["mnist5k"] / "report.md").read_text()
    for a in answers(mnist5k, digits):
        assert a.short in report, a.key
    assert "dataset: mnist5k" in report.replace('"', "")


def test_the_readmes_findings_table_is_the_kept_reports_answers():
    digits = read_table(KEPT["digits"] / "tables" / "summary.csv", "summary")
    mnist5k = read_table(KEPT["mnist5k"] / "tables" / "summary.csv", "summary")
    table = findings_markdown(
        {
            "digits (8x8, L = 17)": answers(digits),
            "mnist5k (real MNIST, 28x28, L = 256)": answers(mnist5k, digits),
        }
    )
    readme = (ROOT / "README.md").read_text()
    assert table in readme.split("## Findings")[1].split("\n## ")[0]


@pytest.mark.parametrize("dataset,pixels", [("digits", 64), ("mnist5k", 784)])
def test_each_kept_reports_q1_states_the_closed_form_constant_of_a_summed_mse(dataset, pixels):
    """-ELBO of the Gaussian that a summed MSE implies (sigma^2 = 1/2) is the loss plus (D/2) ln(pi)."""
    summary = read_table(KEPT[dataset] / "tables" / "summary.csv", "summary")
    q1 = answers(summary)[0]
    assert f"its -ELBO the loss plus {f(pixels / 2 * math.log(math.pi), 5)} nats" in q1.line


def test_the_run_facts_say_whether_the_installed_versions_are_the_locked_ones(tmp_path):
    from importlib.metadata import version

    from vaestudy.report import lock_status

    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# pins\nnumpy=={version('numpy')}\npandas=={version('pandas')}\n")
    assert lock_status(lock) == "requirements.lock: every pinned version installed"
    lock.write_text(f"numpy=={version('numpy')}\npandas==0.0.1\nno-such-package==1.0\n")
    assert lock_status(lock) == (
        f"requirements.lock: 2 differ: pandas {version('pandas')} (locked 0.0.1), "
        "no-such-package not installed (locked 1.0)"
    )
    # the repository's own lock pins every package that vaestudy names in its report
    pinned = (ROOT / "requirements.lock").read_text()
    for name in ("torch", "snakemake", "pandas", "numpy", "scipy", "seaborn", "mlxtend"):
        assert f"\n{name}==" in pinned, name


def _linear_rows(sigma: float, counted: float, predicted: int, iwae_gap: float) -> list[dict]:
    """A linear ground-truth configuration's rows (three seeds alike), with eight rates per unit."""
    values = {
        "ll_exact": 40.0,
        "ll_iwae": 40.0 + iwae_gap,
        "elbo": 38.0,
        "iwae_minus_exact": iwae_gap,
        "elbo_minus_exact": -2.0,
        "ll_exact_ppca": 40.5,
        "active_units": counted,
        "active_units_exact": predicted,
        "sigma": sigma,
        **{f"rate_unit_{j}": 1.0 / j if j <= predicted else 0.001 * (9 - j) for j in range(1, 9)},
    }
    return _seed_rows(f"linear/gaussian_fixed-s{sigma:g}", "gaussian_fixed", values, sigma=sigma)


def _seed_rows(config: str, family: str, values: dict, sigma=None) -> list[dict]:
    """Tidy rows of one configuration, its three seeds alike: `values` per metric, status ok."""
    return [
        {
            "run": f"{config}/seed{seed}",
            "config": config,
            "dataset": "digits",
            "arena": config.split("/")[0],
            "family": family,
            "sigma": sigma,
            "reduction": None,
            "floor": None,
            "seed": seed,
            "metric": metric,
            "value": value,
            "status": "ok",
            "diverged_epoch": None,
            "normalised": True,
            "device": "cpu (test)",
        }
        for seed in (1, 2, 3)
        for metric, value in values.items()
    ]


def test_q6_states_each_instruments_error_and_names_a_count_that_misses_its_prediction(tmp_path):
    rows = _linear_rows(0.3, 8, 8, -0.01) + _linear_rows(0.7, 5, 2, -0.04)
    summary = summarise(pd.concat([synthetic_metrics(), pd.DataFrame(rows)], ignore_index=True))
    q6 = answers(summary)[5]
    assert q6.key == "q6" and q6.figures == ["ground_truth"]
    assert (
        "IWAE lies within 0.04 nats per image of the exact log-likelihood (largest at sigma 0.7)" in q6.short
    )
    assert "the ELBO lies 2 to 2 nats below it" in q6.short
    assert "at 1 of 2 sigmas" in q6.short
    assert "no latent beyond the prediction carries more than 0.006 nats (its rate)" in q6.short
    # the latents beyond the prediction at sigma 0.7: the third carries 0.001 * (9 - 3) nats
    assert (
        "sigma 0.7: 5 counted against 2 predicted; the strongest unit beyond the prediction carries 0.006"
        in q6.short
    )
    assert "linear/gaussian_fixed-s0.3" in " ".join(q6.evidence)
    paths = all_figures(summary, summary, synthetic_history(), tmp_path)
    assert tmp_path / "ground_truth.png" in paths
    table = arena_table(summary, "linear")
    assert list(table.model) == ["gaussian_fixed-s0.3", "gaussian_fixed-s0.7"] and "ll_exact" in table
    # without linear models the question says that this run cannot measure its instruments
    assert "cannot measure its own instruments" in answers(summarise(synthetic_metrics()))[5].short


def _discrete_rows(config, family, bpd, gap, precision):
    values = {
        "bpd": bpd,
        "elbo_gap": gap,
        "precision_draw": precision,
        "fid_draw": 5.0,
        "levels": 17,
        "num_pixels": 64,
        "elbo": -10.0,
    }
    return _seed_rows(config, family, values)


def test_q7_ranks_every_family_on_one_scale_with_its_failures_and_sample_quality(tmp_path):
    rows = _discrete_rows("discrete/discretised_logistic", "discretised_logistic", 2.5, 7.0, 0.9)
    rows += _discrete_rows("discrete/discretised_gaussian", "discretised_gaussian", 2.8, 1.0, 0.6)
    summary = summarise(pd.concat([synthetic_metrics(), pd.DataFrame(rows)], ignore_index=True))
    q7 = answers(summary)[6]
    assert q7.key == "q7" and q7.figures == ["one_scale"]
    # exact bpd for the masses; for the continuous arena the own bpd where normalised (gaussian_fixed-s0.01:
    # 3 + 0.01), else the calibrated one (the Bernoulli on grey levels: 3.5 + 0.2 * 0.2)
    assert (
        "the bits per dimension of the 17 grey levels, `discretised_logistic` ranks first of 12 at 2.5 bits/dim "
        "(exact: a mass on the levels)" in q7.short
    )
    assert (
        "The best density on dequantised pixels, `gaussian_fixed-s0.01`, scores 3.01 (a bound), 0.51 bits/dim"
        in q7.short
    )
    assert "`gaussian_heteroscedastic-f0` diverged in 1 of 3 seeds" in q7.short
    # the gaps in bits/dim: 7 and 1 nats over 64 pixels
    assert (
        "overfitting, the largest train-test ELBO gaps: `discretised_logistic` 0.16, `discretised_gaussian` 0.023 "
        "bits/dim (the median model's 0.09)" in q7.short
    )
    assert (
        "In the discrete arena the model that leads on likelihood, `discretised_logistic`, also draws within 0.02 of "
        "the best precision" in q7.short
    )
    ranked = [line.split("`")[1] for line in q7.evidence if line[0].isdigit()]
    assert ranked[:3] == [
        "discrete/discretised_logistic",
        "discrete/discretised_gaussian",
        "continuous/gaussian_fixed-s0.01",
    ]
    assert "continuous/bernoulli" in ranked and "binary/bernoulli" not in ranked  # binary: other data
    assert "3.54 bits/dim, a bound: the calibrated Gaussian" in " ".join(q7.evidence)
    assert (
        q7.line
        == "`discretised_logistic` first at 2.5 bits/dim (exact); the best density, `gaussian_fixed-s0.01`, 3.01 (a bound)."
    )
    paths = all_figures(summary, summary, synthetic_history(), tmp_path)
    assert tmp_path / "one_scale.png" in paths
    rows = _discrete_rows("discrete/discretised_logistic", "discretised_logistic", 2.5, 7.0, 0.9)
    rows += _discrete_rows("discrete/discretised_gaussian", "discretised_gaussian", 2.8, 1.0, 0.95)
    summary = summarise(pd.concat([synthetic_metrics(), pd.DataFrame(rows)], ignore_index=True))
    assert (
        "In the discrete arena likelihood and samples disagree: `discretised_logistic` leads on bits/dim, "
        "`discretised_gaussian` on the precision of its draws (0.95 against 0.9" in answers(summary)[6].short
    )


def test_every_figure_is_named_once_made_placed_and_captioned():
    from vaestudy.report import FIGURE_PLACES

    assert set(FIGURES) == set(FIGURE_PLACES)
    for name, (key, _) in FIGURE_PLACES.items():
        assert key in QUESTIONS or key == "training", name
        assert (ROOT / "workflow" / "report" / f"{name}.rst").is_file(), name


def test_a_normalised_cell_reads_the_same_before_and_after_a_csv_round_trip(tmp_path):
    from vaestudy.tables import normalised

    frame = pd.DataFrame({"normalised": [True, False, None]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    read = pd.read_csv(tmp_path / "t.csv")
    for cells in (frame.normalised, read.normalised, ["True", "False", math.nan]):
        assert [normalised(c) for c in cells] == [True, False, None]
    assert normalised(np.True_) is True and normalised(np.False_) is False
