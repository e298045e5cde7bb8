"""Files: the user's text and YAML files read with one-line errors, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from vaestudy.errors import UserError, first_line, require


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
