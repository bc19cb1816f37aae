"""`ganpipe sweep --engine ray` on a local Ray cluster (issue 39), with real DVC end to end.

A bare Git repository stands in for the git remote and a local folder for the DVC remote. The
driver repo runs the shared stages once and pushes them; each `ganpipe sweep` starts a local Ray
cluster on this machine (ray.init(address="local"), with every core), whose tasks clone the bare
repository, run `dvc exp run`, push, and are pulled by the driver. Skipped where Ray is not
installed (pip install -r requirements-ray.txt -c constraints.txt). Each test takes more than half
a minute, so they carry the `ray` marker, which the default run leaves out: `python -m pytest -q -m
ray` runs them, and CI does (.ci/run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import (
    RESUMABLE,
    assert_same_weights_as_uninterrupted,
    checkpointed_train_process,
    dvc,
    make_repo_copy,
    one_thread_env,
    run,
    tiny_params,
    train_process,
    write_params,
)

from ganpipe.pipeline import locks

pytest.importorskip("ray")
pytestmark = pytest.mark.ray


def _env(repo: Path) -> dict[str, str]:
    # No usage report from the local cluster: tests never touch the network.
    return dict(one_thread_env(repo), RAY_USAGE_STATS_ENABLED="0")


def _sweep_command(*args: str) -> list[str]:
    return ["ganpipe", "sweep", "--engine", "ray", *args]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver's repo: the shared stages run, committed and pushed to both remotes."""
    root = tmp_path_factory.mktemp("ray_sweep")
    repo = make_repo_copy(root / "driver")
    write_params(repo, tiny_params(train__eval_every=None))  # no FID during training: faster
    run(["git", "init", "-q", "--bare", str(root / "remote.git")], root)
    run(["git", "remote", "add", "origin", str(root / "remote.git")], repo)
    dvc(repo, "remote", "add", "-d", "storage", str(root / "dvc-storage"))
    dvc(repo, "repro", "-q", "train_reference")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "shared stages"], repo)
    run(["git", "push", "-q", "origin", "HEAD"], repo)
    dvc(repo, "push")
    return repo


def _experiments(repo: Path) -> dict[str, dict]:
    """name -> (params, metrics) of HEAD's experiments, from `dvc exp show --json` on the driver."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    return {
        experiment["name"]: experiment["revs"][0]["data"]
        for commit in shown
        for experiment in commit.get("experiments") or []
    }


def _ray_worker(pid: int) -> psutil.Process:
    """The Ray worker process (its title is `ray::<trial>`) that `pid` descends from."""
    for process in psutil.Process(pid).parents():
        if " ".join(process.cmdline()).startswith("ray::"):
            return process
    raise AssertionError(f"process {pid} runs under no Ray worker")


def _holds_a_checkpoint(checkpoints: Path) -> Callable[[int], bool]:
    """Whether a process holds the lock of a checkpoint folder that has a checkpoint."""

    def holds(pid: int) -> bool:
        held = (locks.holder(found.parent / "lock")[0] for found in checkpoints.glob("*/checkpoint.pt"))
        return str(pid) in held

    return holds


def _start(driver: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    """`ganpipe sweep --engine ray ARGS` in the background, in a process group of its own (as a
    terminal's foreground job is), its output to `out`."""
    command = _sweep_command(*args)
    with out.open("w") as sink:
        return subprocess.Popen(
            command, cwd=driver, env=_env(driver), stdout=sink, stderr=sink, start_new_session=True
        )


def _ended(process: subprocess.Popen[bytes], out: Path) -> Callable[[], str | None]:
    return lambda: out.read_text() if process.poll() is not None else None


def test_a_2x2_sweep_survives_a_killed_worker_and_its_rerun_trains_nothing(
    driver: Path, tmp_path: Path
) -> None:
    checkpoints, work, out = tmp_path / "shared-checkpoints", tmp_path / "workers", tmp_path / "sweep.out"
    settings = [
        arg for key in ("train.epochs", "train.checkpoint_every") for arg in ("-S", f"{key}={RESUMABLE[key]}")
    ]
    # `score` as the target: what `ganpipe compare` and `ganpipe results` need (train, sample, score).
    sweep = [*settings, "-S", "model=dcgan,lsgan", "--seeds", "0,1", "score"]
    places = ["--checkpoints", str(checkpoints), "--work-dir", str(work)]
    process = _start(driver, out, *sweep, *places)
    pid = checkpointed_train_process(work, _holds_a_checkpoint(checkpoints), _ended(process, out))
    killed = Path(psutil.Process(pid).cwd()).name  # the trial's clone is <work dir>/<trial>
    os.kill(_ray_worker(pid).pid, signal.SIGKILL)  # as an OOM kill ends it: no handler, no cleanup
    process.wait(timeout=600)
    said = out.read_text()
    assert process.returncode == 0, said
    assert said.count("] ended sweep-") == 4 and "[4/4] ended" in said and "; done" in said, said
    assert f"started {killed} " in said and "again (attempt 2: its worker died)" in said, said

    found = _experiments(driver)
    params = {name: data["params"]["params.yaml"]["data"] for name, data in found.items()}
    settings_run = {(p["model"], p["seed"]) for p in params.values()}
    assert settings_run == {(model, seed) for model in ("dcgan", "lsgan") for seed in (0, 1)}, found.keys()
    for name, data in found.items():
        train = data["metrics"]["metrics/train.json"]["data"]
        assert train["steps"] == 160 and train["wall_time_s"] > 0, (name, train)
        assert data["metrics"]["metrics/scores.json"]["data"]["fid"] > 0, name
    run(["ganpipe", "compare"], driver)
    table = (driver / "reports/comparison.md").read_text()
    assert all(f"| {name} |" in table for name in found), table
    run(["ganpipe", "results", "--out", str(tmp_path / "results.md")], driver)
    results = (tmp_path / "results.md").read_text().splitlines()
    rows = [line for line in results if line.startswith("| ") and "---" not in line][1:]
    assert sorted(row.split(" | ")[0].strip("| ") for row in rows) == ["dcgan", "lsgan"], rows  # 2 seeds each

    # The killed trial: its retry resumed, and ended in the weights of a run never stopped.
    assert "resuming from " in (work / f"{killed}.log").read_text()
    model, seed = params[killed]["model"], params[killed]["seed"]
    assert_same_weights_as_uninterrupted(driver, killed, {**RESUMABLE, "model": model, "seed": seed})

    again = run(_sweep_command(*sweep, *places), driver, env=_env(driver)).stdout
    assert again.count("skipped sweep-") == 4 and "started" not in again, again
    assert set(_experiments(driver)) == set(found)


def test_a_failed_trial_blocks_nothing_and_ctrl_c_cancels_the_rest(driver: Path, tmp_path: Path) -> None:
    work, out = tmp_path / "workers", tmp_path / "sweep.out"
    # checkpoint_every 0 is refused by the train stage; the other trial would train for minutes.
    sweep = ["-S", "train.epochs=3000", "-S", "train.checkpoint_every=0,8", "--seeds", "5", "train"]
    process = _start(
        driver, out, *sweep, "--checkpoints", str(tmp_path / "checkpoints"), "--work-dir", str(work)
    )
    failed = "train.checkpoint_every = 0 is not allowed"
    pid = checkpointed_train_process(work, lambda _pid: failed in out.read_text(), _ended(process, out))
    training = Path(psutil.Process(pid).cwd()).name
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    process.wait(timeout=120)
    said = out.read_text()
    assert process.returncode == 1 and "[1/2, 1 failed] FAILED sweep-" in said, said
    assert "error: interrupted: 1 unfinished trial cancelled" in said, said
    assert train_process(work) is None and not (work / training).exists()
    remote = driver.parent / "remote.git"
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], remote).stdout.split()
    assert not [ref for ref in refs if ref.endswith(f"/{training}")], refs
