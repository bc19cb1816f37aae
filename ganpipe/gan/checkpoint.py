"""Resumable checkpoints of the train stage: where they live, who may write them, reading one back.

Where: `train.checkpoint_dir`, a relative path being relative to the repository's root. That root
is `DVC_ROOT` when DVC runs the stage, else the current folder. DVC sets `DVC_ROOT` for every stage
command (dvc/stage/run.py); for an experiment run in a temporary copy (`dvc exp run --queue` then
`dvc queue start`, or `--temp`) it sets it to the repository the experiment was queued from
(dvc/repo/experiments/queue/base.py), while the stage runs in `<root>/.dvc/tmp/exps/tmp*`, a copy
that DVC deletes when the experiment ends, failed or not. So a queued run whose worker died leaves its
checkpoint in the repository, where the re-queued run finds it. (Checked on DVC 3.67 by printing
them from a queued stage: cwd `<root>/.dvc/tmp/exps/tmpu87v7tdp`, DVC_ROOT `<root>`; the copy is a
git repository of its own, so git's common dir names the copy, not the root.)

Who: one process per folder. The folder is named by the run key, so two processes in one folder
train the same settings; the second is refused in one line naming the first (`claim`), instead of
both writing one checkpoint. The lock is an flock (ganpipe.pipeline.locks): a killed run leaves none.

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
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganpipe.pipeline import locks
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import remove_partial_writes, write_json

CORRUPT_SUFFIX = ".corrupt"
ROOT_ENV = "DVC_ROOT"  # set by DVC for every stage command: the repository an experiment belongs to
CHECKPOINT_FILE = "checkpoint.pt"
RECORD_FILE = "run.json"  # what the key was made of, for `ganpipe checkpoints`
LOCK_FILE = "lock"
_GLOBAL = re.compile(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def repository_root() -> Path:
    """The root of the repository this run belongs to: DVC_ROOT (see the module doc), else the cwd."""
    configured = os.environ.get(ROOT_ENV)
    if not configured:
        return Path.cwd()
    root = Path(configured)
    if not (root / ".dvc").is_dir():  # the repository was moved or deleted after queueing
        print(
            f"warning: {ROOT_ENV}={configured} is not a DVC repository; relative checkpoint folders "
            f"go under {Path.cwd()}, and a run killed here will not resume",
            file=sys.stderr,
            flush=True,
        )
        return Path.cwd()
    return root


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """`train.checkpoint_dir` as a folder: an absolute path as it is, a relative one under the root."""
    folder = Path(path)
    return folder if folder.is_absolute() else repository_root() / folder


def prepare_checkpoint_dir(path: str | os.PathLike[str], key: str = "train.checkpoint_dir") -> Path:
    """Resolve `path` (resolve_checkpoint_dir), create it if needed and prove it writable by writing a
    probe file; else one ParamsError line.

    A real write, not `os.access`: permission bits say nothing for root, and a read-only mount or a
    full disk only shows when writing.
    """
    folder = resolve_checkpoint_dir(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = "" if folder == Path(path) else f" (here {folder})"
        raise ParamsError(
            f"params.yaml: {key} = {str(path)!r}{where} is not a writable folder ({reason}); "
            f"set {key} to a folder you can write (default .ganpipe/checkpoints) or fix its permissions"
        ) from None
    return folder


# Lock descriptors this process holds, by folder. A run that raised keeps its lock until the process
# exits; a later run of the same settings in this process (a test, a notebook) takes it over.
_HELD: dict[Path, int] = {}


@dataclass(frozen=True)
class CheckpointFolder:
    """The folder of one run key: its checkpoint, the record of what made the key, its lock."""

    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def finish(self) -> None:
        """The run's outputs are complete: delete its resume point, its record and its lock.

        The folder itself goes when nothing else is left in it (a set-aside corrupt file stays).
        """
        for name in (CHECKPOINT_FILE, RECORD_FILE, LOCK_FILE):
            (self.folder / name).unlink(missing_ok=True)
            remove_partial_writes(self.folder / name)  # a run killed mid-checkpoint leaves one
        with contextlib.suppress(OSError):
            self.folder.rmdir()
        fd = _HELD.pop(self.folder, None)
        if fd is not None:
            locks.release(fd)


def claim(folder: Path, record: dict[str, Any], hold: bool = True) -> CheckpointFolder:
    """Lock `folder` for this process and write its record; one GanpipeError line when another holds it.

    `record` says what made the run key (ganpipe.gan.inventory reads it). `hold` false: a rank of a
    data-parallel run other than rank 0, which only reads the checkpoint its rank 0 holds.
    """
    checkpoint_folder = CheckpointFolder(folder)
    if not hold:
        return checkpoint_folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    earlier = _HELD.pop(folder, None)
    if earlier is not None:
        locks.release(earlier)
    fd = locks.try_lock(lock)
    if fd is None:
        pid, command = locks.holder(lock)
        raise GanpipeError(
            f"{folder}: another run of the same settings is training here (pid {pid}: {command or '?'}); "
            f"let it finish, or stop it (kill {pid}) and rerun to resume from its checkpoint"
        )
    _HELD[folder] = fd
    write_json(
        folder / RECORD_FILE,
        {**record, "pid": os.getpid(), "repository": str(repository_root()), "started": time.time()},
    )
    return checkpoint_folder


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
