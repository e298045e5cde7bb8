"""Small shared helpers: the user-error type, atomic file writes, devices, exact float32."""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2, no traceback."""


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)


def is_json_type(value: Any, name: str) -> bool:
    """Whether value is of the JSON schema type `name` (boolean, integer, number, string or null),
    as the config's checks count: a bool is no integer or number, an integer is a number."""
    if isinstance(value, bool):
        return name == "boolean"
    return {
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "string": isinstance(value, str),
        "null": value is None,
    }.get(name, False)


def float_or_text(text: str) -> float | str:
    """text as a float (1e-3 too, which YAML 1.1 reads as a string), or text itself."""
    try:
        return float(text)
    except ValueError:
        return text


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A text file that the user names; a missing, unreadable or binary one is a UserError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"cannot read {what} {path}: not a text file (UTF-8)") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """A YAML file that the user names; a syntax error is a UserError of one line with its line."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: YAML syntax error{where}: {getattr(exc, 'problem', exc)}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path through a temporary file in the same folder and a rename.

    A reader never sees a truncated file under the final name, whatever interrupts the write.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails, naming the temporary file rather than path
        raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_or_none(value: Any) -> Any:
    """Map non-finite floats (also inside dicts and lists) to None, so that JSON stays valid."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(finite_or_none(obj), indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Load a file written by atomic_torch_save without running code (weights_only=True).

    A file that is not one (truncated, corrupt, or a pickle of other objects) is a UserError of
    one line; torch's warnings about such a file (its pickle protocol) are not shown."""
    path = Path(path)
    require(path.is_file(), f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, corrupt or malicious file
        raise UserError(f"cannot read {what} {path}: {_load_failure(exc)}") from None


def _load_failure(exc: Exception) -> str:
    """Why torch.load refused a file, in one line. The weights-only unpickler's own message
    begins with advice to load the file unsafely, which a vaestudy user has no reason to take:
    keep only its reason."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if isinstance(exc, EOFError):
        return "the file is empty or ends too early (a truncated copy?)"
    if isinstance(exc, KeyError):  # the unpickler's lookup of an opcode it does not know
        return f"not a file that torch.save writes (neither a zip archive nor a pickle; {type(exc).__name__} {text})"
    if marker not in text:
        return first_line(exc)
    reason = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
    return (
        "not a file that vaestudy writes (torch's weights-only unpickler refused it, so nothing "
        f"in it was loaded or run: {reason or 'no reason given'})"
    )


def check_output_folder(path: str | os.PathLike) -> None:
    """Fail early, as a user error, where a folder cannot be created or written."""
    path = Path(path).absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            require(parent.is_dir(), f"cannot create output folder {path}: {parent} is not a folder")
            require(os.access(parent, os.W_OK | os.X_OK), f"cannot write into {parent} (permission denied)")
            return


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


def cpu_info(key: str) -> str:
    """A field of the first processor in /proc/cpuinfo ('vendor_id', 'model name'); '' where there
    is no such file (not Linux) or field."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return ""


CPU_MATMUL_ENV = "VAESTUDY_CPU_MATMUL"  # auto, mkl or onednn: which library multiplies on the CPU
CPU_MATMUL_CHOICES = ("auto", "mkl", "onednn")


@functools.cache
def onednn_products() -> bool:
    """Whether float32 products on the CPU avoid MKL, torch's default there: the MLPs multiply
    through oneDNN (vaestudy.model.OneDNNLinear) and the Bernoulli's x.o of many samples is a
    product summed instead of MKL's batched matrix-vector product. `auto` (the default of
    VAESTUDY_CPU_MATMUL) avoids MKL on AMD processors, where its float32 products ran at about half
    of oneDNN's rate, and keeps it elsewhere (docs/performance.md).
    The choice depends on the processor alone, never on a timing, so that a run resumed on the
    same machine computes as the uninterrupted one did. With auto, an MLP also needs a size for
    oneDNN (model.ONEDNN_MIN_MACS)."""
    choice = cpu_matmul_choice()
    if choice == "mkl":
        return False
    if choice == "onednn":
        require(onednn_available(), f"{CPU_MATMUL_ENV}=onednn: this torch has no oneDNN linear layer")
        return True
    return onednn_available() and cpu_info("vendor_id") == "AuthenticAMD"


def cpu_matmul_choice() -> str:
    """VAESTUDY_CPU_MATMUL, checked: auto (also where unset or empty), mkl or onednn."""
    choice = os.environ.get(CPU_MATMUL_ENV, "auto").strip().lower() or "auto"
    require(
        choice in CPU_MATMUL_CHOICES,
        f"{CPU_MATMUL_ENV}={os.environ.get(CPU_MATMUL_ENV)!r}: must be one of {', '.join(CPU_MATMUL_CHOICES)}",
    )
    return choice


def onednn_available() -> bool:
    """Whether this torch has oneDNN's linear layer (torch.ops.mkldnn._linear_pointwise) on the CPU."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform

    model = cpu_info("model name") or platform.processor() or platform.machine()
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


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


MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters, from glibc's malloc.h


def keep_freed_memory(mmap_threshold: int = 64 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Tell glibc's malloc to keep freed memory for the next allocation instead of giving it back
    to the system: blocks under mmap_threshold come from the heap, and the heap is not trimmed
    until trim_threshold bytes at its top are free. Returns whether the setting was made.

    By default glibc maps each large block afresh (its threshold rises only as blocks are freed,
    to 32 MiB at most) and trims the heap once twice that threshold is free at its top. Where
    the thresholds settle low, every chunk of the IWAE loop (tensors of a few MB) touches its
    pages anew, each a page fault that zeroes 4 KiB (tests/bench_keep_memory.py measures it;
    docs/performance.md). The resident memory stays at its peak instead of following the live tensors.

    Left as it is where the environment sets malloc's own tunables (MALLOC_*_ or
    GLIBC_TUNABLES=glibc.malloc...), and where the C library is not glibc."""
    import ctypes

    if any(name in os.environ for name in MALLOC_ENV) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        libc = ctypes.CDLL(None)  # the process's own C library
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError, ValueError):  # no confstr or no such name: not glibc
        return False
