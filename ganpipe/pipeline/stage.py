"""Run a stage's main() so that user errors end in one line and a known exit status."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ganpipe.pipeline.errors import GanpipeError


def run_stage(main: Callable[[], None]) -> None:
    """Call `main`; a GanpipeError prints `error: <message>` on stderr and exits with its code."""
    try:
        main()
    except GanpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(
            "error: interrupted; outputs written so far are complete files, rerun to finish", file=sys.stderr
        )
        sys.exit(130)


def progress_disabled() -> bool:
    """tqdm bars only on an interactive terminal, never in CI logs."""
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()
