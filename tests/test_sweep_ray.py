"""`ganpipe sweep --engine ray` on a local Ray cluster (issue 39), with real DVC end to end.

A bare Git repository stands in for the git remote and a local folder for the DVC remote. The
driver repo runs the shared stages once and pushes them; each `ganpipe sweep` starts a local Ray
cluster on this machine (ray.init(address="local"), with every core), whose tasks clone the bare
repository, run `dvc exp run`, push, and are pulled by the driver. Skipped where Ray is not
installed (pip install -r requirements-ray.txt -c constraints.txt). Each test takes minutes of CPU:
they carry the `ray` marker (`-m "not ray"` leaves them out); CI runs them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
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
    write_params,
)

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


def test_a_2x2_sweep_lands_in_dvc_exp_show_and_its_rerun_trains_nothing(driver: Path, tmp_path: Path) -> None:
    sweep = _sweep_command("-S", "model=dcgan,lsgan", "--seeds", "0,1", "--work-dir", str(tmp_path), "train")
    first = run(sweep, driver, env=_env(driver)).stdout
    assert first.count("] started sweep-") == 4 and first.count("] ended sweep-") == 4, first
    assert "[4/4] ended" in first and "; done" in first, first

    found = _experiments(driver)
    settings = {
        (data["params"]["params.yaml"]["data"]["model"], data["params"]["params.yaml"]["data"]["seed"])
        for data in found.values()
    }
    assert settings == {(model, seed) for model in ("dcgan", "lsgan") for seed in (0, 1)}, found.keys()
    for name, data in found.items():
        train = data["metrics"]["metrics/train.json"]["data"]
        assert train["steps"] > 0 and train["wall_time_s"] > 0, (name, train)

    again = run(sweep, driver, env=_env(driver)).stdout
    assert again.count("skipped sweep-") == 4 and "started" not in again, again
    assert set(_experiments(driver)) == set(found)


def _ray_worker(pid: int) -> psutil.Process:
    """The Ray worker process (its title is `ray::run_trial`) that `pid` descends from."""
    for process in psutil.Process(pid).parents():
        if " ".join(process.cmdline()).startswith("ray::"):
            return process
    raise AssertionError(f"process {pid} runs under no Ray worker")


def test_a_trial_whose_worker_dies_resumes_and_a_failed_one_blocks_nothing(
    driver: Path, tmp_path: Path
) -> None:
    checkpoints, work = tmp_path / "shared-checkpoints", tmp_path / "workers"
    settings = [arg for key, value in RESUMABLE.items() for arg in ("-S", f"{key}={value}")]
    # checkpoint_every 0 is refused by the train stage: that trial fails while the other trains.
    sweep = _sweep_command(*settings, "-S", "train.checkpoint_every=8,0", "--seeds", "0")
    sweep += ["--checkpoints", str(checkpoints), "--work-dir", str(work), "train"]
    output = tmp_path / "sweep.out"
    with output.open("w") as out:
        driver_process = subprocess.Popen(sweep, cwd=driver, env=_env(driver), stdout=out, stderr=out)
        ended = lambda: output.read_text() if driver_process.poll() is not None else None  # noqa: E731
        pid = checkpointed_train_process(work, lambda: list(checkpoints.glob("*/checkpoint.pt")), ended)
        worker = _ray_worker(pid)
        os.kill(worker.pid, signal.SIGKILL)  # as an OOM kill ends it: no handler, no cleanup
        driver_process.wait(timeout=600)
    said = output.read_text()
    assert driver_process.returncode == 1, said  # one trial failed
    assert "again (attempt 2: its worker died)" in said, said
    assert "[2/2, 1 failed]" in said and "train.checkpoint_every = 0" in said, said
    resumed = re.search(r"\] ended (sweep-\w+)", said)
    assert resumed is not None, said
    log = (work / f"{resumed[1]}.log").read_text()
    assert "resuming from " in log, log
    assert_same_weights_as_uninterrupted(driver, resumed[1])
