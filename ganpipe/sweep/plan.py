"""The trials of a sweep, their names and resources, and the checks a Ray sweep needs first.

- The grid is DVC's own: the -S arguments (plus `seed=<--seeds>`) go through the functions
  `dvc exp run --queue` uses (dvc.utils.cli_parse.to_path_overrides, dvc.utils.hydra.get_hydra_sweeps),
  so `-S key=v1,v2`, `range(...)`, `choice(...)` and `file:key=...` mean what they mean to DVC.
- A trial's name is a hash of its overrides and targets, so the same trial of a rerun has the same
  name, and DVC's rule that a name is used once per baseline commit makes a rerun a duplicate.
- A trial's params are params.yaml with its overrides applied by DVC's own `apply_overrides`, read
  as a plain dict: `train.device`, `train.world_size` and `train.checkpoint_dir` decide what it asks
  of the cluster and where its checkpoint lives.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ganpipe.pipeline.errors import GanpipeError

PARAMS_FILE = "params.yaml"
NAME_PREFIX = "sweep-"


@dataclass(frozen=True)
class Trial:
    """One experiment of a sweep: its DVC name, its -S overrides and its resolved params."""

    name: str
    overrides: tuple[str, ...]  # `dvc exp run -S` values: [file:]key=value
    params: dict[str, Any]

    @property
    def label(self) -> str:
        """The overrides, as a person reads them: `model=dcgan seed=0`."""
        return " ".join(override.removeprefix(f"{PARAMS_FILE}:") for override in self.overrides)


def _seed_override(seeds: str) -> str:
    values = [value.strip() for value in seeds.split(",")]
    if not values or not all(value.lstrip("-").isdigit() for value in values):
        raise GanpipeError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. --seeds 0,1,2")
    return "seed=" + ",".join(values)


def with_seeds(set_params: list[str], seeds: str | None) -> list[str]:
    """The -S values, and --seeds as one more: `seed=0,1,2`."""
    if seeds is None:
        return list(set_params)
    if any(value.removeprefix(f"{PARAMS_FILE}:").startswith("seed=") for value in set_params):
        raise GanpipeError("seed is set twice: give the seeds either as --seeds or as -S seed=..., not both")
    return [*set_params, _seed_override(seeds)]


def expand(set_params: list[str], seeds: str | None) -> list[tuple[str, ...]]:
    """Every trial's overrides, as `dvc exp run --queue -S ...` would queue them (seeds last)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    arguments = with_seeds(set_params, seeds)
    if not arguments:
        return [()]
    try:
        sweeps = get_hydra_sweeps(to_path_overrides(arguments))
    except (InvalidArgumentError, HydraException) as exc:
        raise GanpipeError(
            f"-S {' -S '.join(arguments)}: not DVC's -S syntax ({str(exc).splitlines()[0]}); "
            "write -S key=value or -S key=v1,v2"
        ) from None
    return [
        tuple(
            override if path == PARAMS_FILE else f"{path}:{override}"
            for path, overrides in sweep.items()
            for override in overrides
        )
        for sweep in sweeps
    ]


def trial_name(overrides: tuple[str, ...], targets: list[str]) -> str:
    """`sweep-<8 hex>`: the same overrides and targets always give the same name."""
    text = "\0".join([*sorted(overrides), "--", *targets])
    return NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:8]


def resolved_params(repo: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    """params.yaml with `overrides` applied as `dvc exp run -S` applies them, as a dict."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    mine = [
        override
        for path, group in to_path_overrides(overrides).items()
        if path == PARAMS_FILE
        for override in group
    ]
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / PARAMS_FILE
        shutil.copy2(repo / PARAMS_FILE, copy)
        try:
            apply_overrides(copy, mine)
        except InvalidArgumentError as exc:
            cause = f": {str(exc.__cause__).splitlines()[0].rstrip('.')}" if exc.__cause__ else ""
            raise GanpipeError(
                f"-S {' '.join(overrides)}: DVC cannot apply it to {PARAMS_FILE}{cause}; "
                f"check that each key exists in {PARAMS_FILE}"
            ) from None
        return yaml.safe_load(copy.read_text())


def plan(repo: Path, set_params: list[str], seeds: str | None, targets: list[str]) -> list[Trial]:
    """The trials of the sweep, in DVC's order."""
    return [
        Trial(trial_name(overrides, targets), overrides, resolved_params(repo, overrides))
        for overrides in expand(set_params, seeds)
    ]


def gpus_per_trial(params: dict[str, Any], cluster_gpus: float) -> int:
    """The GPUs one trial asks Ray for: as many as it trains on (`train.world_size`); none on a
    cluster without GPUs; one for the measuring stages when training is on the CPU (they use a GPU
    whenever there is one, ganpipe.pipeline.device)."""
    train = params["train"]
    if train["device"] == "cuda" and cluster_gpus < 1:
        raise GanpipeError(
            "train.device = 'cuda' but the Ray cluster has no GPU; set -S train.device=auto or cpu, "
            "or join a node with a GPU"
        )
    if cluster_gpus < 1:
        return 0
    return 1 if train["device"] == "cpu" else int(train["world_size"])


def command(cmd: list[str], cwd: Path, what: str) -> str:
    """Run `cmd` in `cwd`; its stdout, or a GanpipeError naming `what` and the command's last line."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise GanpipeError(f"{what}: `{' '.join(cmd)}` failed: {lines[-1] if lines else result.returncode}")
    return result.stdout


def dvc_command(*args: str) -> list[str]:
    """`dvc ARGS` with this interpreter's DVC (the one pinned in constraints.txt)."""
    return [sys.executable, "-m", "dvc", *args]


def check_repo(repo: Path, remote: str) -> tuple[str, str]:
    """The sweep's commit (HEAD) and the git remote's URL; GanpipeError when the workers could not
    run that commit or push their results: uncommitted changes, HEAD not on the remote, no default
    DVC remote."""
    changed = command(["git", "status", "--porcelain", "--untracked-files=no"], repo, "git status")
    if changed.strip():
        files = ", ".join(line[3:] for line in changed.splitlines()[:3])
        raise GanpipeError(
            f"uncommitted changes ({files}): the trials run the commit HEAD in clean clones; "
            "commit them first"
        )
    sha = command(["git", "rev-parse", "HEAD"], repo, "git rev-parse").strip()
    url = command(["git", "remote", "get-url", remote], repo, f"--remote {remote}").strip()
    if (repo / url).exists():  # a local path (maybe relative to the repo): the workers need it absolute
        url = str((repo / url).resolve())
    command(["git", "fetch", "-q", remote], repo, f"git fetch {remote}")
    if not command(
        ["git", "branch", "-r", "--contains", sha, "--list", f"{remote}/*"], repo, "git branch"
    ).strip():
        raise GanpipeError(
            f"HEAD {sha[:7]} is not on the git remote {remote!r}, where the workers clone from; "
            f"push it first: git push {remote} HEAD"
        )
    if not subprocess.run(
        dvc_command("remote", "default"), cwd=repo, capture_output=True, text=True
    ).stdout.strip():
        raise GanpipeError(
            "no default DVC remote, where the workers push each trial's outputs: "
            "dvc remote add -d storage <url every node reaches>, then commit .dvc/config and push"
        )
    return sha, url


def experiment_names(repo: Path, remote: str | None = None) -> set[str]:
    """The names of HEAD's experiments, in this repo or (`remote`) on the git remote."""
    where = [remote] if remote else []
    listed = command(dvc_command("exp", "list", *where, "--name-only"), repo, "dvc exp list")
    return {line.strip() for line in listed.splitlines() if line.strip()}
