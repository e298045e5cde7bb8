# The grid of runs, from the config, with the checks a schema cannot express.
import os
import re
import json
import shlex
import sys

from vaestudy.report import CATEGORY, FIGURE_PLACES
from vaestudy.study import expand_study
from vaestudy.errors import UserError
from vaestudy.runtime import STARTUP_ENV, put_command_on_path

try:
    RUNS = {run.name: run for run in expand_study(config)}
except UserError as error:
    sys.stderr.write(f"vaestudy: config error: {error}\n")
    sys.exit(2)
try:  # the jobs call the vaestudy command, also where snakemake runs from an environment not activated
    put_command_on_path()
except UserError as error:
    sys.stderr.write(f"vaestudy: error: {error}\n")
    sys.exit(2)

# one spelling of the folder (results/, ./results and results name the same files): Snakemake
# compares paths as text, so results/ gave outputs results//report.md that never counted as made
RESULTS = os.path.normpath(config["results"])
# every vaestudy command logs its process start-up (interpreter and imports): `vaestudy bench --pipeline`
os.environ[STARTUP_ENV] = "1"  # VAESTUDY_LOG_STARTUP, set here for the jobs, not asked of the user
# another study's summary.csv that the report's answers are set against: relative paths are read from the
# working folder, or else from the repository (its kept reference reports)
COMPARE = config["compare_with"]
if COMPARE and not os.path.isfile(COMPARE):
    COMPARE = os.path.join(workflow.basedir, COMPARE) if not os.path.isabs(COMPARE) else COMPARE
    if not os.path.isfile(COMPARE):
        sys.stderr.write(f"vaestudy: config error: compare_with: {config['compare_with']} does not exist\n")
        sys.exit(2)
RUN_NAMES = list(RUNS)
ARENAS = sorted({run.config.arena for run in RUNS.values()})
SEEDS = list(config["seeds"])
# one model job per configuration (its name without the seed -> its first run): all seeds, one process
CONFIGS = {}
for run in RUNS.values():
    CONFIGS.setdefault(run.config_name, run)


wildcard_constraints:
    cfg="|".join(re.escape(name) for name in CONFIGS),
    dataset=re.escape(config["dataset"]),
    arena="|".join(ARENAS),


def config_args(wildcards) -> str:
    """The configuration's settings as `vaestudy model` flags, each shell-quoted: those of its
    runs, with --seeds for all the seeds instead of one --seed."""
    cfg = CONFIGS[wildcards.cfg].config
    args = ["--seeds", ",".join(map(str, SEEDS))]
    for key, value in cfg.to_dict().items():
        flag = "--" + key.replace("_", "-")
        if key == "seed" or (key.startswith("tensorboard") and not cfg.tensorboard):
            continue  # the seeds come as --seeds; logging flags only where on (older jobs keep their params)
        elif key == "params":
            for name, v in value.items():
                args += ["--param", f"{name}={v}"]
        elif key == "hidden":
            args += [flag, ",".join(map(str, value))]
        elif key == "download":
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


def per_seed(name: str) -> list[str]:
    """The file `name` of every seed's run of the configuration {cfg}."""
    return [f"{RESULTS}/runs/{{cfg}}/seed{seed}/{name}" for seed in SEEDS]


def rule_resources(rule_name: str, key: str):
    return config["resources"][rule_name][key]


def data_flags() -> str:
    """The data set's flags for the vaestudy commands that build it (shell-quoted)."""
    flags = ["--dataset", config["dataset"], "--data-seed", str(config["data_seed"]),
             "--val-fraction", str(config["train"]["val_fraction"]),
             "--test-fraction", str(config["train"]["test_fraction"]), "--device", config["device"]]
    if config["data_root"]:
        flags += ["--data-root", config["data_root"]]
    return shlex.join(flags)


def samples_flag() -> str:
    samples = config["quality"]["samples"]
    return f"--samples {int(samples)}" if samples else ""


# the report's category of each figure (vaestudy.report.FIGURE_PLACES: the one list of figure names)
FIGURE_CATEGORY = {name: (CATEGORY.get(key, "Training"), sub) for name, (key, sub) in FIGURE_PLACES.items()}


def figure_output(name: str):
    category, subcategory = FIGURE_CATEGORY[name]
    return report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category=category,
                  subcategory=subcategory, labels={"figure": name.replace("_", " ")})
