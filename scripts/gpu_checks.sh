#!/usr/bin/env bash
# The GPU checks of the performance work, in one command, on a machine with CUDA:
#   tests  the CUDA tests (tests/test_cuda.py: the captured step, compiled or not, against eager,
#          its fallback, float32 without TF32, the benchmark's CUDA rows);
#   bench  vaestudy bench --device cuda (the trainer against the textbook loop and 300,000
#          images/s, IWAE over a 10,000-image test set at K = 5000);
#   study  the MNIST-scale study (workflow/studies/mnist.yaml: every family, 3 seeds, K = 5000 on
#          the 10,000 test images) through the gpu profile, on synthetic MNIST-shaped data (MNIST
#          cannot be downloaded everywhere; its numbers time the study and say nothing about
#          MNIST), timed. With EPOCHS below the study's own, each model trains for EPOCHS and the
#          wall time is projected to the full epochs (vaestudy bench --pipeline --wall --full-epochs).
#
# usage: bash scripts/gpu_checks.sh OUT [EPOCHS] [STEPS]
#   OUT    folder for the logs (*.log), the tables (*.csv) and the study's results (OUT/study,
#          or the folder that GPU_CHECKS_STUDY names)
#   STEPS  which of "tests bench study" to run (default: all three)
# Exit status: 0 if every step ran to its end (the printed ratios say whether targets were met),
# 1 if a step failed, 2 if the arguments are wrong, there is no CUDA device, or the study's
# folder already holds a study (its wall time would then cover only the rest).
set -uo pipefail
cd "$(dirname "$0")/.."

usage="usage: bash scripts/gpu_checks.sh OUT [EPOCHS] [STEPS]"
[ $# -ge 1 ] && [ -n "$1" ] || { echo "gpu_checks: $usage" >&2; exit 2; }
out=$1
epochs=${2:-}
steps=${3:-tests bench study}
study=${GPU_CHECKS_STUDY:-$out/study}
[[ -z "$epochs" || "$epochs" =~ ^[1-9][0-9]*$ ]] ||
    { echo "gpu_checks: EPOCHS must be a positive integer, got '$epochs'" >&2; exit 2; }
python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null ||
    { echo "gpu_checks: python3 finds no CUDA device here (or no torch): nothing to check" >&2; exit 2; }
if [[ " $steps " == *" study "* ]] && [ -e "$study" ]; then
    # a second run would time only what the first left undone
    echo "gpu_checks: $study exists: time the study into a fresh folder" >&2
    exit 2
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.csv" 2>&1 || true
status=0

if [[ " $steps " == *" tests "* ]]; then
    echo "== CUDA tests" >&2
    python3 -m pytest -m cuda tests/test_cuda.py -q -rs 2>&1 | tee "$out/tests_cuda.log" || status=1
fi

if [[ " $steps " == *" bench "* ]]; then
    echo "== vaestudy bench --device cuda" >&2
    vaestudy bench --device cuda --out "$out/bench_cuda.csv" 2>&1 | tee "$out/bench_cuda.log" || status=1
fi

if [[ " $steps " == *" study "* ]]; then
    full=$(python3 -c "import yaml; print(yaml.safe_load(open('workflow/studies/mnist.yaml'))['train']['epochs'])")
    configs=(workflow/studies/mnist.yaml)
    if [ -n "$epochs" ] && [ "$epochs" != "$full" ]; then
        printf 'train:\n  epochs: %d\n' "$epochs" >"$out/epochs.yaml"
        configs+=("$out/epochs.yaml")
    fi
    echo "== the MNIST-scale study on synthetic_mnist (${epochs:-$full} of $full epochs)" >&2
    start=$(date +%s)
    snakemake --workflow-profile workflow/profiles/gpu --configfile "${configs[@]}" \
        --config dataset=synthetic_mnist data_root=null "results=$study" 2>&1 |
        tee "$out/study.log" || status=1
    wall=$(($(date +%s) - start))
    echo "study wall time: $wall s" | tee -a "$out/study.log" >&2
    vaestudy bench --pipeline "$study" --wall "$wall" --full-epochs "$full" \
        --out "$out/study_bench.csv" 2>&1 | tee -a "$out/study.log" || status=1
fi
exit $status
