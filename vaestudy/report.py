"""The study's answers, written from this run's numbers, and the report texts around the figures.

`write_report` turns the tidy tables into: the front page of the Snakemake report (reStructuredText
that the report includes), one conclusion per figure, per-arena tables in CSV and Markdown, and a
self-contained Markdown report (`results/report.md`) that reads on GitHub.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vaestudy.errors import require
from vaestudy.files import atomic_write_text, check_output_folder
from vaestudy.tables import normalised as is_normalised
from vaestudy.tables import one_scale, short_name

QUESTIONS = {
    "q1": "Does the decoder have to define a distribution, or is an image plus MSE enough?",
    "q2": "How does a fixed Gaussian sigma change the model?",
    "q3": "Does learning the variance fix the choice of sigma?",
    "q4": "How much does the missing constant of BCE on grey levels matter?",
    "q5": "What do samples mean: the decoder mean or a draw from p(x|z)?",
    "q6": "How far can these numbers be trusted?",
    "q7": "What should I use for 8-bit images?",
}


# the HTML report's category of each question's figures and tables (workflow/rules/common.smk)
CATEGORY = {
    "q1": "Q1. Is MSE enough?",
    "q2": "Q2. The fixed sigma",
    "q3": "Q3. Learned variance",
    "q4": "Q4. BCE on grey levels",
    "q5": "Q5. What is a sample?",
    "q6": "Q6. Ground truth",
    "q7": "Q7. 8-bit images",
}
# every figure: the question it belongs to (its key in CATEGORY, else Training) and its subcategory in
# the HTML report. vaestudy.figures.FIGURES makes them; workflow/report/<name>.rst holds each caption.
FIGURE_PLACES = {
    "rate_distortion": ("q1", "rate and distortion"),
    "sigma_sweep": ("q2", "the sweep"),
    "active_units": ("q2", "posterior collapse"),
    "training_sigma": ("q3", "sigma during training"),
    "bpd_by_model": ("q4", "one scale"),
    "iwae_convergence": ("q4", "IWAE against K"),
    "sample_quality": ("q5", "scores"),
    "ground_truth": ("q6", "exact answers"),
    "one_scale": ("q7", "one scale"),
    "training_loss": ("training", "curves"),
    "training_rate": ("training", "curves"),
    "training_distortion": ("training", "curves"),
}
# the arenas of images (not the linear ground truth), in the order the answers name them
IMAGE_ARENAS = ("continuous", "binary", "discrete")


@dataclass
class Answer:
    key: str
    question: str
    short: str  # one or two sentences, from the numbers
    evidence: list[str]  # bullet points with the numbers
    figures: list[str]  # figure names that show it
    headline: str = (
        ""  # one line for the front page and the README's findings ("" : the short's first sentence)
    )

    @property
    def line(self) -> str:
        return self.headline or self.short.split(". ")[0].rstrip(".") + "."


class Numbers:
    """Means over seeds from summary.csv, looked up by (config, metric)."""

    def __init__(self, summary: pd.DataFrame):
        self.summary = summary
        self.table = summary.set_index(["config", "metric"])

    def get(self, config: str, metric: str) -> float:
        try:
            value = self.table.loc[(config, metric), "mean"]
        except KeyError:
            return math.nan
        return float(value.iloc[0] if isinstance(value, pd.Series) else value)

    def has(self, config: str) -> bool:
        return config in set(self.summary.config)

    def configs_of_arena(self, arena: str) -> list[str]:
        s = self.summary[(self.summary.arena == arena) & ~self.summary.family.isin(["anchor", "feature_net"])]
        return list(dict.fromkeys(s.config))

    def configs(self, family: str, arena: str = "continuous") -> list[str]:
        s = self.summary[(self.summary.family == family) & (self.summary.arena == arena)]
        return list(dict.fromkeys(s.config))

    def diverged(self, config: str) -> int:
        rows = self.summary[self.summary.config == config]
        return int(rows.n_diverged.max()) if len(rows) else 0

    def seeds(self, config: str) -> int:
        rows = self.summary[self.summary.config == config]
        return int((rows.n + rows.n_diverged).max()) if len(rows) else 0

    def scored(self, config: str) -> bool:
        """Whether the configuration has numbers: at least one seed did not diverge."""
        rows = self.summary[self.summary.config == config]
        return bool(len(rows)) and int(rows.n.max()) > 0

    def lost(self, config: str) -> str:
        """The evidence line of a configuration without numbers."""
        seeds = self.seeds(config)
        return f"`{config}`: diverged in {'its one seed' if seeds == 1 else f'all {seeds} seeds'}, no numbers"


def f(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"


def _sweep(n: Numbers, scored: bool = True) -> list[tuple[float, str]]:
    """(sigma, config) of the fixed-sigma sweep: the configurations with numbers (scored=True), or
    those whose every seed diverged (scored=False)."""
    s = n.summary[(n.summary.family == "gaussian_fixed") & (n.summary.arena == "continuous")]
    return sorted({(float(r.sigma), r.config) for r in s.itertuples() if n.scored(r.config) == scored})


def _best(n: Numbers, candidates: list[tuple[float, str]], metric: str) -> tuple[float, str] | None:
    """The (sigma, config) of the lowest finite metric, None if none has it."""
    finite = [sc for sc in candidates if math.isfinite(n.get(sc[1], metric))]
    return min(finite, key=lambda sc: n.get(sc[1], metric)) if finite else None


def answer_q1(n: Numbers) -> Answer:
    ev, short = [], "No configuration with `mse` ran, so this run cannot answer it."
    sweep = _sweep(n)
    mse = [c for c in n.configs("mse") if n.scored(c)]
    d = n.get(next(iter(mse), ""), "num_pixels")
    ev += [n.lost(c) for c in n.configs("mse") if not n.scored(c)]
    for config in mse:
        loss, elbo = n.get(config, "loss"), n.get(config, "elbo")
        sigma, rate, au = n.get(config, "sigma"), n.get(config, "rate"), n.get(config, "active_units")
        reduction = "sum" if config.endswith("sum") else "mean"
        constant = d / 2 * math.log(math.pi * (1 if reduction == "sum" else d))
        ev.append(
            f"`{config}`: training loss {f(loss, 5)} nats; read as the Gaussian it implies (sigma = {f(sigma)}), "
            f"-ELBO = {f(-elbo, 5)} = loss + {f(-elbo - loss, 5)}; the constant (D/2) ln(pi{'' if reduction == 'sum' else ' D'}) "
            f"= {f(constant, 5)}. Rate {f(rate)} nats, {f(au)} active units."
        )
    if sweep:
        ev.append(
            "The fixed-sigma sweep for comparison: "
            + "; ".join(
                f"sigma {f(s)}: rate {f(n.get(c, 'rate'))}, {f(n.get(c, 'active_units'))} active units"
                for s, c in sweep
            )
        )
    ev += [n.lost(c) for _, c in _sweep(n, scored=False)]
    if n.configs("mse") and not mse:
        short = "Every `mse` configuration diverged in all its seeds, so this run cannot answer it."
    if mse:
        parts = []
        for config in mse:
            loss, elbo, sigma = n.get(config, "loss"), n.get(config, "elbo"), n.get(config, "sigma")
            part = (
                f"`{config}` minimised a loss of {f(loss, 5)} nats; the Gaussian with sigma {f(sigma)} it implies has "
                f"-ELBO {f(-elbo, 5)}, the loss plus the constant {f(-elbo - loss, 5)}"
            )
            below = [sc for sc in sweep if sc[0] <= sigma]
            above = [sc for sc in sweep if sc[0] > sigma]
            rate = f"its rate is {f(n.get(config, 'rate'))} nats"
            if below and above:
                (s0, c0), (s1, c1) = below[-1], above[0]
                part += (
                    f"; {rate}, against {f(n.get(c0, 'rate'))} at sigma {f(s0)} and {f(n.get(c1, 'rate'))} at "
                    f"sigma {f(s1)} on the sweep"
                )
            elif below:
                part += f"; {rate}, beyond the sweep's largest sigma {f(below[-1][0])} ({f(n.get(below[-1][1], 'rate'))})"
            parts.append(part)
        short = (
            "An image plus MSE always defines a distribution: the MSE loss is, up to a constant, the negative ELBO "
            "of a Gaussian decoder with a fixed sigma (sigma^2 = 1/2 for a summed MSE, D/2 for a mean over pixels). "
            "In this run, " + "; ".join(parts) + "."
        )
    headline = ""
    if mse:
        c = mse[0]
        headline = (
            f"Yes in effect: MSE is a Gaussian with a fixed sigma; `{short_name(c)}` is sigma {f(n.get(c, 'sigma'))}, "
            f"its -ELBO the loss plus {f(-n.get(c, 'elbo') - n.get(c, 'loss'), 5)} nats."
        )
    return Answer("q1", QUESTIONS["q1"], short, ev, ["sigma_sweep", "rate_distortion"], headline)


def answer_q2(n: Numbers) -> Answer:
    sweep, lost = _sweep(n), [n.lost(c) for _, c in _sweep(n, scored=False)]
    if len(sweep) < 2:
        short = (
            "The config has fewer than two fixed sigmas: no sweep to read."
            if not lost
            else "Fewer than two fixed sigmas have numbers (the rest diverged in all their seeds): no sweep to read."
        )
        return Answer("q2", QUESTIONS["q2"], short, lost, ["sigma_sweep"])
    lo, hi = sweep[0], sweep[-1]
    metric = lambda c, m: n.get(c, m)  # noqa: E731
    best_bpd, best_fid = _best(n, sweep, "calibrated_bpd"), _best(n, sweep, "fid_mean")

    def moves(m: str, plural: bool = False) -> str:
        a, b = metric(lo[1], m), metric(hi[1], m)
        verb = ("rise" if b > a else "fall" if b < a else "stay") + ("" if plural else "s")
        return f"{verb} from {f(a)} to {f(b)}"

    beta_like = metric(hi[1], "rate") < metric(lo[1], "rate") and metric(hi[1], "mse") > metric(lo[1], "mse")
    best = []  # only where some sigma has the number (a study without sample quality has no FID)
    if best_bpd:
        best.append(
            f"the best calibrated bits/dim is at sigma {f(best_bpd[0])} ({f(metric(best_bpd[1], 'calibrated_bpd'))})"
        )
    if best_fid:
        best.append(f"decoder means look most like the data (lowest FID) at sigma {f(best_fid[0])}")
    best_text = "; ".join(best)
    short = (
        f"From sigma {f(lo[0])} to {f(hi[0])} the rate {moves('rate')} nats, the MSE of the decoder mean "
        f"{moves('mse')} and the active units {moves('active_units', plural=True)}"
        + (": 2 sigma^2 acts as the beta of a beta-VAE." if beta_like else ".")
        + (f" {best_text[0].upper()}{best_text[1:]}." if best else "")
    )
    ev = [
        f"sigma {f(s)}: rate {f(metric(c, 'rate'))}, MSE {f(metric(c, 'mse'))}, active units {f(metric(c, 'active_units'))}, "
        f"calibrated bpd {f(metric(c, 'calibrated_bpd'))}, FID means {f(metric(c, 'fid_mean'))}, FID draws {f(metric(c, 'fid_draw'))}"
        for s, c in sweep
    ] + lost
    headline = (
        f"From sigma {f(lo[0])} to {f(hi[0])} the rate {moves('rate')} nats and the active units "
        f"{moves('active_units', plural=True)}"
        + (f"; the best calibrated bits/dim is at sigma {f(best_bpd[0])}" if best_bpd else "")
        + "."
    )
    return Answer(
        "q2", QUESTIONS["q2"], short, ev, ["sigma_sweep", "active_units", "rate_distortion"], headline
    )


LEARNED_VARIANCE = ("gaussian_shared", "gaussian_pixel", "gaussian_optimal", "gaussian_heteroscedastic")


def answer_q3(n: Numbers) -> Answer:
    best = _best(n, _sweep(n), "calibrated_bpd")
    ev, landed, unstable = [], [], []
    learned = [(family, config) for family in LEARNED_VARIANCE for config in n.configs(family)]
    for family, config in learned:
        if not n.scored(config):
            ev.append(n.lost(config))
            unstable.append(config)
            continue
        sigma, bpd = n.get(config, "sigma"), n.get(config, "calibrated_bpd")
        div, seeds = n.diverged(config), n.seeds(config)
        where = f"sigma {f(sigma)}" if math.isfinite(sigma) else "sigma(z) per pixel"
        ev.append(
            f"`{config}`: {where}, calibrated bpd {f(bpd)}, own bpd {f(n.get(config, 'bpd'))}, rate {f(n.get(config, 'rate'))}, "
            f"{'diverged in ' + str(div) + ' of ' + str(seeds) + ' seeds' if div else 'no divergence'}, "
            f"std of ll_iwae over seeds {f(float(n.summary[(n.summary.config == config) & (n.summary.metric == 'll_iwae')]['std'].max()))}"
        )
        if math.isfinite(sigma):
            landed.append(f"{family.removeprefix('gaussian_')} at {f(sigma)}")
        if div:
            unstable.append(config)
    if not learned:
        short = f"No configuration with a learned variance ({', '.join(LEARNED_VARIANCE)}) ran, so this run cannot answer it"
    elif landed:
        short = "Learning sigma lands " + ", ".join(landed)
    elif any(n.scored(config) for _, config in learned):
        short = "The variance learned here is sigma(z) per pixel, no single sigma to set beside the sweep"
    else:
        short = (
            "Every learned-variance configuration diverged in all its seeds: no sigma to set beside the sweep"
        )
    if best:
        short += f"; the best fixed sigma of the sweep is {f(best[0])} (calibrated bpd {f(n.get(best[1], 'calibrated_bpd'))})"
    short += "."
    gaps = [(n.get(c, "elbo_gap"), c) for c in n.configs_of_arena("continuous") if n.scored(c)]
    gaps = [g for g in gaps if math.isfinite(g[0])]
    if gaps:
        top, config = max(gaps)
        short += (
            f" Memorising shows as the gap between the training and the test ELBO: largest for `{config}`, "
            f"{f(top)} nats per image (best validation epoch {f(n.get(config, 'best_epoch'))} of "
            f"{f(n.get(config, 'epochs'))} trained)."
        )
        ev += [
            f"`{c}`: training minus test ELBO {f(g)} nats, best validation epoch {f(n.get(c, 'best_epoch'))}"
            for g, c in sorted(gaps, reverse=True)
        ]
    if learned:
        short += " " + (
            f"Unstable here: {', '.join(unstable)} (diverged runs)."
            if unstable
            else "No learned-variance run diverged on this data; a floor of 0 on the heteroscedastic variance is the risky "
            "one (its density can grow without bound where a pixel never varies)."
        )
    headline = "Learning sigma lands " + ", ".join(landed) if landed else short.split(". ")[0].split(";")[0]
    if unstable:
        headline += f"; unstable: {', '.join(short_name(c) for c in unstable)}"
    if gaps:
        headline += f"; the largest train-test ELBO gap is {f(top)} nats ({short_name(config)})"
    return Answer(
        "q3", QUESTIONS["q3"], short, ev, ["sigma_sweep", "training_sigma", "bpd_by_model"], headline + "."
    )


def answer_q4(n: Numbers) -> Answer:
    b, cb = "continuous/bernoulli", "continuous/continuous_bernoulli"
    if not (n.has(b) and n.has(cb)):
        return Answer(
            "q4",
            QUESTIONS["q4"],
            "This run lacks the Bernoulli or the continuous Bernoulli on grey levels.",
            [],
            ["bpd_by_model"],
        )
    lost = [c for c in (b, cb) if not n.scored(c)]
    if lost:
        return Answer(
            "q4",
            QUESTIONS["q4"],
            " and ".join(f"`{c}`" for c in lost)
            + f" diverged in all {'its' if len(lost) == 1 else 'their'} seeds, so this run cannot compare the two.",
            [n.lost(c) for c in lost],
            ["bpd_by_model"],
        )
    gap = n.get(cb, "elbo") - n.get(b, "elbo")
    short = (
        f"BCE against grey levels reports an 'ELBO' of {f(n.get(b, 'elbo'))} nats, but it is not a density (marked as not "
        f"normalised); a continuous Bernoulli decoder (the same Bernoulli form with its normaliser) reaches {f(n.get(cb, 'elbo'))} "
        f"nats: {f(gap)} nats per image apart"
        + (
            ", so the missing constant is not a detail. "
            if abs(gap) > 1
            else ", a small difference on this data. "
        )
        + f"On one scale (the calibrated Gaussian) they score {f(n.get(b, 'calibrated_bpd'))} and "
        f"{f(n.get(cb, 'calibrated_bpd'))} bits/dim."
    )
    ev = [
        f"`{c}`: ELBO {f(n.get(c, 'elbo'))}, own bpd {f(n.get(c, 'bpd'))}, calibrated bpd {f(n.get(c, 'calibrated_bpd'))}, "
        f"MSE {f(n.get(c, 'mse'))}, FID means {f(n.get(c, 'fid_mean'))}"
        for c in (b, cb)
    ]
    if n.has("binary/bernoulli"):
        ev.append(
            f"`binary/bernoulli` (its natural home, a normalised pmf): ELBO {f(n.get('binary/bernoulli', 'elbo'))}, "
            f"bpd {f(n.get('binary/bernoulli', 'bpd'))} on binarised data (a different data set: not comparable)."
        )
    headline = (
        f"BCE's 'ELBO' ({f(n.get(b, 'elbo'))} nats) is no density's: the continuous Bernoulli's is {f(n.get(cb, 'elbo'))}; "
        f"on one scale {f(n.get(b, 'calibrated_bpd'))} against {f(n.get(cb, 'calibrated_bpd'))} bits/dim."
    )
    return Answer("q4", QUESTIONS["q4"], short, ev, ["bpd_by_model", "iwae_convergence"], headline)


FEATURE_LIMITS = (
    "What these scores cannot see: the features are those of a classifier of this data set in this arena, so "
    "they keep what tells the classes apart and drop much of the rest (pixel-level noise among it); FID fits "
    "Gaussians to those features from a few hundred or thousand images and is biased upwards for small sets; "
    "precision and recall with k nearest neighbours move with the number of images; and none of them measures a "
    "likelihood or notices a model that copies its training images."
)


def _arena_models(n: Numbers, arena: str) -> list[str]:
    return [c for c in n.configs_of_arena(arena) if n.scored(c) and math.isfinite(n.get(c, "fid_mean"))]


def sanity_order(n: Numbers, arena: str) -> tuple[float, tuple[float, str, str], float] | None:
    """(FID of test images, (FID, model, kind) of the best model's samples, FID of uniform noise) of an
    arena: a feature space worth reading orders them test < best model < noise."""
    test, noise = n.get(f"{arena}/anchor-test", "fid"), n.get(f"{arena}/anchor-noise", "fid")
    scored = [
        (n.get(c, f"fid_{kind}"), c, kind) for c in _arena_models(n, arena) for kind in ("mean", "draw")
    ]
    scored = [s for s in scored if math.isfinite(s[0])]
    if not scored or not (math.isfinite(test) and math.isfinite(noise)):
        return None
    return test, min(scored), noise


def _means_and_draws(n: Numbers) -> tuple[list[str], list[tuple[str, float, float]]]:
    """The image arenas' models, and (model, FID of means, FID of draws) of those with scores."""
    models = [c for arena in IMAGE_ARENAS for c in n.configs_of_arena(arena)]
    scored = [c for arena in IMAGE_ARENAS for c in _arena_models(n, arena)]
    return models, [
        (c, n.get(c, "fid_mean"), n.get(c, "fid_draw")) for c in scored if math.isfinite(n.get(c, "fid_draw"))
    ]


def _q5_anchors(n: Numbers) -> tuple[list[str], list[str], dict[str, bool]]:
    """Each arena's anchors as evidence lines, and whether its feature space orders test images <
    best model < uniform noise (the sentences, and arena -> holds)."""
    lines, order_text, in_order = [], [], {}
    for arena in IMAGE_ARENAS:
        for kind in ("test", "noise"):
            c = f"{arena}/anchor-{kind}"
            if n.has(c):
                precision = n.get(c, "precision")
                lines.append(
                    f"anchor `{c}`: FID {f(n.get(c, 'fid'))}"
                    + (f", precision {f(precision)}" if math.isfinite(precision) else "")
                )
        order = sanity_order(n, arena)
        if order is not None:
            test, (best, config, kind), noise = order
            holds = in_order[arena] = test < best < noise
            order_text.append(
                f"{arena} arena: test images {f(test)} < best model ({config.split('/', 1)[1]}, {kind}s) "
                f"{f(best)} < uniform noise {f(noise)}" + ("" if holds else " does NOT hold")
            )
    return lines, order_text, in_order


def _q5_carry(models: int, worse: int, precise: int) -> str:
    """Which of FID and precision carries Q5's conclusion, given in how many of the models draws
    score a worse FID and a lower precision than means."""
    fid_says, precision_says = worse > models / 2, precise > models / 2
    recall = "Recall only says how much of the data's variety the samples cover. "
    if fid_says and precision_says:
        carry = (
            "FID and precision agree and carry this conclusion: most draws lie off the data's manifold, with pixel "
            "noise that the images do not have. " + recall
        )
    elif precision_says:
        carry = (
            f"Precision, which measures fidelity alone, carries the conclusion that draws look less like the data "
            f"({precise} of {models}). FID mixes fidelity with diversity: it rewards the spread that pixel "
            f"noise adds and punishes means that all look alike (a collapsed model's), so it ranks draws better in "
            f"{models - worse} of {models} and cannot settle this question alone. " + recall
        )
    elif fid_says:
        carry = (
            "FID ranks draws worse but precision does not, so the draws cover the data less well without lying "
            "further off its manifold. " + recall
        )
    else:
        carry = "Neither FID nor precision finds draws worse in most models on this data. " + recall
    return carry


def answer_q5(n: Numbers) -> Answer:
    models, rows = _means_and_draws(n)
    ev = [
        f"`{c}`: FID of decoder means {f(m)}, of true draws {f(d)}, precision {f(n.get(c, 'precision_mean'))} / "
        f"{f(n.get(c, 'precision_draw'))}, recall {f(n.get(c, 'recall_mean'))} / {f(n.get(c, 'recall_draw'))}"
        for c, m, d in rows
    ]
    anchors, order_text, in_order = _q5_anchors(n)
    ev += anchors
    lost = [c for c in models if not n.scored(c)]
    ev = [n.lost(c) for c in lost] + ev + [FEATURE_LIMITS]
    if not rows:
        short = (
            "Every model diverged in all its seeds: no samples to score."
            if models and len(lost) == len(models)
            else "No sample-quality scores in this run."
        )
        return Answer("q5", QUESTIONS["q5"], short, ev, ["sample_quality"])
    worse = [c for c, m, d in rows if d > m]
    precise = [c for c, _, _ in rows if n.get(c, "precision_draw") < n.get(c, "precision_mean")]
    recalled = [c for c, _, _ in rows if n.get(c, "recall_draw") > n.get(c, "recall_mean")]
    gap = max(rows, key=lambda r: abs(r[2] - r[1]))
    carry = _q5_carry(len(rows), len(worse), len(precise))
    short = (
        f"Tutorials show E[x|z]; the model defines x ~ p(x|z), and the two are scored apart here, each arena in the "
        f"features of a classifier trained on that arena's images. For the same z, true draws score a worse (higher) "
        f"FID than decoder means in {len(worse)} of {len(rows)} models and a lower precision in {len(precise)} of "
        f"{len(rows)}; their recall is higher in {len(recalled)} of {len(rows)}. The largest difference: `{gap[0]}`, "
        f"FID {f(gap[1])} for means against {f(gap[2])} for draws. "
        + carry
        + (
            "The feature space orders its anchors as it should: " + "; ".join(order_text) + ". "
            if order_text
            else ""
        )
        + "What the scores cannot see is listed below."
    )
    headline = (
        f"Draws score a worse FID than means in {len(worse)} of {len(rows)} models and a lower precision in "
        f"{len(precise)}"
        + (
            "; "
            + ("each arena's" if len(in_order) > 1 else "the")
            + " feature space orders test images < best model < noise"
            if in_order and all(in_order.values())
            else "".join(
                f"; the {arena} feature space does NOT order test < best model < noise"
                for arena, ok in in_order.items()
                if not ok
            )
        )
        + "."
    )
    return Answer("q5", QUESTIONS["q5"], short, ev, ["sample_quality"], headline)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def verdicts(n: Numbers) -> dict[str, dict[str, str]]:
    """Per question, the run's findings as short values that can be set against another study's."""
    v: dict[str, dict[str, str]] = {q: {} for q in QUESTIONS}
    for c in n.configs("mse"):
        if n.scored(c):
            v["q1"][f"`{short_name(c)}` keeps an active unit"] = _yes(n.get(c, "active_units") >= 1)
    sweep = _sweep(n)
    if len(sweep) >= 2:
        for metric, what in (("calibrated_bpd", "calibrated bits/dim"), ("fid_mean", "FID of decoder means")):
            best = _best(n, sweep, metric)
            if best:
                v["q2"][f"the fixed sigma of the best {what}"] = f(best[0])
        lo, hi = sweep[0][1], sweep[-1][1]
        v["q2"]["the rate falls as sigma grows"] = _yes(n.get(hi, "rate") < n.get(lo, "rate"))
    learned = [c for family in LEARNED_VARIANCE for c in n.configs(family)]
    if learned:
        v["q3"]["learned-variance models that diverged"] = (
            ", ".join(short_name(c) for c in learned if n.diverged(c)) or "none"
        )
        best = [(n.get(c, "calibrated_bpd"), c) for c in learned if n.scored(c)]
        best = [b for b in best if math.isfinite(b[0])]
        if best:
            v["q3"]["the best learned variance (calibrated bits/dim)"] = short_name(min(best)[1])
    b, cb = "continuous/bernoulli", "continuous/continuous_bernoulli"
    if n.scored(b) and n.scored(cb):
        gap = n.get(cb, "elbo") - n.get(b, "elbo")
        v["q4"]["the continuous Bernoulli's ELBO against BCE's"] = (
            "within 1 nat" if abs(gap) <= 1 else "above" if gap > 0 else "below"
        )
        v["q4"]["the better of the two on calibrated bits/dim"] = short_name(
            min((n.get(c, "calibrated_bpd"), c) for c in (b, cb))[1]
        )
    rows = [c for c, _, _ in _means_and_draws(n)[1]]
    if rows:
        worse = sum(n.get(c, "fid_draw") > n.get(c, "fid_mean") for c in rows)
        v["q5"]["draws score a worse FID than means in most models"] = _yes(worse > len(rows) / 2)
        lower = sum(n.get(c, "precision_draw") < n.get(c, "precision_mean") for c in rows)
        v["q5"]["draws score a lower precision than means in most models"] = _yes(lower > len(rows) / 2)
        orders = [sanity_order(n, arena) for arena in IMAGE_ARENAS]
        orders = [o for o in orders if o is not None]
        if orders:
            v["q5"]["FID orders test images < best model < noise"] = _yes(
                all(o[0] < o[1][0] < o[2] for o in orders)
            )
    linear = [c for c in n.configs("gaussian_fixed", "linear") if n.scored(c)]
    if linear:
        worst = max(abs(n.get(c, "iwae_minus_exact")) for c in linear)
        v["q6"]["IWAE within 0.1 nats of the exact log-likelihood"] = _yes(worst <= 0.1)
        v["q6"]["the active units as predicted at every sigma"] = _yes(
            all(round(n.get(c, "active_units")) == n.get(c, "active_units_exact") for c in linear)
        )
    ranked = one_scale(n.summary).dropna(subset=["bpd"])
    if len(ranked):
        v["q7"]["the family first on one scale"] = short_name(ranked.config.iloc[0])
        v["q7"]["a mass on the levels ranks first"] = _yes(ranked.arena.iloc[0] == "discrete")
    return v


def comparison(mine: dict[str, str], theirs: dict[str, str], label: str) -> str:
    """One sentence: where this run's findings differ from another study's, and how many agree."""
    shared = [k for k in mine if k in theirs]
    if not shared:
        return ""
    differ = [k for k in shared if mine[k] != theirs[k]]
    same = len(shared) - len(differ)
    if not differ:
        return f"The {label} study agrees on all {same} of these findings."
    text = "; ".join(f"{k}: {mine[k]} here, {theirs[k]} on {label}" for k in differ)
    return f"Where the {label} study disagrees: {text}" + (
        f" (it agrees on the other {same})." if same else "."
    )


def answer_q6(n: Numbers) -> Answer:
    """The linear arena's models against their exact answers: each instrument's measured error."""
    configs = sorted((n.get(c, "sigma"), c) for c in n.configs("gaussian_fixed", "linear") if n.scored(c))
    lost = [n.lost(c) for c in n.configs("gaussian_fixed", "linear") if not n.scored(c)]
    if not configs:
        short = "This run has no linear ground-truth models (`arenas: linear`), so it cannot measure its own instruments."
        return Answer("q6", QUESTIONS["q6"], short, lost, ["ground_truth"], short)
    iwae = [(abs(n.get(c, "iwae_minus_exact")), s) for s, c in configs]
    elbo = [n.get(c, "elbo_minus_exact") for _, c in configs]
    train_gap = [n.get(c, "ll_exact_ppca") - n.get(c, "ll_exact") for _, c in configs]
    counts = [(s, n.get(c, "active_units"), n.get(c, "active_units_exact"), c) for s, c in configs]
    wrong = [(s, counted, predicted, c) for s, counted, predicted, c in counts if round(counted) != predicted]
    worst_iwae = max(iwae)
    short = (
        f"The linear models have exact answers. IWAE lies within {f(worst_iwae[0])} nats per image of the exact "
        f"log-likelihood (largest at sigma {f(worst_iwae[1])}); the ELBO lies {f(-max(elbo))} to {f(-min(elbo))} nats "
        f"below it; training ends {f(min(train_gap))} to {f(max(train_gap))} nats short of the probabilistic-PCA "
        f"optimum on test images. The active-unit count (variance of E[z] above 0.01) equals the prediction of "
        f"the optimum (eigenvalues of the data covariance above sigma^2) at {len(counts) - len(wrong)} of "
        f"{len(counts)} sigmas"
    )
    extra = []
    for s, counted, predicted, c in wrong:
        beyond = n.get(c, f"rate_unit_{int(predicted) + 1}")
        weakest = n.get(c, f"rate_unit_{int(predicted)}") if predicted >= 1 else math.nan
        extra.append(
            f"sigma {f(s)}: {f(counted)} counted against {int(predicted)} predicted; the strongest unit beyond the "
            f"prediction carries {f(beyond)} nats"
            + (f", the weakest predicted one {f(weakest)}" if predicted else "")
        )
    beyond = [
        n.get(c, f"rate_unit_{int(predicted) + 1}")
        for _, _, predicted, c in counts
        if math.isfinite(n.get(c, f"rate_unit_{int(predicted) + 1}"))
    ]
    if beyond:
        short += f", and no latent beyond the prediction carries more than {f(max(beyond))} nats (its rate)"
    short += (
        "; where it does not ("
        + "; ".join(extra)
        + "), the extra units are directions that training has not collapsed yet (those whose eigenvalue lies "
        "near sigma^2 collapse slowly, and Adam's steps at a constant rate keep weights that should rest at zero "
        "moving): train longer with the rate annealed, and read the rate per unit beside the count."
        if wrong
        else "."
    )
    ev = [
        f"`{c}`: exact {f(n.get(c, 'll_exact'), 5)}, IWAE {f(n.get(c, 'll_iwae'), 5)}, ELBO {f(n.get(c, 'elbo'), 5)}, "
        f"pPCA optimum {f(n.get(c, 'll_exact_ppca'), 5)} nats; active units {f(n.get(c, 'active_units'))} counted, "
        f"{f(n.get(c, 'active_units_exact'))} predicted; rate per unit "
        + ", ".join(
            f(n.get(c, f"rate_unit_{j}"), 2)
            for j in range(1, 100)
            if math.isfinite(n.get(c, f"rate_unit_{j}"))
        )
        for s, c in configs
    ] + lost
    headline = (
        f"IWAE within {f(worst_iwae[0])} nats of the exact log-likelihood, the ELBO {f(-max(elbo))} to "
        f"{f(-min(elbo))} below; active units as predicted at {len(counts) - len(wrong)} of {len(counts)} sigmas."
    )
    return Answer("q6", QUESTIONS["q6"], short, ev, ["ground_truth"], headline)


PRECISION_TIE = 0.02  # precisions closer than this are not told apart (a few images of a few hundred)


def _q7_failures(table: pd.DataFrame, ranked: pd.DataFrame, pixels: float) -> str:
    """Q7's sentence on divergence and on overfitting (the largest train-test ELBO gaps in bits/dim)."""
    failed = table[table.n_diverged > 0]
    gaps = ranked.dropna(subset=["elbo_gap"]).assign(gap=lambda t: t.elbo_gap / (pixels * math.log(2)))
    worst = gaps.sort_values("gap", ascending=False).head(3)
    return (
        " Failures: "
        + (
            "; ".join(
                f"`{short_name(c)}` diverged in {k} of {m} seeds"
                for c, k, m in zip(failed.config, failed.n_diverged, failed.seeds, strict=True)
            )
            if len(failed)
            else "none diverged"
        )
        + (
            "; overfitting, the largest train-test ELBO gaps: "
            + ", ".join(f"`{short_name(c)}` {f(g, 2)}" for c, g in zip(worst.config, worst.gap, strict=True))
            + f" bits/dim (the median model's {f(gaps.gap.median(), 2)})"
            if len(gaps)
            else ""
        )
        + "."
    )


def _q7_likelihood_against_samples(ranked: pd.DataFrame) -> str:
    """Q7's sentence per arena: does the model that leads on bits/dim also draw the most precise samples?"""
    text = ""
    for arena in ("continuous", "discrete"):
        t = ranked[(ranked.arena == arena) & ranked.precision_draw.notna()]
        if len(t) > 1:
            top = t.loc[t.precision_draw.idxmax()]
            lead = t.iloc[0]  # the arena's best on likelihood
            text += (
                f" In the {arena} arena the model that leads on likelihood, `{short_name(lead.config)}`, also draws "
                f"within {f(PRECISION_TIE)} of the best precision."
                if top.precision_draw - lead.precision_draw <= PRECISION_TIE
                else f" In the {arena} arena likelihood and samples disagree: `{short_name(lead.config)}` leads on "
                f"bits/dim, `{short_name(top.config)}` on the precision of its draws ({f(top.precision_draw)} against "
                f"{f(lead.precision_draw)}, in that arena's features)."
            )
    return text


def answer_q7(n: Numbers) -> Answer:
    """Every image family of the continuous and discrete arenas on one scale, with its sample quality
    and its failures beside it."""
    table = one_scale(n.summary)
    ranked = table[table.bpd.notna()].reset_index(drop=True)
    lost = [n.lost(c) for c in table.config if not n.scored(c)]
    if ranked.empty:
        short = "This run has no models of the continuous or discrete arenas to rank."
        return Answer("q7", QUESTIONS["q7"], short, lost, ["one_scale"], short)
    levels = n.get(ranked.config[0], "levels")
    best = ranked.iloc[0]
    exact, dense = ranked[ranked.arena == "discrete"], ranked[ranked.arena == "continuous"]
    short = (
        f"On one scale, the bits per dimension of the {f(levels)} grey levels, `{short_name(best.config)}` ranks "
        f"first of {len(ranked)} at {f(best.bpd, 4)} bits/dim ({best.measure})."
    )
    other = dense if best.arena == "discrete" else exact
    if len(other):
        o = other.iloc[0]
        kind = "density on dequantised pixels" if best.arena == "discrete" else "mass on the levels"
        short += (
            f" The best {kind}, `{short_name(o.config)}`, scores {f(o.bpd, 4)} ({o.measure.split(':')[0]}), "
            f"{f(o.bpd - best.bpd, 2)} bits/dim behind."
        )
    pair = [
        ranked[ranked.config == c]
        for c in ("discrete/discretised_gaussian", "continuous/gaussian_heteroscedastic-f0.001")
    ]
    if all(len(p) for p in pair):
        short += (
            f" The same decoder, a mean and a scale per pixel, scores {f(pair[0].bpd.iloc[0], 4)} as a binned "
            f"Gaussian (exact) and {f(pair[1].bpd.iloc[0], 4)} as a Gaussian density on dequantised pixels (a bound)."
        )
    short += _q7_failures(table, ranked, n.get(ranked.config[0], "num_pixels"))
    short += _q7_likelihood_against_samples(ranked)
    ev = lost + [
        f"{i + 1}. `{r.config}`: {f(r.bpd, 4)} bits/dim, {r.measure}; draws: precision {f(r.precision_draw)}, "
        f"FID {f(r.fid_draw)} ({r.arena} features); train-test ELBO gap {f(r.elbo_gap)} nats"
        + (f"; diverged in {r.n_diverged} of {r.seeds} seeds" if r.n_diverged else "")
        for i, r in ranked.iterrows()
    ]
    headline = (
        f"`{short_name(best.config)}` first at {f(best.bpd, 4)} bits/dim ({best.measure.split(':')[0]})"
        + (
            f"; the best density, `{short_name(dense.iloc[0].config)}`, {f(dense.iloc[0].bpd, 4)} (a bound)."
            if len(dense) and dense.iloc[0].config != best.config
            else "."
        )
    )
    return Answer("q7", QUESTIONS["q7"], short, ev, ["one_scale"], headline)


def answers(summary: pd.DataFrame, other: pd.DataFrame | None = None) -> list[Answer]:
    """The answers; where `other` (another study's summary) is given, each says where it disagrees."""
    n = Numbers(summary)
    ans = [answer_q1(n), answer_q2(n), answer_q3(n), answer_q4(n), answer_q5(n), answer_q6(n), answer_q7(n)]
    if other is not None and not other.empty:
        label = str(other.dataset.dropna().iloc[0]) if other.dataset.notna().any() else "other"
        mine, theirs = verdicts(n), verdicts(Numbers(other))
        for a in ans:
            sentence = comparison(mine[a.key], theirs[a.key], label)
            if sentence:
                a.short += " " + sentence
    return ans


COMPARE = """Which numbers compare, and why
------------------------------

* **Arenas are never mixed.** The binary arena models binarised pixels (a probability mass), the continuous arena
  models dequantised grey levels y = (k + u)/L (a density on [0,1]^D). Their log-likelihoods are of different data.
* **Bits per dimension are of the discrete data.** In the continuous arena, bpd = -(ll - D ln L)/(D ln 2) bounds the
  bits of the integer grey levels (uniform dequantisation), so densities of grey levels compare with each other.
* **Not every "likelihood" is one.** BCE against grey levels (the Bernoulli in the continuous arena) is not a
  normalised density: its ELBO, IWAE and bpd are marked *not normalised* and do not compare. The MSE losses lack a
  constant, but the Gaussian they imply is a density and is reported as such.
* **The calibrated Gaussian puts every model on one scale.** After training, each model's decoder mean gets one sigma
  fitted in closed form on the validation split (sigma^2 = mean squared residual); its ELBO, IWAE and bpd compare
  across all families of the continuous arena, the MSE and BCE models included.
* **Sample quality** uses a classifier trained on this data set's training split (no downloaded weights); its FID
  values compare within this run, not with FIDs of Inception features elsewhere.
"""


def run_info(metrics: pd.DataFrame, config_text: str, repo: str | Path = ".") -> dict[str, Any]:
    """The config, package versions, git revision and device of the run."""
    try:
        revision = (
            subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown (not a git checkout)"
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if dirty and not revision.startswith("unknown"):
            revision += " (with uncommitted changes)"
    except (OSError, subprocess.TimeoutExpired):
        revision = "unknown (git not found)"
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("vaestudy", "torch", "snakemake", "pandas", "seaborn", "scipy", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    packages["python"] = platform.python_version()
    devices = sorted({d for d in metrics.get("device", pd.Series(dtype=str)).dropna().unique()})
    return {
        "revision": revision,
        "packages": packages,
        "devices": devices,
        "config": config_text,
        "lock": lock_status(Path(repo) / "requirements.lock"),
    }


def lock_status(lock: Path) -> str:
    """Whether the installed packages are the versions that the lock file pins (names the ones that differ)."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    if not lock.is_file():
        return "no requirements.lock here"
    differ = []
    for line in lock.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if pin is None:
            continue
        try:
            installed = version(pin[1])
        except PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != pin[2].split("+")[0]:
            differ.append(f"{pin[1]} {installed} (locked {pin[2]})")
    return f"{lock.name}: " + (
        "every pinned version installed" if not differ else f"{len(differ)} differ: {', '.join(differ)}"
    )


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


TABLE_METRICS = (
    "calibrated_bpd",
    "bpd",
    "ll_exact",
    "ll_exact_ppca",
    "iwae_minus_exact",
    "elbo_minus_exact",
    "active_units_exact",
    "ll_iwae",
    "elbo",
    "elbo_gap",
    "best_epoch",
    "rate",
    "distortion",
    "mse",
    "active_units",
    "sigma",
    "fid_mean",
    "fid_draw",
    "precision_draw",
    "recall_draw",
)


def arena_table(summary: pd.DataFrame, arena: str) -> pd.DataFrame:
    """Per configuration, every key metric as 'mean +- half 95% interval', sorted by calibrated bpd
    (bpd in the binary arena); not-comparable numbers marked with '*'."""
    s = summary[(summary.arena == arena) & ~summary.family.isin(["anchor", "feature_net"])]
    if s.empty:  # its header alone: an empty file is no CSV to pandas ("No columns to parse")
        return pd.DataFrame(columns=["model", "seeds", "diverged"])
    sort_metric = "calibrated_bpd" if arena == "continuous" else "bpd"
    order = s[s.metric == sort_metric].sort_values("mean").config.tolist()
    order += [c for c in dict.fromkeys(s.config) if c not in order]
    rows = []
    for config in order:
        c = s[s.config == config].set_index("metric")
        normalised = c["normalised"].iloc[0]
        row = {
            "model": config.split("/", 1)[1],
            "seeds": int(c["n"].max()),
            "diverged": int(c["n_diverged"].max()),
        }
        for m in TABLE_METRICS:
            if m not in c.index or not math.isfinite(c.loc[m, "mean"]):
                continue
            half = (c.loc[m, "ci95_high"] - c.loc[m, "ci95_low"]) / 2
            text = f(c.loc[m, "mean"], 4) + (f" ± {f(half, 2)}" if math.isfinite(half) else "")
            if m in ("bpd", "ll_iwae", "elbo", "distortion") and is_normalised(normalised) is False:
                text += " *"
            row[m] = text
        rows.append(row)
    # the metrics in TABLE_METRICS's order whichever row comes first, and a blank where a model has
    # none (the Bernoulli has no sigma): not 'nan'
    table = pd.DataFrame(rows)
    columns = ["model", "seeds", "diverged"] + [m for m in TABLE_METRICS if m in table]
    return table[columns].fillna("")


def front_page_rst(ans: list[Answer]) -> str:
    """The report's front page, one screen: each question's one-line answer from this run and where its
    evidence is. The per-model numbers are in the captions (conclusions), the run facts under Tables."""
    out = []
    for a in ans:
        out += [f"* **{CATEGORY[a.key]}** — {a.line.replace('`', '``')}"]
    out += [
        "",
        "On the left: each question's figures, every model's numbers in their captions; **Tables**: what "
        "compares, what ran.",
        "",
    ]
    return "\n".join(out)


def findings_markdown(studies: dict[str, list[Answer]]) -> str:
    """The README's findings: a row per question, a column of one-line answers per study."""
    lines = ["| question | " + " | ".join(studies) + " |", "|---" * (len(studies) + 1) + "|"]
    for key in QUESTIONS:
        cells = [next(a.line for a in ans if a.key == key).replace("|", "\\|") for ans in studies.values()]
        lines.append(f"| {CATEGORY[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def about_rst(info: dict[str, Any]) -> str:
    """Which numbers compare, and the run's config, versions, revision and device (the tables' caption)."""
    out = [
        COMPARE.replace("------------------------------", "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"),
        "",
        "This run",
        "~~~~~~~~",
        "",
        f"* git revision: {info['revision']}",
        f"* devices: {', '.join(info['devices']) or 'unknown'}",
        "* packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
        f"* versions: {info['lock']}",
        "",
        "The config::",
        "",
    ]
    out += ["    " + line for line in info["config"].splitlines()] + [""]
    return "\n".join(out)


def conclusions(ans: list[Answer]) -> dict[str, str]:
    """Per figure name, the answers that cite it, each with its per-model evidence (reStructuredText)."""
    per: dict[str, list[str]] = {}
    for i, a in enumerate(ans, 1):
        for fig in a.figures:
            text = f"**This run (Q{i}):** {a.short.replace('`', '``')}"
            if (
                fig == a.figures[0] and a.evidence
            ):  # the per-model list once, under the question's first figure
                text += "\n\n" + "\n".join(f"* {e.replace('`', '``')}" for e in a.evidence)
            per.setdefault(fig, []).append(text)
    return {k: "\n\n".join(v) + "\n" for k, v in per.items()}


def report_markdown(
    ans: list[Answer],
    info: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    figure_dir: str,
    sample_grids: list[str],
) -> str:
    out = [
        "# vaestudy: what p(x|z) should a VAE decoder be?",
        "",
        "Generated from this run's numbers by `vaestudy report`. Means over seeds; ± is half the 95% interval.",
        "",
    ]
    for i, a in enumerate(ans, 1):
        out += [f"## Q{i}. {a.question}", "", a.short, ""] + [f"- {e}" for e in a.evidence] + [""]
        out += [f"![{fig}]({figure_dir}/{fig}.png)" for fig in a.figures] + [""]
    out += [
        COMPARE.replace("------------------------------\n", "").replace(
            "Which numbers compare, and why", "## Which numbers compare, and why"
        )
    ]
    for arena, table in tables.items():
        out += _md_arena_section(f"Every model, {arena} arena", table)
    out += ["## Training curves", ""] + [
        f"![{n}]({figure_dir}/{n}.png)"
        for n in ("training_loss", "training_rate", "training_distortion", "training_sigma")
    ]
    if sample_grids:
        out += ["", "## Sample grids (seed 1)", ""] + [f"![{g}]({g})" for g in sample_grids]
    out += [
        "",
        "## This run",
        "",
        f"- git revision: {info['revision']}",
        f"- devices: {', '.join(info['devices']) or 'unknown'}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
        f"- versions: {info['lock']}",
        "",
        "```yaml",
        info["config"].rstrip(),
        "```",
        "",
    ]
    return "\n".join(out)


def _md_arena_section(heading: str, table: pd.DataFrame) -> list[str]:
    """An arena's table under a heading, with the key to `*` where a number has one; nothing for
    an arena without models."""
    if table.empty:
        return []
    starred = table.map(lambda cell: str(cell).endswith(" *")).to_numpy().any()
    key = ["`*`: not a normalised density, does not compare.", ""] if starred else []
    return [f"## {heading}", "", *key, _md_table(table), ""]


def write_report(
    summary_csv: str | Path,
    metrics_csv: str | Path,
    out_dir: str | Path,
    config_text: str,
    figure_dir: str = "figures",
    samples_dir: str | Path | None = None,
    compare: str | Path | None = None,
) -> dict[str, Path]:
    """Write front.rst, conclusions/<figure>.rst, tables/<arena>.csv, summary.md and report.md under out_dir
    (report.md refers to the figures as <figure_dir>/<name>.png, relative to out_dir). compare: another
    study's summary.csv, whose findings each answer is set against."""
    from vaestudy.tables import read_table

    summary, metrics = read_table(summary_csv, "summary"), read_table(metrics_csv, "metrics")
    out = Path(out_dir)
    ans = answers(summary, read_table(compare, "summary") if compare else None)
    info = run_info(metrics, config_text)
    written = {}
    written["front"] = out / "report" / "front.rst"
    atomic_write_text(written["front"], front_page_rst(ans))
    atomic_write_text(out / "report" / "about.rst", about_rst(info))
    for name in FIGURE_PLACES:
        text = conclusions(ans).get(name, "")
        atomic_write_text(
            out / "report" / "conclusions" / f"{name}.rst",
            text or "(No question of the study cites this figure.)\n",
        )
    tables = {arena: arena_table(summary, arena) for arena in (*IMAGE_ARENAS, "linear")}
    md = []
    for arena, table in tables.items():
        atomic_write_text(out / "tables" / f"{arena}.csv", table.to_csv(index=False))
        md += _md_arena_section(f"{arena} arena", table)
    atomic_write_text(out / "tables" / "one_scale.csv", one_scale(summary).to_csv(index=False))
    written["summary_md"] = out / "tables" / "summary.md"
    atomic_write_text(written["summary_md"], "\n".join(md))
    grids = []
    if samples_dir is not None:
        grids = sorted(str(p.relative_to(out)) for p in Path(samples_dir).rglob("seed1.png"))
    written["report_md"] = out / "report.md"
    atomic_write_text(written["report_md"], report_markdown(ans, info, tables, figure_dir, grids))
    atomic_write_text(out / "report" / "answers.json", json.dumps([a.__dict__ for a in ans], indent=2))
    return written


def copy_reference(results: str | Path, out: str | Path) -> list[Path]:
    """Copy report.md, its figures (PNG), the tables (Markdown, and summary.csv for comparisons) and the
    seed-1 sample grids to out."""
    import shutil

    results, out = Path(results), Path(out)
    files = [results / "report.md", results / "tables" / "summary.md", results / "tables" / "summary.csv"]
    for path in files:  # all checked before anything is copied
        require(path.is_file(), f"{path} does not exist: run the study first (snakemake --cores 2)")
    check_output_folder(out)
    files += sorted((results / "figures").glob("*.png"))
    files += sorted((results / "figures" / "samples").rglob("seed1.png"))
    copied = []
    for src in files:
        dst = out / src.relative_to(results)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        copied.append(dst)
    return copied
