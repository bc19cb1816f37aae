"""Atomic output writers: an interrupted stage never leaves a half-written file behind.

Every writer writes to a temporary file in the destination folder and renames it into place;
rename is atomic on POSIX filesystems, so readers see either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP_SUFFIX = ".tmp"  # atomic writes' temporary files: .<name>.<random>.tmp beside the target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partial_writes(path: str | os.PathLike[str]) -> None:
    """Delete the temporary files that atomic writes of `path` killed midway (kill -9) left beside it."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def file_md5(path: str | os.PathLike[str]) -> str:
    """md5 of a file, read in 1 MiB chunks (datasets and weights can be large)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    # np.savez appends ".npz" to names without it, so hand it an open file instead.
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def load_torch(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """Load a torch file written by ganpipe. Pickled code payloads are refused (weights_only)."""
    import torch

    from ganpipe.pipeline.errors import GanpipeError, run_first

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise run_first(path) from None
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError subclasses
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GanpipeError(
            f"{path}: refused to load (not a plain tensor file; only weights are accepted): {first_line}"
        ) from None


def save_figure(path: str | os.PathLike[str], figure: Any, dpi: int = 150) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
