"""Resumable checkpoints of the train stage: where they may live, and reading one back.

Two failures used to surface late or with the wrong reason:
- an unwritable `train.checkpoint_dir` ended in a traceback at the first save, after the data was
  loaded and the first steps were trained. `prepare_checkpoint_dir` refuses it up front, in one line;
- a truncated or corrupt checkpoint was reported as "not a plain tensor file", the message for a
  pickled-code payload, and stopped every later run. `load_checkpoint` now tells the two apart.

A corrupt checkpoint is set aside (renamed to `<name>.corrupt`) with a one-line warning, and the run
starts afresh, rather than stopping with a fix for the user to apply. Why: checkpoints are written
atomically, so a bad one comes from outside ganpipe (a full disk, a crash of the filesystem, a
partial copy); it holds nothing but progress, since a run started afresh ends in the same bit-identical
weights (its folder is keyed by everything that shapes them); and stopping would block every queued
`dvc exp run` on a file the user could only delete. Keeping it under another name leaves the evidence.

A file that asks the unpickler for code (a global that `torch.load(weights_only=True)` does not allow)
is different: ganpipe never writes one, so someone or something else put it there. It is refused,
never executed and never silently set aside: the user must look at it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ganpipe.pipeline.errors import GanpipeError, ParamsError

CORRUPT_SUFFIX = ".corrupt"
_GLOBAL = re.compile(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def prepare_checkpoint_dir(path: str | os.PathLike[str], key: str = "train.checkpoint_dir") -> Path:
    """Create `path` if needed and prove it writable by writing a probe file; else one ParamsError line.

    A real write, not `os.access`: permission bits say nothing for root, and a read-only mount or a
    full disk only shows when writing.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ParamsError(
            f"params.yaml: {key} = {str(path)!r} is not a writable folder ({reason}); "
            f"set {key} to a folder you can write (default .ganpipe/checkpoints) or fix its permissions"
        ) from None
    return folder


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def set_aside(path: Path, reason: str) -> Path:
    """Rename an unreadable checkpoint out of the way (replacing an earlier one) and warn in one line."""
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    with contextlib.suppress(FileNotFoundError):  # another rank of a data-parallel run moved it first
        os.replace(path, aside)
    print(
        f"warning: {path}: unreadable checkpoint ({reason}); moved to {aside}, starting this run afresh",
        file=sys.stderr,
        flush=True,
    )
    return aside


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any] | None:
    """The state stored at `path`, or None when there is none or it was corrupt and set aside.

    Raises a one-line GanpipeError for a file carrying pickled code (refused, not executed) and for a
    file that cannot be read at all (permissions).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found is None:  # garbage opcodes: a damaged pickle, not a payload
            set_aside(path, f"corrupt: {_first_line(exc)}")
            return None
        raise GanpipeError(
            f"{path}: refused to load: it asks for code ({found.group(1)}), not only weights, and ganpipe "
            f"never writes that; inspect it, then delete it (or its folder {path.parent}) to start afresh"
        ) from None
    except PermissionError as exc:
        raise GanpipeError(
            f"{path}: cannot read the checkpoint ({exc.strerror}); fix its permissions or delete it"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        # torch reports a truncated zip as RuntimeError ("failed finding central directory"), an empty
        # or cut legacy pickle as EOFError.
        set_aside(path, f"truncated or corrupt: {_first_line(exc)}")
        return None
    if not isinstance(state, dict) or "step" not in state:
        set_aside(path, f"not a ganpipe checkpoint: a {type(state).__name__} without a step")
        return None
    return state
