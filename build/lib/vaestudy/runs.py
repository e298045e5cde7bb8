"""One run's steps as the commands take them: train with a closing line, the sample quality of a
trained run, and `vaestudy model`, which trains, evaluates and scores one model per seed in one
process (the pipeline's job per configuration: start-up and imports paid once for its seeds).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from vaestudy.config import RunConfig
from vaestudy.errors import require
from vaestudy.files import check_output_folder

if TYPE_CHECKING:
    from vaestudy.train import Trained

SEED_FIELD = "{seed}"  # in vaestudy model's --out and --figure: the seed of each model


def check_outputs(*files: Path | None) -> None:
    """Before any work: each output file's folder can be made and written (a user error if not),
    so that a command does not fail after minutes of work, or with some of its files written."""
    for path in files:
        if path is not None:
            require(not Path(path).is_dir(), f"cannot write {path}: it is a folder, not a file")
            check_output_folder(Path(path).parent)


def seed_path(template: Path | None, seed: int) -> Path | None:
    return None if template is None else Path(str(template).replace(SEED_FIELD, str(seed)))


def train_run(config: RunConfig, out: Path) -> None:
    """Train one run into `out` (resuming from its checkpoint), with a line saying how it ended."""
    from vaestudy.train import train

    facts = train(config, out, progress=None)
    print(f"{out}: {facts['status']} after {facts['epochs']} epochs ({facts['seconds']:.1f}s)")


def quality_of_run(
    run: Path,
    feature_net: Path,
    samples: int | None,
    k: int,
    seed: int | None,
    device: str,
    out: Path,
    figure: Path | None,
    trained: Trained | None = None,
) -> None:
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


class Scoring(NamedTuple):
    """How `vaestudy model` evaluates and scores each model it trains."""

    k: int  # importance samples of the IWAE bound
    elbo_samples: int
    max_elements: int | None  # IWAE's memory bound
    feature_net: Path
    samples: int | None  # images per kind of sample (None: the test set's size)
    quality_k: int  # nearest neighbours of precision and recall


def model_job(config: RunConfig, seeds: list[int], out: Path, figure: Path | None, scoring: Scoring) -> None:
    """Train, evaluate and score one model per seed into `out` (and `figure`), with {seed} in
    them replaced by each seed. Every check that can fail is made before the first model trains."""
    from vaestudy.evaluate import evaluate
    from vaestudy.quality import check_neighbours, images_per_set
    from vaestudy.runtime import resolve_device
    from vaestudy.train import load_data, load_trained

    require(scoring.feature_net.is_file(), f"feature network {scoring.feature_net} not found")
    check_neighbours(scoring.quality_k, scoring.samples)
    # against the data set's size too (training reuses the data loaded here)
    data = load_data(config, resolve_device(config.device))
    check_neighbours(scoring.quality_k, images_per_set(data, scoring.samples))
    check_outputs(*(seed_path(figure, seed) for seed in seeds))
    for name, template in (("--out", out), ("--figure", figure)):
        require(
            len(seeds) == 1 or template is None or SEED_FIELD in str(template),
            f"{name} must contain {SEED_FIELD} when --seeds names several seeds (got {template})",
        )
    for seed in seeds:
        run = dataclasses.replace(config, seed=seed)
        run_out = seed_path(out, seed)
        train_run(run, run_out)
        trained = load_trained(run_out, run.device)  # the saved model, read once for both
        evaluate(
            run_out,
            run_out / "metrics.json",
            k=scoring.k,
            device=run.device,
            elbo_samples=scoring.elbo_samples,
            max_elements=scoring.max_elements,
            trained=trained,
        )
        quality_of_run(
            run_out,
            scoring.feature_net,
            scoring.samples,
            scoring.quality_k,
            None,
            run.device,
            run_out / "quality.json",
            seed_path(figure, seed),
            trained=trained,
        )
        print(f"{run_out}: trained, evaluated and scored")
