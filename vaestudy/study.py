"""A study config (config.yaml) -> the grid of runs, with the checks a schema cannot express.

Each entry of `arenas.<arena>` names a family and its parameters; a list value expands into a
sweep (several list values: their product). Run names are readable and stable:
`continuous/gaussian_fixed-s0.1/seed1` (arena / family and the parameters the entry gives / seed).
An entry's `train` mapping replaces the study's training settings for its runs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaestudy.config import RunConfig
from vaestudy.data import ARENAS, DATASETS, check_dataset
from vaestudy.errors import UserError, is_json_type, require
from vaestudy.likelihoods import check_params, coerce_params, family_parameters, get_family

NAME_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")  # one path component: no '/', so no '..' escape
# shipped in the package, so that an installed wheel checks configs as a checkout does
SCHEMA = Path(__file__).with_name("config.schema.yaml")


SCHEMA_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def check_schema(study: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Check a study against the JSON schema; raise UserError 'key.path: problem' for the first error.

    Returns the study with text made the number, integer, boolean or null that the schema asks
    for (coerce_to_schema), which is what is checked."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    study = coerce_to_schema(study, schema)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(study))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "config"
        # a pattern says little by itself: the key's description says what it asks for
        why = (
            f" ({error.schema['description']})"
            if error.validator == "pattern" and "description" in error.schema
            else ""
        )
        if (
            error.validator == "type"
            and error.validator_value == "string"
            and isinstance(error.instance, float)
        ):
            # Snakemake's --config reads results=1.5 as a number, quotes or not (an integer is made
            # text again by coerce_to_schema; a float's digits may not survive)
            why = (
                " (read as a number, as Snakemake's --config does even in quotes: use a name that is not one)"
            )
        if error.validator == "type" and (error.instance is None or error.instance in NULLS):
            # `train:` with nothing after it, or --config 'train={epochs: null}' (text there)
            kinds = (
                error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            )
            wanted = " or ".join(SCHEMA_TYPES.get(k, k) for k in kinds)
            raise UserError(f"{where}: has no value (null, as YAML reads an empty key); it must be {wanted}")
        raise UserError(f"{where}: {error.message}{why}")
    return study


GRID = "arenas"  # the key that lists the models: a study that names it names the whole grid


def merge_studies(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with each override's settings over it, in order, as Snakemake merges `config.yaml`,
    `--configfile` files and `--config`: a mapping key by key, any other value replaced, except
    the grid (`arenas`), which an override that names it replaces whole. Merged key by key, a
    study file listing only the binary arena would also run config.yaml's continuous one."""

    def merge(into: dict[str, Any], over: dict[str, Any], top: bool) -> dict[str, Any]:
        merged = dict(into)
        for key, value in over.items():
            nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = merge(merged[key], value, False) if nested and not (top and key == GRID) else value
        return merged

    study = dict(base)
    for override in overrides:
        study = merge(study, override, True)
    return study


def command_line_grid(sources: list[Any]) -> Any:
    """The grid of the last of these command-line sources (the `--configfile` files' contents,
    then `--config`'s settings) that names one, or None where none does."""
    named = [source[GRID] for source in sources if isinstance(source, dict) and GRID in source]
    return named[-1] if named else None


NULLS = ("null", "Null", "NULL", "~")  # YAML's spellings of null


def _scalar(text: str) -> Any:
    """A value written as text: an integer, a finite float (1e-3 too), true, false or null; else
    the text (nan and inf too: no setting takes them)."""
    for parse in (int, float):
        try:
            value = parse(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else text
    return {"true": True, "false": False}.get(text.strip().lower(), None if text in NULLS else text)


def coerce_to_schema(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """value (a study, or a part of it under `schema`) with every string that stands where the
    schema takes no string, and reads as a value of a type it takes, made that value: `lr: 1e-3`
    (a string to YAML 1.1) becomes 0.001, and Snakemake's `--config train={epochs: 3}` or
    `seeds=[1,2]`, which reads every value inside a mapping or a list as a string, gets numbers.
    A null spelling (null, ~) becomes None where the schema takes null, and an integer where only a
    string is taken becomes its digits (results=2024). Anything else is left for the schema's check
    to report."""
    root = root if root is not None else schema
    while "$ref" in schema:  # a local reference, "#/$defs/name"
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, int) and not isinstance(value, bool) and types == ["string"]:
        return str(value)  # results=2024: Snakemake's --config reads it as a number, even in quotes
    if isinstance(value, str):
        if "string" not in types:
            parsed = _scalar(value)
            return parsed if any(is_json_type(parsed, t) for t in types) else value
        return None if "null" in types and value in NULLS else value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            k: coerce_to_schema(v, properties[k], root) if k in properties else v for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce_to_schema(v, schema["items"], root) for v in value]
    return value


@dataclass(frozen=True)
class Run:
    name: str  # arena/config/seedN
    config_name: str  # arena/config (the run without its seed)
    config: RunConfig


def _abbreviations(family: str) -> dict[str, str]:
    keys = list(family_parameters(family))
    first = [k[0] for k in keys]
    return {k: (k[0] if first.count(k[0]) == 1 else k) for k in keys}


def _format(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def config_label(family: str, params: dict[str, Any]) -> str:
    """gaussian_fixed + {sigma: 0.1} -> 'gaussian_fixed-s0.1'; mse + {reduction: sum} -> 'mse-sum'."""
    abbrev = _abbreviations(family)
    parts = [family]
    for key in family_parameters(family):
        if key in params:
            value = params[key]
            parts.append(_format(value) if isinstance(value, str) else f"{abbrev[key]}{_format(value)}")
    return "-".join(parts)


def _entry_grid(arena: str, index: int, entry: Any) -> list[tuple[str, dict[str, Any]]]:
    where = f"arenas.{arena}[{index}]"
    require(isinstance(entry, dict) and "family" in entry, f"{where}: each entry needs a 'family'")
    family = entry["family"]
    require(isinstance(family, str), f"{where}.family: must be a name, got {family!r}")
    try:
        cls = get_family(family)
    except UserError as exc:
        raise UserError(f"{where}.family: {exc}") from None
    belongs = ", ".join(cls.arenas)
    require(
        arena in cls.arenas,
        f"{where}: family {family} has no meaning in the {arena} arena (it belongs to: {belongs})",
    )
    params = {k: v for k, v in entry.items() if k not in ("family", "train")}
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    for key, vals in zip(keys, values, strict=True):
        require(len(vals) > 0, f"{where}.{key}: the list of values is empty")
    grid = []
    for combo in itertools.product(*values):
        # numbers as numbers before naming the run: sigma 1e-2 (a string to YAML 1.1) is s0.01
        p = coerce_params(family, dict(zip(keys, combo, strict=True)))
        RunConfig(family=family, arena=arena, params=p).validate_family(f"{where}")
        grid.append((config_label(family, p), p))
    return grid


ENTRY_TRAIN = ("epochs", "batch_size", "lr", "lr_schedule", "keep_best", "patience")  # may differ per entry


def _entry_train(arena: str, index: int, entry: Any) -> dict[str, Any]:
    where = f"arenas.{arena}[{index}].train"
    values = (entry.get("train") or {}) if isinstance(entry, dict) else {}
    require(isinstance(values, dict), f"{where}: expected a mapping of training settings")
    for key in values:
        require(
            key in ENTRY_TRAIN,
            f"{where}: {key!r} cannot differ per entry (these can: {', '.join(ENTRY_TRAIN)})",
        )
    return values


def _check_study_settings(study: dict[str, Any]) -> None:
    """The checks of the study's own settings (seeds, arenas, dataset, quality), each error named
    by its key rather than by the first run's."""
    seeds = study.get("seeds", [1])
    require(isinstance(seeds, list) and len(seeds) > 0, "seeds: give at least one seed")
    require(len(set(seeds)) == len(seeds), f"seeds: a seed is listed twice in {seeds}")
    require(
        any((study.get("arenas") or {}).values()),
        "arenas: the grid is empty (list families under arenas.binary or arenas.continuous)",
    )
    dataset = study.get("dataset", RunConfig.dataset)
    try:
        check_dataset(dataset)
    except UserError as exc:
        raise UserError(f"dataset: {exc}") from None
    require(
        dataset not in DATASETS or not DATASETS[dataset].needs_root or study.get("data_root"),
        f"data_root: data set {dataset} is read by torchvision from a folder: set data_root (and download: true "
        "to fetch it)",
    )
    quality = study.get("quality") or {}
    samples, k = quality.get("samples"), quality.get("k", 3)
    require(
        samples is None or k < samples,
        f"quality.k: {k} nearest neighbours must be below quality.samples ({samples}), the images per set",
    )


def expand_study(study: dict[str, Any]) -> list[Run]:
    """Every run of the study, in a stable order; raises UserError naming the key and the problem."""
    _check_study_settings(study)
    seeds, arenas = study.get("seeds", [1]), study.get("arenas") or {}
    model, train = study.get("model", {}), study.get("train", {})
    # the study's data and device settings that it gives (RunConfig has the defaults of the others)
    shared = {k: study[k] for k in ("dataset", "data_root", "download", "data_seed", "device") if k in study}
    runs: list[Run] = []
    seen: dict[str, str] = {}
    # a model is its arena, family and parameters with the defaults filled in: gaussian_fixed with
    # no sigma is gaussian_fixed-s0.1 under another name
    models: dict[tuple, str] = {}
    for arena, entries in arenas.items():
        require(arena in ARENAS, f"arenas.{arena}: unknown arena (known: {', '.join(ARENAS)})")
        for index, entry in enumerate(entries or []):
            entry_train = _entry_train(arena, index, entry)
            for label, params in _entry_grid(arena, index, entry):
                config_name = f"{arena}/{label}"
                where = f"arenas.{arena}[{index}]"
                require(
                    config_name not in seen,
                    f"{where}: run {config_name} is listed twice (also at {seen.get(config_name)})",
                )
                require(
                    NAME_PART.match(label) is not None and not label.startswith("."),
                    f"{where}: run name {config_name!r} has characters outside [A-Za-z0-9_.-] (or starts with "
                    "'.'): a run must stay inside the results folder",
                )
                model_key = (
                    arena,
                    entry["family"],
                    tuple(sorted(check_params(entry["family"], params).items())),
                )
                require(
                    model_key not in models,
                    f"{where}: run {config_name} is the same model as {models.get(model_key)} (the same family "
                    "and parameters once the defaults are filled in): list it once",
                )
                seen[config_name] = where
                models[model_key] = f"{config_name} at {where}"
                for seed in seeds:
                    values = {
                        **shared,
                        "arena": arena,
                        "family": entry["family"],
                        "params": params,
                        "seed": seed,
                        **model,
                        **train,
                        **entry_train,
                    }
                    if arena == "linear":  # linear encoder and decoder: no hidden layer
                        values.update(architecture="mlp", hidden=[])
                    try:
                        config = RunConfig.from_dict(values, source="config").validate()
                    except UserError as exc:
                        raise UserError(f"{where}: {exc}") from None
                    runs.append(Run(f"{config_name}/seed{seed}", config_name, config))
    return runs
