"""The study config -> grid of runs, and the checks a schema cannot express."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vaestudy.errors import UserError
from vaestudy.likelihoods import REGISTRY
from vaestudy.study import check_schema, command_line_grid, config_label, expand_study, merge_studies

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_the_default_study_covers_every_family_but_the_mixture_every_arena_and_three_seeds():
    runs = expand_study(DEFAULT)
    families = {r.config.family for r in runs}
    # the mixture's IWAE is the slowest of all: it runs in the published studies, not in 3 minutes here
    assert families == set(REGISTRY) - {"discretised_logistic_mixture"}
    assert {r.config.arena for r in runs} == {"binary", "continuous", "discrete", "linear"}
    linear = [r.config for r in runs if r.config.arena == "linear"]
    assert {c.family for c in linear} == {"gaussian_fixed"} and all(c.hidden == [] for c in linear)
    # the ground truth trains to convergence (an entry's own train settings); the rest as the study says
    assert {(c.epochs, c.lr, c.lr_schedule) for c in linear} == {(400, 0.003, "cosine")}
    others = {(r.config.epochs, r.config.lr_schedule) for r in runs if r.config.arena != "linear"}
    assert others == {(DEFAULT["train"]["epochs"], "constant")}
    assert len({r.config.seed for r in runs}) >= 3
    sigmas = sorted(r.config.params["sigma"] for r in runs if r.config.family == "gaussian_fixed")
    assert len(set(sigmas)) >= 5 and min(sigmas) == 0.01 and max(sigmas) == 1.0
    assert {r.config.params["reduction"] for r in runs if r.config.family == "mse"} == {"sum", "mean"}
    assert 0 in {r.config.params["floor"] for r in runs if r.config.family == "gaussian_heteroscedastic"}
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert "continuous/gaussian_fixed-s0.1/seed1" in names
    assert "binary/bernoulli/seed1" in names and "continuous/mse-mean/seed3" in names


def test_run_names_are_readable_and_stable():
    assert config_label("gaussian_fixed", {"sigma": 0.1}) == "gaussian_fixed-s0.1"
    assert config_label("gaussian_shared", {"floor": 0.001, "init": 1.0}) == "gaussian_shared-i1-f0.001"
    assert config_label("mse", {"reduction": "mean"}) == "mse-mean"
    assert config_label("bernoulli", {}) == "bernoulli"


def _with(arenas=None, **top):
    study = copy.deepcopy(DEFAULT)
    if arenas is not None:
        study["arenas"] = arenas
    study.update(top)
    return study


@pytest.mark.parametrize(
    "study,message",
    [
        (
            _with({"continuous": [{"family": "gaussian_magic"}]}),
            "arenas.continuous[0].family: unknown likelihood family 'gaussian_magic'",
        ),
        (
            _with({"continuous": [{"family": "gaussian_fixed", "sigma": [0.1, 0]}]}),
            "arenas.continuous[0]: family gaussian_fixed: sigma must be > 0",
        ),
        (_with({"continuous": [{"family": "gaussian_fixed", "sigma": -1}]}), "sigma must be > 0"),
        (
            _with({"binary": [{"family": "gaussian_fixed", "sigma": 0.1}]}),
            "arenas.binary[0]: family gaussian_fixed has no meaning in the binary arena",
        ),
        (
            _with({"continuous": [{"family": "mse"}, {"family": "mse"}]}),
            "arenas.continuous[1]: run continuous/mse is listed twice (also at arenas.continuous[0])",
        ),
        (_with({"continuous": [{"family": "gaussian_fixed", "sigma": [0.1, 0.1]}]}), "listed twice"),
        (
            # the default sigma is 0.1: one model under two names
            _with(
                {
                    "continuous": [
                        {"family": "gaussian_fixed"},
                        {"family": "gaussian_fixed", "sigma": [0.3, 0.1]},
                    ]
                }
            ),
            "arenas.continuous[1]: run continuous/gaussian_fixed-s0.1 is the same model as "
            "continuous/gaussian_fixed at arenas.continuous[0]",
        ),
        (
            _with(
                {"continuous": [{"family": "gaussian_shared", "init": 1.0}, {"family": "gaussian_shared"}]}
            ),
            "run continuous/gaussian_shared is the same model as continuous/gaussian_shared-i1",
        ),
        (_with({"binary": [], "continuous": []}), "the grid is empty"),
        (_with({"continuous": [{"family": "gaussian_shared", "floor": -0.5}]}), "floor must be >= 0"),
        (_with({"continuous": [{"family": "bernoulli", "sigma": 0.1}]}), "has no parameter 'sigma'"),
        (_with({"continuous": [{"sigma": 0.1}]}), "arenas.continuous[0]: each entry needs a 'family'"),
        (_with({"continuous": [{"family": "gaussian_fixed", "sigma": []}]}), "the list of values is empty"),
        (
            _with({"continuous": [{"family": "mse", "train": {"val_fraction": 0.5}}]}),
            "arenas.continuous[0].train: 'val_fraction' cannot differ per entry (these can: epochs,",
        ),
        (
            _with({"continuous": [{"family": "mse", "train": {"lr_schedule": "step"}}]}),
            "arenas.continuous[0]: lr_schedule must be one of constant, cosine, got 'step'",
        ),
        (_with(seeds=[1, 1]), "seeds: a seed is listed twice"),
        (_with(dataset="svhn"), "dataset: unknown data set 'svhn'"),  # the study's, not a run's
        (
            _with(dataset="mnist", data_root=None),
            "data_root: data set mnist is read by torchvision from a folder",
        ),
        (_with(model={"latent": 0}), "latent must be >= 1"),
        (_with(dataset="digits", model={"architecture": "conv"}), "conv needs 28x28 or 32x32"),
        (
            _with(quality={"samples": 10, "k": 10}),
            "quality.k: 10 nearest neighbours must be below quality.samples (10), the images per set",
        ),
    ],
)
def test_bad_studies_name_the_key_and_the_problem(study, message):
    with pytest.raises(UserError) as info:
        expand_study(study)
    assert message in str(info.value)


def _published_study(name: str) -> dict:
    """workflow/studies/NAME.yaml over the default config, as `--configfile` merges it."""
    return merge_studies(
        DEFAULT, yaml.safe_load((ROOT / "workflow" / "studies" / f"{name}.yaml").read_text())
    )


def test_a_study_that_names_arenas_replaces_the_whole_grid_and_merges_the_rest_key_by_key():
    """Merged key by key as Snakemake merges mappings, a study listing only the binary arena also
    ran config.yaml's continuous arena (15 model jobs where 1 was asked for)."""
    override = {"arenas": {"binary": [{"family": "bernoulli"}]}, "train": {"epochs": 5}, "seeds": [7]}
    study = merge_studies(DEFAULT, override)
    assert study["arenas"] == {"binary": [{"family": "bernoulli"}]}
    assert study["train"] == {**DEFAULT["train"], "epochs": 5}  # the other training settings kept
    assert study["model"] == DEFAULT["model"] and study["seeds"] == [7]
    assert [r.name for r in expand_study(study)] == ["binary/bernoulli/seed7"]
    assert DEFAULT["arenas"].keys() == {
        "binary",
        "continuous",
        "discrete",
        "linear",
    }  # the base is not changed
    # a study without arenas keeps the base's grid; the last source that names one gives it
    assert merge_studies(DEFAULT, {"seeds": [1]})["arenas"] == DEFAULT["arenas"]
    later = {"arenas": {"continuous": [{"family": "mse"}]}}
    assert merge_studies(DEFAULT, override, later, {"seeds": [2]})["arenas"] == later["arenas"]
    assert command_line_grid([override, {"seeds": [2]}, later, {"dataset": "x"}]) == later["arenas"]
    assert command_line_grid([{"seeds": [2]}, None]) is None


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_published_scale_studies_expand(name):
    runs = expand_study(_published_study(name))
    assert {r.config.family for r in runs} == set(REGISTRY)  # the GPU studies hold every family
    assert {r.config.dataset for r in runs} == {name}
    assert len(runs) >= 3 * 14


def test_the_mnist_study_runs_on_synthetic_mnist_without_a_data_root():
    """The GPU timing of the MNIST-scale study: --config dataset=synthetic_mnist data_root=null."""
    study = _published_study("mnist")
    study.update(dataset="synthetic_mnist", data_root=None)
    runs = expand_study(study)
    assert {r.config.dataset for r in runs} == {"synthetic_mnist"} and len(runs) == 25 * 3
    assert {r.config.compile for r in runs} == {"auto"}


def test_a_number_written_as_text_names_the_run_as_the_number_does():
    """YAML 1.1 reads `sigma: 1e-2` as a string; the run is gaussian_fixed-s0.01 all the same,
    with sigma the number, and 1e-2 next to 0.01 is the same run listed twice."""
    study = _with(seeds=[1], arenas={"continuous": [{"family": "gaussian_fixed", "sigma": ["1e-2", 0.3]}]})
    runs = expand_study(study)
    assert [r.name for r in runs] == [
        "continuous/gaussian_fixed-s0.01/seed1",
        "continuous/gaussian_fixed-s0.3/seed1",
    ]
    assert runs[0].config.params == {"sigma": 0.01}
    study["arenas"]["continuous"][0]["sigma"] = ["1e-2", 0.01]
    with pytest.raises(UserError, match="listed twice"):
        expand_study(study)


SCHEMA_FILE = ROOT / "vaestudy" / "config.schema.yaml"


def test_text_where_the_schema_takes_a_number_is_read_as_one():
    """What Snakemake's --config gives (every value inside a mapping or a list is a string) and
    YAML 1.1's 1e-3 are checked as the numbers they spell; text that is no number is reported."""
    given = {
        "seeds": ["1", "2"],
        "data_root": "null",
        "download": "true",
        "train": {"epochs": "3", "lr": "1e-3", "max_train": "~"},
        "evaluate": {"k": "5", "max_elements": "null"},
        "resources": {"model": {"mem_mb": "4000", "gpu": "0"}},  # under a $ref
        "dataset": "1",  # a string where the schema takes one stays a string
        "arenas": {"continuous": [{"family": "gaussian_fixed", "sigma": "0.1"}]},
    }
    study = check_schema(copy.deepcopy(given), SCHEMA_FILE)
    assert study["seeds"] == [1, 2] and study["data_root"] is None and study["download"] is True
    assert study["train"] == {"epochs": 3, "lr": 0.001, "max_train": None}
    assert isinstance(study["train"]["epochs"], int)
    assert study["evaluate"] == {"k": 5, "max_elements": None}
    assert study["resources"] == {"model": {"mem_mb": 4000, "gpu": 0}}
    assert study["dataset"] == "1"
    assert study["arenas"] == given["arenas"]  # family parameters: expand_study's to read
    with pytest.raises(UserError, match="train.epochs: '3.5' is not of type 'integer'"):
        check_schema({"train": {"epochs": "3.5"}}, SCHEMA_FILE)
    with pytest.raises(UserError, match="train.lr: 'fast' is not of type 'number'"):
        check_schema({"train": {"lr": "fast"}}, SCHEMA_FILE)
    with pytest.raises(UserError, match="train.lr: 'inf' is not of type 'number'"):
        check_schema({"train": {"lr": "inf"}}, SCHEMA_FILE)


def test_a_number_where_the_schema_takes_only_text():
    """Snakemake's --config reads results=2024 as the number 2024, in quotes or not: an integer
    becomes its digits again; a float, whose digits may not survive, is an error that says why."""
    assert check_schema({"results": 2024}, SCHEMA_FILE)["results"] == "2024"
    assert check_schema({"download": True}, SCHEMA_FILE)["download"] is True  # not text: a boolean
    with pytest.raises(UserError) as info:
        check_schema({"results": 1.5}, SCHEMA_FILE)
    assert str(info.value) == (
        "results: 1.5 is not of type 'string' (read as a number, as Snakemake's --config does even in "
        "quotes: use a name that is not one)"
    )


@pytest.mark.parametrize(
    "study,message",
    [
        ({"train": None}, "train: has no value (null, as YAML reads an empty key); it must be a mapping"),
        ({"arenas": None}, "arenas: has no value (null, as YAML reads an empty key); it must be a mapping"),
        ({"seeds": None}, "seeds: has no value (null, as YAML reads an empty key); it must be a list"),
        ({"results": None}, "results: has no value (null, as YAML reads an empty key); it must be text"),
        # Snakemake's --config 'train={epochs: null}' passes the text 'null'
        (
            {"train": {"epochs": "null"}},
            "train.epochs: has no value (null, as YAML reads an empty key); it must be an integer",
        ),
    ],
)
def test_a_key_left_empty_says_so_and_what_it_must_be(study, message):
    """`train:` with nothing after it said "train: None is not of type 'object'"."""
    with pytest.raises(UserError) as info:
        check_schema(study, SCHEMA_FILE)
    assert str(info.value) == message


def test_the_mnist5k_study_is_the_default_grid_on_real_digits_with_early_stopping():
    study = _published_study("mnist5k")
    runs, default = expand_study(study), expand_study(DEFAULT)
    # every family and parameter of the default study's arenas of images (not its linear ground truth), but
    # the binned Gaussian, whose IWAE takes 15 minutes a model on 2 cores
    images = {
        r.name for r in default if r.config.arena != "linear" and r.config.family != "discretised_gaussian"
    }
    assert {r.name for r in runs} == images
    assert len(runs) == 57 and {r.config.seed for r in runs} == {1, 2, 3}
    configs = {r.config.dataset: r.config for r in runs}
    (config,) = configs.values()
    assert set(configs) == {"mnist5k"} and config.data_root is None
    assert (config.latent, config.hidden, config.activation) == (20, [500], "tanh")  # Kingma & Welling 2014
    assert config.keep_best and config.patience is not None
    assert study["evaluate"]["k"] == 5000 and study["train"].get("max_test") is None  # the whole test split
    assert study["reference"] == "results/reference/mnist5k"
    assert study["compare_with"] == "results/reference/tables/summary.csv"


def test_the_schema_defaults_are_the_run_settings_defaults():
    """One default per setting: `vaestudy train` with no flags trains the default study's model."""
    import dataclasses

    from vaestudy.config import RunConfig

    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    fields = {
        f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING
    }
    fields.update(hidden=[256], params={})
    checked = []
    for section in ("model", "train"):
        for key, spec in schema["properties"][section]["properties"].items():
            assert key in fields, f"{section}.{key} is no run setting"
            assert spec["default"] == fields[key], (section, key, spec["default"], fields[key])
            assert DEFAULT[section].get(key, spec["default"]) == spec["default"], (
                key
            )  # config.yaml says the same
            checked.append(key)
    assert {"epochs", "batch_size", "lr", "latent", "hidden"} <= set(checked)


def test_the_schema_ships_in_the_wheel(tmp_path):
    """An installed wheel checks configs as a checkout does: the schema is package data. Built from
    a copy, so that the build leaves nothing in the checkout."""
    import shutil
    import zipfile

    from vaestudy.study import SCHEMA

    assert SCHEMA.samefile(SCHEMA_FILE)
    source = tmp_path / "source"
    shutil.copytree(ROOT / "vaestudy", source / "vaestudy", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("vaestudy-*.whl")
    assert "vaestudy/config.schema.yaml" in zipfile.ZipFile(wheel).namelist()
