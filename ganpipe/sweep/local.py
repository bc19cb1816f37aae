"""`ganpipe sweep --engine local`: today's queue on this machine, unchanged.

It queues the sweep with `dvc exp run --queue` (DVC expands -S itself) and starts `dvc queue start
-j N`, whose workers run in the background; each GPU-using stage leases a free GPU
(ganpipe.pipeline.leases). Follow it with `dvc queue status`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ganpipe.pipeline.errors import GanpipeError
from ganpipe.sweep.plan import dvc_command, with_seeds


def queue(repo: Path, set_params: list[str], seeds: str | None, targets: list[str], jobs: int) -> None:
    """Queue every trial and start `jobs` queue workers."""
    arguments = [argument for value in with_seeds(set_params, seeds) for argument in ("-S", value)]
    for step in (["exp", "run", "--queue", *arguments, *targets], ["queue", "start", "-j", str(jobs)]):
        if subprocess.run(dvc_command(*step), cwd=repo).returncode != 0:
            raise GanpipeError(f"`dvc {' '.join(step)}` failed (its message is above)")
    print("queued; follow with `dvc queue status`, then `ganpipe compare`")
