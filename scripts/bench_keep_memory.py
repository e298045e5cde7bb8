"""Side by side: the benchmark's IWAE (`vaestudy bench`'s bench_iwae: a fresh 784-500-500-20 VAE,
K = 5000 over 20 images) three times in a fresh process after its warm-up run, with glibc's malloc
defaults and with vaestudy's setting (utils.keep_freed_memory, which every `vaestudy` command makes
at start-up). Not a test: run it as

    python scripts/bench_keep_memory.py [PAIRS]

It prints each process's IWAE seconds and page faults, then the median ratio (defaults / kept)."""

import statistics
import subprocess
import sys

CHILD = """
import resource, sys, time, torch
from vaestudy.utils import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory(), "malloc could not be set (not glibc, or MALLOC_* in the environment)"
from vaestudy.bench import bench_iwae
from vaestudy.evaluate import default_max_elements
dev = torch.device("cpu")
max_elements = default_max_elements(dev)
bench_iwae(dev, 2, 1000, max_elements)  # the warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
for _ in range(3):
    bench_iwae(dev, 20, 5000, max_elements)
seconds = time.perf_counter() - t0
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(mode: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    seconds, faults = out.stdout.split()
    return float(seconds), int(faults)


def main(pairs: int) -> None:
    times: dict[str, list[float]] = {"defaults": [], "kept": []}
    for i in range(pairs):
        for mode in times:
            seconds, faults = run(mode)
            times[mode].append(seconds)
            print(f"pair {i + 1}: {mode:8s} {seconds:.3f} s, {faults} page faults", flush=True)
    d, k = statistics.median(times["defaults"]), statistics.median(times["kept"])
    print(f"median IWAE seconds (3 x 20 images, K=5000): defaults {d:.3f}, kept {k:.3f}, ratio {d / k:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
