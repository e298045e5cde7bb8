# The grid of runs, from the config, with the checks a schema cannot express.
import os
import re
import shlex
import sys

from vaestudy.study import expand_study
from vaestudy.utils import UserError

try:
    RUNS = {run.name: run for run in expand_study(config)}
except UserError as error:
    sys.stderr.write(f"vaestudy: config error: {error}\n")
    sys.exit(2)

RESULTS = config["results"]
RUN_NAMES = list(RUNS)


wildcard_constraints:
    run="|".join(re.escape(name) for name in RUN_NAMES),
    dataset=re.escape(config["dataset"]),


def run_args(wildcards) -> str:
    """The run's settings as `vaestudy train` flags, each shell-quoted."""
    cfg = RUNS[wildcards.run].config
    args = []
    for key, value in cfg.to_dict().items():
        flag = "--" + key.replace("_", "-")
        if key == "params":
            for name, v in value.items():
                args += ["--param", f"{name}={v}"]
        elif key == "hidden":
            args += [flag, ",".join(map(str, value))]
        elif key == "download":
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


def rule_resources(rule_name: str, key: str):
    return config["resources"][rule_name][key]
