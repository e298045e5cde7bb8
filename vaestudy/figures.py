"""Seaborn figures of the study, one figure a file (PNG and SVG), from the tidy tables.

Every function takes the tables as DataFrames and a path stem, and writes `<stem>.png` and
`<stem>.svg`. Missing metrics or families leave a panel empty with a note, never an error.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from vaestudy.tables import normalised, one_scale  # noqa: E402
from vaestudy.tables import short_name as label  # noqa: E402

SWEEP = "gaussian_fixed"
LABELS = {
    "rate": "rate KL(q||p) [nats]",
    "distortion": "distortion -E log p(x|z) [nats]",
    "mse": "MSE of the decoder mean [per pixel]",
    "active_units": "active units",
    "calibrated_bpd": "calibrated bits/dim",
    "bpd": "bits/dim (own likelihood)",
    "fid_mean": "FID of decoder means",
    "fid_draw": "FID of true draws",
    "ll_iwae": "log-likelihood (IWAE) [nats]",
}
SWEEP_PANELS = ("rate", "distortion", "mse", "active_units", "calibrated_bpd", "fid_mean", "fid_draw")


def _save(fig, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def _label_apart(ax, points: list[tuple[str, float, float]], fontsize: int = 7) -> list:
    """Label each point (text, x, y) to its right; where the label would overlap one placed before,
    move it up or down by whole lines (a thin line then joins it to its point). Returns the labels."""
    ax.figure.canvas.draw()  # the axes' limits as drawn: the labels' places depend on them
    renderer = ax.figure.canvas.get_renderer()
    step = 1.4 * fontsize  # points: a label is about fontsize high, so lines this far apart never touch
    shifts = [3 + step * k for n in range(len(points)) for k in ((-n, n) if n else (0,))]  # nearest first

    def note(text, x, y, shift, line=False):
        return ax.annotate(
            text,
            (x, y),
            xytext=(4, shift),
            textcoords="offset points",
            fontsize=fontsize,
            va="bottom",
            arrowprops=dict(arrowstyle="-", lw=0.4, color="grey", shrinkA=0, shrinkB=2) if line else None,
        )

    placed, labels = [], []
    for text, x, y in sorted(points, key=lambda p: (-p[2], p[1])):  # from the top
        for shift in shifts:
            trial = note(text, x, y, shift)  # measured without its line, whose box would count
            box = trial.get_window_extent(renderer)
            trial.remove()
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
        labels.append(note(text, x, y, shift, line=shift != shifts[0]))
    return labels


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def _palette(n: int) -> list:
    """Colours for n lines of one panel that stay apart up to 20 (seaborn's default ones blur
    into each other beyond ten)."""
    return sns.color_palette("tab20", n)


def _legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes, where it covers no line or bar."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, **kwargs)


def _means(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = summary[(summary.metric == metric) & summary["mean"].notna()]
    return rows.set_index("config")


def sigma_sweep(
    summary: pd.DataFrame, stem: str | Path, panels=SWEEP_PANELS, arena: str = "continuous"
) -> list[Path]:
    """Each metric against the fixed sigma (log axis, 95% intervals over seeds). Families with a
    sigma (learned, fitted or implied, as the `sigma` metric) are points at that sigma; the others
    are labelled horizontal lines."""
    s = summary[summary.arena == arena]
    sigma_of = _means(s, "sigma")["mean"]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    palette = dict(
        zip(
            sorted(set(s.config) - set(s[s.family == SWEEP].config)),
            sns.color_palette("tab10", 20),
            strict=False,
        )
    )
    for ax, metric in zip(axes.flat, panels, strict=False):
        m = _means(s, metric)
        sweep = m[m.family == SWEEP].sort_values("sigma")
        ax.set_xscale("log")
        ax.set_title(LABELS.get(metric, metric), fontsize=10)
        ax.set_xlabel("sigma of gaussian_fixed")
        if m.empty:
            _empty(ax, f"no {metric}")
            continue
        if not sweep.empty:
            ax.plot(sweep.sigma, sweep["mean"], "o-", color="black", label="gaussian_fixed sweep", zorder=3)
            ax.fill_between(sweep.sigma, sweep.ci95_low, sweep.ci95_high, color="black", alpha=0.15, lw=0)
        for config, row in m[m.family != SWEEP].iterrows():
            color = palette.get(config, "grey")
            if config in sigma_of.index and np.isfinite(sigma_of[config]):
                yerr = None
                if np.isfinite(row.ci95_low):
                    yerr = [[row["mean"] - row.ci95_low], [row.ci95_high - row["mean"]]]
                ax.errorbar(
                    [sigma_of[config]],
                    [row["mean"]],
                    yerr=yerr,
                    fmt="D",
                    color=color,
                    label=label(config),
                    ms=6,
                )
            else:
                ax.axhline(row["mean"], ls="--", lw=1, color=color, label=label(config))
        if metric in ("distortion",) and (m["mean"].abs().max() > 1e3):
            ax.set_yscale("symlog")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels_ = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels_ = list(handles)
    fig.legend(
        [handles[k] for k in labels_],
        labels_,
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02 - 0.025 * math.ceil(len(labels_) / 4)),
    )
    fig.suptitle(
        f"The sigma sweep ({arena} arena): points sit at each model's learned, fitted or implied sigma; "
        "dashed lines have none",
        fontsize=11,
    )
    fig.tight_layout()
    return _save(fig, stem)


def rate_distortion(summary: pd.DataFrame, stem: str | Path, arena: str = "continuous") -> list[Path]:
    """The rate-MSE plane: every configuration's mean rate against the MSE of its decoder mean."""
    s = summary[summary.arena == arena]
    rate, mse = _means(s, "rate"), _means(s, "mse")
    both = rate[["mean", "family"]].join(mse[["mean"]].rename(columns={"mean": "mean_mse"}), how="inner")
    fig, ax = plt.subplots(figsize=(7, 5))
    if both.empty:
        _empty(ax)
    else:
        sweep = both[both.family == SWEEP].join(_means(s, "rate")[["sigma"]]).sort_values("sigma")
        ax.plot(sweep["mean"], sweep["mean_mse"], "-", color="black", alpha=0.5, label="gaussian_fixed sweep")
        sns.scatterplot(
            data=both.reset_index(), x="mean", y="mean_mse", hue="family", style="family", s=70, ax=ax
        )
        _label_apart(ax, [(label(c), row["mean"], row["mean_mse"]) for c, row in both.iterrows()])
    ax.set_xlabel("rate KL(q(z|x) || p(z)) [nats per image]")
    ax.set_ylabel("MSE of the decoder mean [per pixel]")
    ax.set_title(f"Rate against distortion ({arena} arena)")
    if not both.empty:  # an empty plane has nothing to label
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, stem)


def iwae_convergence(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """The importance-weighted bound against K: the calibrated Gaussian in the continuous arena (one
    scale for all), the model's own likelihood in the binary arena."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (arena, prefix) in zip(
        axes, (("continuous", "calibrated_ll_iwae_k"), ("binary", "ll_iwae_k")), strict=True
    ):
        s = summary[(summary.arena == arena) & summary.metric.str.startswith(prefix)].copy()
        s = s[s.metric.str.fullmatch(re.escape(prefix) + r"\d+")]
        if s.empty:
            _empty(ax, f"no {arena} models")
        else:
            s["K"] = s.metric.str.slice(len(prefix)).astype(int)
            s["model"] = s.config.map(label)
            # up to 14 models in one panel: colours that differ, a marker each, the legend below the lines
            models = list(dict.fromkeys(s.model))
            sns.lineplot(
                data=s,
                x="K",
                y="mean",
                hue="model",
                style="model",
                markers=True,
                dashes=False,
                palette=_palette(len(models)),
                ax=ax,
            )
            ax.set_xscale("log")
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        ax.set_ylabel("log-likelihood bound L_K [nats per image]")
        ax.set_title(f"IWAE bound against K ({arena}{', calibrated' if arena == 'continuous' else ''})")
    fig.tight_layout()
    return _save(fig, stem)


def _family(config: str) -> str:
    """'continuous/gaussian_fixed-s0.1' -> 'gaussian_fixed' (a run's family, its parameters cut off)."""
    return label(config).split("-", 1)[0]


def training_curve(history: pd.DataFrame, column: str, stem: str | Path) -> list[Path]:
    """One training-history column against epoch: a panel per arena and family (small multiples), a
    line per configuration in it (mean and normal 95% band over seeds)."""
    h = history[history[column].notna()] if column in history else history.iloc[0:0]
    if h.empty:
        fig, ax = plt.subplots(figsize=(9, 5))
        _empty(ax, f"no {column} in the training history")
        ax.set_title(f"Training: {column} per epoch (mean over seeds)")
        return _save(fig, stem)
    h = h.assign(panel=[f"{c.split('/')[0]}: {_family(c)}" for c in h.config], model=h.config.map(label))
    panels = list(dict.fromkeys(sorted(h.panel, key=lambda p: (not p.startswith("binary"), p))))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        p = h[h.panel == panel]
        # mean and 1.96 standard errors over seeds per epoch, aggregated once (seaborn's lineplot took
        # most of the figures' time on the default study's 24 configurations)
        stats = p.groupby(["model", "epoch"], sort=False)[column].agg(["mean", "sem"]).reset_index()
        for model, t in stats.groupby("model", sort=False):
            (line,) = ax.plot(t.epoch, t["mean"], lw=1, label=model)
            band = 1.96 * t["sem"].fillna(0)
            ax.fill_between(
                t.epoch, t["mean"] - band, t["mean"] + band, color=line.get_color(), alpha=0.2, lw=0
            )
        values = p[column].abs()
        if column == "sigma":
            ax.set_yscale("log")
        elif values.max() > 100 * max(values.median(), 1e-9):
            ax.set_yscale("symlog", linthresh=10)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(column if ax in axes[:, 0] else "", fontsize=8)
        ax.tick_params(labelsize=7)
        if p.model.nunique() > 1:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"Training: {column} per epoch, a panel per family (mean over seeds, 95% band)")
    fig.tight_layout()
    return _save(fig, stem)


def active_units(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Active units against sigma: posterior collapse as sigma grows."""
    return sigma_sweep(summary, stem, panels=("active_units",))


def sample_quality(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """FID of decoder means, true draws and reconstructions per configuration, with the anchors."""
    s = summary[summary.metric.isin(["fid_mean", "fid_draw", "fid_recon"]) & summary["mean"].notna()].copy()
    fig, ax = plt.subplots(figsize=(10, 0.35 * max(len(set(s.config)), 4) + 1.5))
    if s.empty:
        _empty(ax)
    else:
        s["model"] = s.config
        s["kind"] = s.metric.str.replace("fid_", "", regex=False)
        sns.barplot(data=s, y="model", x="mean", hue="kind", ax=ax, orient="h")
        anchors = summary[(summary.family == "anchor") & (summary.metric == "fid")]
        for _, row in anchors.iterrows():  # in the legend with their values: labels on the plot collided
            ax.axvline(
                row["mean"],
                ls=":" if row.config.endswith("test") else "--",
                color="black" if row.arena == "binary" else "grey",
                lw=1,
                label=f"{row.config} ({row['mean']:.3g})",
            )
        ax.set_xscale("symlog", linthresh=1)
        _legend_outside(ax)
    ax.set_xlabel("FID in the feature network's space (lower is closer to the training images)")
    ax.set_title("What is a sample? Decoder means against true draws from p(x|z)")
    return _save(fig, stem)


def _log_axis_with_values(ax, values: pd.Series) -> None:
    """A log axis and every bar's value: a sigma of 0.01 at tens of bits/dim would flatten the rest."""
    ax.set_xscale("log" if (values > 0).all() else "symlog")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3g", fontsize=6, padding=2)
    _legend_outside(ax)


def bpd_by_model(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Calibrated bits/dim (continuous) and own bits/dim per configuration; unnormalised marked."""
    s = summary[
        summary.metric.isin(["calibrated_bpd", "bpd"])
        & summary["mean"].notna()
        & (summary.family != "anchor")
    ].copy()
    fig, ax = plt.subplots(figsize=(10, 0.35 * max(len(set(s.config)), 4) + 1.5))
    if s.empty:
        _empty(ax)
    else:
        s["model"] = [
            c + ("  (not normalised)" if normalised(n) is False else "")
            for c, n in zip(s.config, s.normalised, strict=True)
        ]
        sns.barplot(data=s, y="model", x="mean", hue="metric", ax=ax, orient="h")
        _log_axis_with_values(ax, s["mean"])
    ax.set_xlabel("bits per dimension of the discrete data (lower is better; log axis)")
    ax.set_title("One scale: the calibrated Gaussian against each model's own likelihood")
    return _save(fig, stem)


def one_scale_figure(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Every image model of the continuous and discrete arenas on the bits per dimension of the grey
    levels, best first: exact masses and dequantised bounds told apart by colour."""
    t = one_scale(summary).dropna(subset=["bpd"])
    fig, ax = plt.subplots(figsize=(10, 0.3 * max(len(t), 4) + 1.5))
    if t.empty:
        _empty(ax)
    else:
        t = t.assign(model=t.config.map(label), kind=t.measure)
        sns.barplot(data=t, y="model", x="bpd", hue="kind", dodge=False, ax=ax, orient="h")
        _log_axis_with_values(ax, t.bpd)
    ax.set_xlabel("bits per dimension of the grey levels (lower is better; log axis)")
    ax.set_title("What should I use for 8-bit images? Every family on one scale")
    return _save(fig, stem)


def ground_truth(summary: pd.DataFrame, stem: str | Path) -> list[Path]:
    """The linear arena against its exact answers, per sigma: exact, IWAE, ELBO and pPCA-optimum
    log-likelihoods; each estimate's gap to the exact one; counted against predicted active units;
    the rate of each latent, largest first."""
    s = summary[(summary.arena == "linear") & (summary.family == "gaussian_fixed")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    title = "Ground truth: linear Gaussian models against their exact answers (means over seeds)"
    if s.empty or "ll_exact" not in set(s.metric):
        for ax in axes.flat:
            _empty(ax, "no linear ground-truth models in this run")
        fig.suptitle(title)
        return _save(fig, stem)

    def per_sigma(metric: str) -> pd.DataFrame:
        return _means(s, metric).assign(s=lambda t: t.sigma.astype(float)).sort_values("s")

    sigmas = sorted(per_sigma("ll_exact").s)
    (lls, gaps), (units, rates) = axes
    for metric, name in (
        ("ll_exact", "exact"),
        ("ll_iwae", "IWAE"),
        ("elbo", "ELBO"),
        ("ll_exact_ppca", "pPCA optimum"),
    ):
        t = per_sigma(metric)
        lls.plot(t.s, t["mean"], marker="o", lw=1, label=name)
    lls.set(ylabel="log-likelihood (nats per image)", title="log p(x) of the test images")
    exact = per_sigma("ll_exact").set_index("s")["mean"]
    optimum = per_sigma("ll_exact_ppca").set_index("s")["mean"]
    for metric, name in (("iwae_minus_exact", "IWAE - exact"), ("elbo_minus_exact", "ELBO - exact")):
        t = per_sigma(metric)
        gaps.plot(t.s, t["mean"], marker="o", lw=1, label=name)
    gaps.plot(exact.index, exact - optimum, marker="s", ls="--", lw=1, label="trained - optimum (exact)")
    gaps.axhline(0, color="black", lw=0.6)
    gaps.set_yscale("symlog", linthresh=0.01)
    gaps.set(ylabel="nats per image", title="Each estimate's error, and training's distance to the optimum")
    counted, predicted = per_sigma("active_units"), per_sigma("active_units_exact")
    low = (counted["mean"] - counted.ci95_low).fillna(0).clip(lower=0)
    high = (counted.ci95_high - counted["mean"]).fillna(0).clip(lower=0)
    units.errorbar(
        counted.s, counted["mean"], yerr=[low, high], marker="o", capsize=3, label="counted (var E[z] > 0.01)"
    )
    units.plot(predicted.s, predicted["mean"], marker="s", ls="--", label="predicted (eigenvalues > sigma^2)")
    units.set(ylabel="active units", title="Active units")
    for ax in (lls, gaps, units):
        ax.set_xscale("log")
        ax.set_xticks(sigmas, [f"{v:g}" for v in sigmas])
        ax.minorticks_off()
        ax.set_xlabel("sigma")
        ax.legend(fontsize=7)
    rate = s[s.metric.str.startswith("rate_unit_")].assign(
        unit=lambda t: t.metric.str.removeprefix("rate_unit_").astype(int), s=lambda t: t.sigma.astype(float)
    )
    for value, t in rate.groupby("s"):
        t = t.sort_values("unit")
        rates.plot(t.unit, t["mean"].clip(lower=1e-4), marker="o", lw=1, label=f"sigma {value:g}")
    rates.set(yscale="log", xlabel="latent, by its rate (largest first)", ylabel="KL to the prior (nats)")
    rates.set_title("Rate per latent: a reading without a threshold")
    rates.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, stem)


FIGURES = {
    "sigma_sweep": lambda s, m, h, stem: sigma_sweep(s, stem),
    "rate_distortion": lambda s, m, h, stem: rate_distortion(s, stem),
    "iwae_convergence": lambda s, m, h, stem: iwae_convergence(s, stem),
    "active_units": lambda s, m, h, stem: active_units(s, stem),
    "sample_quality": lambda s, m, h, stem: sample_quality(s, stem),
    "bpd_by_model": lambda s, m, h, stem: bpd_by_model(s, stem),
    "ground_truth": lambda s, m, h, stem: ground_truth(s, stem),
    "one_scale": lambda s, m, h, stem: one_scale_figure(s, stem),
    "training_loss": lambda s, m, h, stem: training_curve(h, "loss", stem),
    "training_rate": lambda s, m, h, stem: training_curve(h, "rate", stem),
    "training_distortion": lambda s, m, h, stem: training_curve(h, "distortion", stem),
    "training_sigma": lambda s, m, h, stem: training_curve(h, "sigma", stem),
}


def all_figures(
    summary: pd.DataFrame, metrics: pd.DataFrame, history: pd.DataFrame, folder: str | Path
) -> list[Path]:
    """Every figure of FIGURES into folder/<name>.png and .svg."""
    paths = []
    for name, make in FIGURES.items():
        paths += make(summary, metrics, history, Path(folder) / name)
    return paths
