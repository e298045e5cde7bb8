#!/usr/bin/env bash
# One call of this workplace's `device` tool on a lent GPU machine: install vaestudy there from
# the wheels of scripts/gpu_wheels.sh (no registry there), then run scripts/gpu_checks.sh and leave
# its logs and tables in $OUT, the folder that comes back. One call may run 10 minutes; a
# session's device time (15 minutes in December 2026) also pays the machine's start (a minute or two):
#   run(command='bash scripts/gpu_session.sh "tests bench"', carry=[".whl"], timeout_s=480)
#   run(command='bash scripts/gpu_session.sh study 2', carry=[".whl"], timeout_s=540)
# The first runs the CUDA tests and `vaestudy bench --device cuda`: the checks of the CUDA code.
# The second times the MNIST-scale study on synthetic data for EPOCHS epochs and projects it to
# its full 200: about 7 minutes on an H100 at 3 epochs (evaluation dominates), so only where
# that much device time is left after the first.
#
# usage: bash scripts/gpu_session.sh STEPS [EPOCHS]   (STEPS and EPOCHS as scripts/gpu_checks.sh's)
# Exit status: gpu_checks.sh's; 2 without the wheels or $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "gpu_session: usage: bash scripts/gpu_session.sh STEPS [EPOCHS]" >&2; exit 2; }
[ -n "${OUT:-}" ] && [ -d "$OUT" ] || { echo "gpu_session: \$OUT is not a folder: run this through the device tool" >&2; exit 2; }
ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_session: no wheels in .whl: run scripts/gpu_wheels.sh here and carry .whl" >&2; exit 2; }

export PYTHONUNBUFFERED=1
start=$(date +%s)
# what the machine lacks, resolved offline against what it has, into /tmp/site (the image's own
# environment is left as it is); vaestudy itself as the README installs it, editable, found
# through PYTHONPATH (an editable install's .pth file is read only in the site folders)
prefix=/tmp/site
if ! python3 -m pip install -q --no-index --find-links .whl --no-compile --prefix "$prefix" -e . \
    >/tmp/install.log 2>&1; then
    cp /tmp/install.log "$OUT/"
    echo "gpu_session: the install failed (install.log)" >&2
    exit 1
fi
site=$(python3 -c "import sys, sysconfig; print(sysconfig.get_path('purelib', vars={'base': sys.argv[1], 'platbase': sys.argv[1]}))" "$prefix")
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$prefix/bin:$PATH"
echo "gpu_session: installed in $(($(date +%s) - start)) s" >&2

# The logs and tables go straight to $OUT, so that a call stopped at its limit still returns
# what ran; the study's results (too many files to come back) to /tmp, its tables packed after.
# At most 8 files come back: device.csv, tests_cuda.log, bench_cuda.log, bench_cuda.csv,
# study.log, study_bench.csv, epochs.yaml and study_tables.tar.gz.
study=/tmp/gpu_study
rm -rf "$study"
GPU_CHECKS_STUDY=$study bash scripts/gpu_checks.sh "$OUT" "${2:-}" "$1"
status=$?
if [ -d "$study" ]; then
    tar -czf "$OUT/study_tables.tar.gz" -C "$study" --exclude='runs' --exclude='*.pt' . 2>/dev/null
fi
echo "gpu_session: done in $(($(date +%s) - start)) s, status $status" >&2
exit $status
