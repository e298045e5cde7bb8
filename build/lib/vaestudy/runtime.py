"""The process: its device, seeded generators, versions, progress lines and start-up time."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from vaestudy.errors import require
from vaestudy.fast import cpu_info


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA where present, else CPU; 'cuda' without a GPU is a user error."""
    require(
        name in ("auto", "cpu", "cuda") or name.startswith("cuda:"),
        f"device must be auto, cpu or cuda, not {name!r}",
    )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        require(torch.cuda.is_available(), f"device {name!r} asked for, but no CUDA GPU is available")
    return torch.device(name)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Evaluate in true float32: TF32 off for matmul and cuDNN, restored afterwards."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from several parts (run seed, purpose, epoch), independent of hash()."""
    import hashlib

    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(device: torch.device, *seed_parts: int | str) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*seed_parts))
    return g


def versions() -> dict[str, str]:
    import platform

    import numpy

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": str(torch.version.cuda),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform

    model = cpu_info("model name") or platform.processor() or platform.machine()
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


class ProgressLines:
    """Progress of long work as lines on stderr (which the pipeline's logs keep): called with the
    units done so far, it prints at most one line per `every` seconds, so work shorter than that
    prints none, and none at its end (the command says how it ended)."""

    def __init__(self, label: str, total: int, unit: str, every: float = 10.0):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every or done >= self.total:
            return
        self.last, elapsed = now, now - self.started
        left = elapsed * (self.total - done) / max(done, 1)
        print(
            f"{self.label}: {done}/{self.total} {self.unit} ({elapsed:.0f}s, about {left:.0f}s left)",
            file=sys.stderr,
            flush=True,
        )


def put_command_on_path(name: str = "vaestudy") -> None:
    """Make the command `name` callable by the workflow's jobs. Where snakemake was started by its
    path (.venv/bin/snakemake) without the environment activated, the command is not on PATH but
    beside the interpreter: put that folder first on PATH. A UserError where it is in neither."""
    if shutil.which(name) is not None:
        return
    beside = Path(sys.executable).parent
    require(
        os.access(beside / name, os.X_OK),
        f"the {name} command is neither on PATH nor beside this Python ({sys.executable}): activate the "
        f"environment that {name} is installed in",
    )
    os.environ["PATH"] = os.pathsep.join([str(beside), os.environ.get("PATH", "")])


STARTUP_LINE = "vaestudy: start-up (interpreter and imports) "


STARTUP_ENV = "VAESTUDY_LOG_STARTUP"  # the Snakefile sets it, so that every job's log has the line


def startup_seconds() -> float:
    """Seconds from this process's creation to now. On Linux from /proc/self/stat's start time and
    the boot-time clock it counts in (10 ms ticks); elsewhere from psutil (whole-second boot time)."""
    import time

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, IndexError, ValueError, AttributeError):
        import psutil

        return time.time() - psutil.Process().create_time()


def log_startup() -> float | None:
    """Where the environment has VAESTUDY_LOG_STARTUP=1, write on stderr the seconds from this
    process's creation to now: called as a command begins its work, that is the interpreter's
    start-up and the imports. `vaestudy bench --pipeline` sums these lines over a study's logs."""
    if os.environ.get(STARTUP_ENV) != "1":
        return None
    seconds = startup_seconds()
    print(f"{STARTUP_LINE}{seconds:.3f} s", file=sys.stderr, flush=True)
    return seconds
