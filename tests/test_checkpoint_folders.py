"""Checkpoint folders: where a relative train.checkpoint_dir lands, the lock that keeps two runs of the
same settings apart, and `ganpipe checkpoints [--prune]`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run, stage_env, tiny_params, write_params

from ganpipe.cli import main as ganpipe_main
from ganpipe.config import validate
from ganpipe.gan import inventory
from ganpipe.gan.checkpoint import (
    CHECKPOINT_FILE,
    LOCK_FILE,
    RECORD_FILE,
    ROOT_ENV,
    claim,
    resolve_checkpoint_dir,
)
from ganpipe.gan.train import TRAIN_SCRIPT, run_key, train
from ganpipe.pipeline import locks, paths
from ganpipe.pipeline.deps import code_digest
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import file_md5, write_json


def test_relative_checkpoint_dir_is_under_the_repository_dvc_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A queued stage runs in <root>/.dvc/tmp/exps/tmp*, with DVC_ROOT=<root> (DVC 3.67)."""
    root, copy = tmp_path / "repo", tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv(ROOT_ENV, str(root))
    assert resolve_checkpoint_dir(".ganpipe/checkpoints") == root / ".ganpipe/checkpoints"
    assert resolve_checkpoint_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # absolute: as is

    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "moved"))  # the repository is gone: the cwd, and a warning
    assert resolve_checkpoint_dir("ck") == copy / "ck"
    assert "is not a DVC repository" in capsys.readouterr().err
    monkeypatch.delenv(ROOT_ENV)  # outside DVC
    assert resolve_checkpoint_dir("ck") == copy / "ck"


def _workdir(root: Path, processed: Path, params: dict[str, Any]) -> Path:
    """A folder with the processed data and params.yaml, as the train stage finds them."""
    shutil.copytree(processed, root / paths.PROCESSED_DIR)
    write_params(root, params)
    return root


def test_a_second_run_of_the_same_settings_is_refused_until_the_first_dies(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "checkpoints"  # one folder for two workspaces, as two queue workers share the root
    params = validate(tiny_params(model="dcgan", train__epochs=500, train__checkpoint_dir=str(shared)))
    first = _workdir(tmp_path / "first", processed_digits(), params)
    second = _workdir(tmp_path / "second", processed_digits(), params)
    key = run_key(params, torch.device("cpu"), file_md5(first / paths.PROCESSED_TRAIN))
    lock = shared / key / LOCK_FILE
    monkeypatch.delenv(ROOT_ENV, raising=False)

    worker = subprocess.Popen(
        [sys.executable, "-m", "stages.train"],
        cwd=first,
        env=dict(stage_env(REPO), OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300  # a loaded CPU slows the stage's start
        while not locks.is_locked(lock) and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert locks.is_locked(lock), "the first run never took the folder's lock"

        monkeypatch.chdir(second)
        with pytest.raises(GanpipeError) as refused:
            train(params)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"{shared / key}: another run of the same settings is training here")
        assert f"pid {worker.pid}:" in message and f"kill {worker.pid}" in message
    finally:
        worker.send_signal(signal.SIGKILL)  # kill -9: the kernel releases its flock
        worker.wait()
    assert not locks.is_locked(lock)
    folder = claim(shared / key, {"device": "cpu", "data_md5": "", "code": ""})  # free again
    folder.finish()
    assert not (shared / key).exists()


def test_finishing_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    folder = claim(tmp_path / "run", {"device": "cpu", "data_md5": "", "code": ""})
    (tmp_path / "run" / f".{CHECKPOINT_FILE}.k3j2.tmp").write_bytes(b"half a checkpoint")
    folder.finish()
    assert not (tmp_path / "run").exists()


def _git_dvc_repo(root: Path, params: dict[str, Any]) -> Path:
    root.mkdir()
    for name in ("stages", "ganpipe"):  # the code whose digest keys the runs
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(root, params)
    (root / "dvc.yaml").write_text("stages: {}\n")
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "ci@ganpipe.invalid"], root)
    run(["git", "config", "user.name", "ganpipe tests"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "settings"], root)
    return root


def _killed_run(checkpoints: Path, params: dict[str, Any], code: str, save: bool = True) -> Path:
    """A folder as a killed run of `params` leaves it: its record and (if `save`) a checkpoint."""
    folder = checkpoints / run_key(params, torch.device("cpu"), "data-md5", code)
    folder.mkdir(parents=True)
    write_json(
        folder / RECORD_FILE, {"device": "cpu", "data_md5": "data-md5", "code": code, "params": params}
    )
    if save:
        torch.save({"step": 8, "weights": torch.zeros(1000)}, folder / "checkpoint.pt")
    return folder


def test_checkpoints_command_lists_and_prunes_the_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = validate(tiny_params())
    repo = _git_dvc_repo(tmp_path / "repo", params)
    # A failed or queued experiment's settings can come back: `dvc exp run --queue` them later.
    run([sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", "seed5", "-S", "seed=5"], repo)
    monkeypatch.chdir(repo)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    checkpoints = Path.cwd() / params["train"]["checkpoint_dir"]
    code = code_digest(TRAIN_SCRIPT, repo)

    workspace = _killed_run(checkpoints, params, code)
    queued = _killed_run(checkpoints, {**params, "seed": 5}, code)
    forgotten = _killed_run(checkpoints, {**params, "seed": 7}, code)  # a param changed since
    old_code = _killed_run(checkpoints, params, "0" * 64)  # the train stage's code changed since
    unsaved = _killed_run(checkpoints, {**params, "seed": 8}, code, save=False)  # killed before a save
    training = _killed_run(checkpoints, {**params, "seed": 9}, code)
    holder = subprocess.Popen(  # a run training in that folder: it holds the lock
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ganpipe.pipeline.locks import try_lock; "
            "assert try_lock(Path(sys.argv[1])) is not None; print('held', flush=True); time.sleep(600)",
            str(training / LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=stage_env(REPO),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        ganpipe_main(["checkpoints"])
        *rows, summary = capsys.readouterr().out.splitlines()
        listed = {folder: next(row for row in rows if folder.name in row) for folder in checkpoints.iterdir()}
        assert len(rows) == len(listed) == 6
        expected = {
            workspace: ("resumable", f"{params['model']} seed 0, params.yaml"),
            queued: ("resumable", "seed 5, experiment seed5"),
            forgotten: ("stale", "its settings are in no params.yaml or experiment"),
            old_code: ("stale", "the train stage's code changed since"),
            unsaved: ("stale", "no checkpoint: its run stopped before the first save"),
            training: ("in use", f"pid {holder.pid} is training here"),
        }
        for folder, (state, why) in expected.items():
            assert listed[folder].startswith(state) and listed[folder].endswith(why), listed[folder]
        size = sum(path.stat().st_size for path in workspace.iterdir())
        assert f"  {inventory.human_size(size)}  " in listed[workspace]
        assert summary.startswith("6 checkpoint folders") and "; 3 stale" in summary

        ganpipe_main(["checkpoints", "--prune"])
        assert "; removed 3 stale" in capsys.readouterr().out.splitlines()[-1]
        assert {path.name for path in checkpoints.iterdir()} == {workspace.name, queued.name, training.name}
    finally:
        holder.kill()
        holder.wait()
