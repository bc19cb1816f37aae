"""Shared test helpers: a temporary copy of the repo and tiny params for fast pipeline runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def train_process(under: Path) -> int | None:
    """The pid of a train stage's python process whose working folder is inside `under`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours
            continue
        if (
            b"stages.train" in argv
            and Path(argv[0].decode()).name.startswith("python")
            and cwd.startswith(str(under))
        ):
            return int(entry.name)
    return None


def checkpointed_train_process(
    under: Path, has_checkpoint: Callable[[int], bool], ended: Callable[[], str | None]
) -> int:
    """Poll (cheaply: no dvc call, which takes seconds) for a train process inside `under` once
    `has_checkpoint(pid)` says it wrote its first checkpoint; `ended()` says why the run ended first
    (None: not yet)."""
    deadline = time.monotonic() + 600  # generous: a CPU shared with other jobs slows every dvc call
    while time.monotonic() < deadline:
        pid = train_process(under)
        if pid is not None and has_checkpoint(pid):
            return pid
        why = ended()
        if why is not None:
            raise AssertionError(f"the run ended before it could be killed after a checkpoint:\n{why}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the first checkpoint")


# 20 epochs of 8 steps on 256 digits, a checkpoint every 8: a kill after the first checkpoint lands
# well before the end.
RESUMABLE: dict[str, Any] = {"model": "dcgan", "train.epochs": 20, "train.checkpoint_every": 8}
GENERATOR = "data/train/generator.pt"


def one_thread_env(repo: Path) -> dict[str, str]:
    """stage_env with one torch thread: runs to be compared bit for bit must split reductions alike."""
    return dict(stage_env(repo), OMP_NUM_THREADS="1")


def experiment_sha(repo: Path, name: str) -> str | None:
    """The commit of the experiment's ref under refs/exps, None while it has none."""
    refs = run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], repo).stdout
    shas = [line.split()[0] for line in refs.splitlines() if line.endswith(f"/{name}")]
    assert len(shas) <= 1, refs
    return shas[0] if shas else None


def assert_same_weights_as_uninterrupted(repo: Path, name: str, settings: dict[str, Any] = RESUMABLE) -> None:
    """Experiment `name`'s generator is byte-identical to that of `settings` trained uninterrupted, in
    `repo`'s workspace and outside DVC (its run cache would serve it); params.yaml is put back."""
    params = (repo / "params.yaml").read_text()
    write_params(repo, set_params(tiny_params(train__eval_every=None), settings))
    try:
        run([sys.executable, "-m", "stages.train"], repo, env=one_thread_env(repo))
    finally:
        (repo / "params.yaml").write_text(params)
    sha = experiment_sha(repo, name)
    assert sha is not None, f"the experiment {name} has no ref"
    import dvc.api as dvc_api

    with dvc_api.open(GENERATOR, repo=str(repo), rev=sha, mode="rb") as resumed:
        assert resumed.read() == (repo / GENERATOR).read_bytes()


def make_repo_copy(repo: Path) -> Path:
    """`repo`: a fresh git + DVC repo holding a copy of the pipeline, with TINY params, committed."""
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


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A fresh git + DVC repo holding a copy of the pipeline, with TINY params, committed."""
    return make_repo_copy(tmp_path / "repo")


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
