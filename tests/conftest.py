"""Shared test helpers: a temporary copy of the repo and tiny params for fast pipeline runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# pytest-xdist runs one worker per core: each worker, and the stage subprocesses it starts, gets its
# share of the cores instead of every torch spinning one thread per core (set before torch loads).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MNIST_NPZ = SHARED_DATA / "mnist_t10k.npz"

# Settings small enough for a whole pipeline run in seconds on 2 CPU cores.
TINY: dict[str, Any] = {
    "data.name": "digits",
    "data.limit": 256,
    "arch.nz": 16,
    "arch.ngf": 8,
    "arch.ndf": 8,
    "train.device": "cpu",
    "train.epochs": 2,
    "train.batch_size": 32,
    "train.checkpoint_every": 4,
    "classifier.epochs": 2,
    "sample.num_samples": 128,
    "sample.batch_size": 64,
    "score.num_real": 128,
    "score.train_samples": 64,
    "score.batch_size": 64,
    # The labelled export and the utility stage at the size of the data above, not of MNIST's.
    "export.num_train": 64,
    "export.num_val": 16,
    "export.num_test": 16,
    "utility.seeds": 1,
    "utility.epochs": 1,
}

# Every stage of dvc.yaml, in order.
PIPELINE_STAGES = tuple(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])

COPIED = ("dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore", "stages", "ganpipe")


def set_params(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (as `dvc exp run -S` does) to a params mapping, in place."""
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    return params


def tiny_params(**overrides: Any) -> dict[str, Any]:
    """The repo's params.yaml with TINY settings and `overrides` (dotted keys with '__' for '.')."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    set_params(params, TINY)
    return set_params(params, {key.replace("__", "."): value for key, value in overrides.items()})


def write_params(repo: Path, params: dict[str, Any]) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_env(repo: Path) -> dict[str, str]:
    """Environment for subprocesses: the copy's package first on the path, quiet progress."""
    env = dict(os.environ, CI="1", PYTHONPATH=str(repo), PYTHONHASHSEED="0")
    env.pop("PYTHONSTARTUP", None)
    return env


def run(
    cmd: list[str], repo: Path, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cmd` in `repo` (with `env`, default stage_env(repo)); a failure shows its whole output."""
    result = subprocess.run(
        cmd, cwd=repo, env=env or stage_env(repo), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], repo, check=check)


def ran_stages(dvc_stdout: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` ran (not restored from the run cache, not skipped)."""
    return {line.split("'")[1] for line in dvc_stdout.splitlines() if line.startswith("Running stage '")}


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A fresh git + DVC repo holding a copy of the pipeline, with TINY params, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    write_params(repo, tiny_params(train__eval_every=1))  # whole pipeline: FID during training too
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "ci@ganpipe.invalid"], repo)
    run(["git", "config", "user.name", "ganpipe tests"], repo)
    dvc(repo, "init", "-q")
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")  # the offline plots template
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "pipeline"], repo)
    return repo


@pytest.fixture(scope="session")
def processed_digits(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`processed_digits(channels=1, size=28)`: preprocessed TINY digits, made once per session."""
    from training import make_processed

    made: dict[tuple[int, int], Path] = {}

    def get(channels: int = 1, size: int = 28) -> Path:
        if (channels, size) not in made:
            root = tmp_path_factory.mktemp(f"digits_{channels}_{size}")
            made[(channels, size)] = make_processed(root, channels, size)
        return made[(channels, size)]

    return get


# Files whose tests take longest (CPU seconds on the 2-core machine, longest first). xdist hands out
# whole files (--dist loadfile) in collection order (--no-loadscope-reorder), so starting these first
# keeps one long file from running alone at the end while the other worker idles.
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_scale_out.py",
    "test_queue_resume.py",
    "test_planted_copies.py",
    "test_ddp.py",
    "test_train.py",
    "test_precision.py",
    "test_metrics.py",
    "test_utility.py",
    "test_resnet.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's own tests keep their order
