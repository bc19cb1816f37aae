"""User-facing errors: each is reported as one line, never as a traceback."""

from __future__ import annotations

import os


class GanpipeError(Exception):
    """A problem the user can fix (bad data, missing file, no network). Exit status 1."""

    exit_code = 1


class ParamsError(GanpipeError):
    """A bad value in params.yaml. Exit status 2."""

    exit_code = 2


def run_first(path: str | os.PathLike[str], stage: str = "", problem: str = "not found") -> GanpipeError:
    """The one message for an input that an earlier stage writes: names the file and the command
    (`dvc repro <stage>` also runs every stage before it; no stage: the whole pipeline)."""
    command = f"dvc repro {stage}" if stage else "dvc repro"
    return GanpipeError(f"{path}: {problem}; run `{command}` first")
