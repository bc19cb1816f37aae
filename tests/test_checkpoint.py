"""Checkpoint failures end in one line with a fix, or are set aside; never a traceback or a wrong reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, stage_env, tiny_params, write_params

from ganpipe.config import validate
from ganpipe.gan.checkpoint import CORRUPT_SUFFIX, load_checkpoint, prepare_checkpoint_dir
from ganpipe.gan.train import run_key, train
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import file_md5, load_torch


@pytest.fixture
def processed(processed_digits: Callable[..., Path]) -> Path:
    return processed_digits()


def _params(**overrides: Any) -> dict[str, Any]:
    return validate(tiny_params(model="dcgan", train__epochs=1, **overrides))


def _checkpoint_path(params: dict[str, Any]) -> Path:
    key = run_key(params, torch.device("cpu"), file_md5(paths.PROCESSED_TRAIN))
    return Path(params["train"]["checkpoint_dir"]) / key / "checkpoint.pt"


def _one_line(message: str) -> bool:
    return "\n" not in message.strip()


# --- an unwritable checkpoint_dir ------------------------------------------------------------------------


def test_unwritable_checkpoint_dir_fails_before_loading_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data/processed here at all: had the data been read first, the error would name it instead."""
    monkeypatch.chdir(tmp_path)
    Path("blocker").write_text("a file where a folder should be\n")
    params = _params(train__checkpoint_dir="blocker/checkpoints")
    with pytest.raises(ParamsError) as caught:
        train(params)
    message = str(caught.value)
    assert _one_line(message)
    assert "train.checkpoint_dir" in message and "blocker/checkpoints" in message
    assert "set train.checkpoint_dir to a folder you can write" in message


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody can create files in, root included. Permission bits do not stop root (CI runs
    as root), the immutable attribute does: `chattr +i` as root, `chmod 0o500` otherwise."""
    path.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        if made.returncode != 0:  # no chattr, or a file system without the attribute (tmpfs)
            pytest.skip(f"chattr +i failed as root: {made.stderr.strip()}")
    else:
        path.chmod(0o500)
    try:
        yield path
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o700)


def test_read_only_checkpoint_dir_is_refused(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / "ro") as folder:
        with pytest.raises(ParamsError, match="not a writable folder") as caught:
            prepare_checkpoint_dir(folder)
        assert _one_line(str(caught.value)) and "train.checkpoint_dir" in str(caught.value)
        # A new folder below a read-only one is refused too (mkdir fails, not only the probe).
        with pytest.raises(ParamsError, match="not a writable folder"):
            prepare_checkpoint_dir(folder / "checkpoints")
        assert not list(folder.iterdir())  # nothing was written


def test_checkpoint_dir_is_created(tmp_path: Path) -> None:
    folder = prepare_checkpoint_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and not list(folder.iterdir())  # the write probe is gone


def test_stage_script_reports_unwritable_checkpoint_dir_in_one_line(tmp_path: Path) -> None:
    for name in ("stages", "ganpipe"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "blocker").write_text("")
    write_params(tmp_path, tiny_params(train__checkpoint_dir="blocker"))
    result = subprocess.run(
        [sys.executable, "stages/train.py"],
        cwd=tmp_path,
        env=stage_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == ParamsError.exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: train.checkpoint_dir = 'blocker'")


# --- corrupt, truncated and refused checkpoints ------------------------------------------------------------


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _empty(data: bytes) -> bytes:
    return b""


def _garbage(data: bytes) -> bytes:
    return bytes(range(256)) * 4


@pytest.mark.parametrize("damage", [_truncated, _empty, _garbage], ids=["truncated", "empty", "garbage"])
def test_corrupt_checkpoint_is_set_aside_and_the_run_starts_afresh(
    processed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: Any,
) -> None:
    shutil.copytree(processed, tmp_path / paths.PROCESSED_DIR)
    monkeypatch.chdir(tmp_path)
    params = _params()
    checkpoint = _checkpoint_path(params)
    checkpoint.parent.mkdir(parents=True)
    torch.save({"step": 1, "generator": {"weight": torch.ones(3)}}, checkpoint)
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))

    metrics = train(params)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert str(checkpoint) in warnings[0] and "starting this run afresh" in warnings[0]
    assert metrics["steps"] > 1  # started from step 0, and finished
    assert not checkpoint.exists()  # a finished run cleans up; the damaged file is kept aside
    assert checkpoint.with_name(checkpoint.name + CORRUPT_SUFFIX).exists()

    # Starting afresh is exactly a run that never saw the damaged file.
    first = load_torch(paths.GENERATOR)["state_dict"]
    shutil.rmtree(params["train"]["checkpoint_dir"])
    train(params)
    second = load_torch(paths.GENERATOR)["state_dict"]
    assert all(torch.equal(first[key], second[key]) for key in first)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {Path.cwd() / 'payload-ran'}",))


def test_pickled_code_is_refused_not_set_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "generator": _Payload()}, checkpoint)
    with pytest.raises(GanpipeError) as caught:
        load_checkpoint(checkpoint)
    message = str(caught.value)
    assert _one_line(message)
    assert message.startswith(f"{checkpoint}: refused to load") and "system" in message
    assert "delete it" in message
    assert checkpoint.exists() and not (tmp_path / "payload-ran").exists()


def test_no_checkpoint_and_a_good_one(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    assert load_checkpoint(checkpoint) is None
    torch.save({"step": 7, "weights": torch.arange(3)}, checkpoint)
    state = load_checkpoint(checkpoint)
    assert state is not None and state["step"] == 7 and torch.equal(state["weights"], torch.arange(3))
