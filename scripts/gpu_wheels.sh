#!/usr/bin/env bash
# Fetch, here, the wheels that a lent GPU machine (this workplace's `device` tool) needs for
# scripts/gpu_session.sh: that machine has Python 3.12, PyTorch, torchvision, pandas, seaborn,
# scipy, scikit-learn and pytest, no snakemake, and no package registry. The wheels are what
# vaestudy needs beyond those (snakemake with its report extra, its Slurm plugin, jsonschema, mlxtend,
# tqdm, and setuptools to build vaestudy itself), for CPython 3.12 on x86-64 Linux, with every
# requirement of theirs, so that the install there resolves offline against what it already has.
# The versions of snakemake and its Slurm plugin are those of the environment this runs in.
#
# usage: bash scripts/gpu_wheels.sh [DIR]     (DIR: default .whl, which .gitignore names)
# Exit status: 0 when DIR holds the complete set; 1 when a download or build failed; 2 when
# snakemake is not installed for this Python.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${PYTHON:-python3}

version() {  # the installed version of a distribution here, or nothing
    "$py" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}
pin() {  # VERSION of NAME as installed here
    local v
    v=$(version "$1")
    [ -n "$v" ] || { echo "gpu_wheels: $1 is not installed for $py: activate vaestudy's environment (or set PYTHON)" >&2; exit 2; }
    echo "$v"
}
snakemake=$(pin snakemake) || exit 2
slurm=$(pin snakemake-executor-plugin-slurm) || exit 2
wanted=("snakemake[reports]==$snakemake" "snakemake-executor-plugin-slurm==$slurm" jsonschema tqdm mlxtend "setuptools>=68")
target=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)

mkdir -p "$dir"
# Requirements published only as source: built here into pure-Python wheels first, so that the
# download for another Python, which takes wheels alone, finds them in DIR.
for sdist_only in "connection_pool==0.0.3"; do
    "$py" -m pip wheel -q --no-deps "$sdist_only" -w "$dir"
done
"$py" -m pip download -q "${target[@]}" --find-links "$dir" -d "$dir" "${wanted[@]}"
# numpy and pandas (27 MB, for the Slurm plugin) are on the machine: dropped, so that the wheels
# and the working tree stay within the 64 MiB that one call carries
rm -f "$dir"/numpy-*.whl "$dir"/pandas-*.whl
echo "gpu_wheels: $(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1), in $dir for: ${wanted[*]}" >&2
