"""Helpers shared by the training tests: processed digits made once per session, a training run in
a folder of its own, and the kill -9 / resume check every training feature must pass."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run, tiny_params

from ganpipe.data import download, preprocess
from ganpipe.gan.train import train
from ganpipe.pipeline import paths, precision

# What a finished train stage writes that must not depend on an interruption.
TRAIN_OUTPUTS = (paths.GENERATOR, paths.CRITIC, paths.EPOCH_SAMPLES, paths.LOSSES_TSV)
# /proc/cpuinfo flags of a CPU with bf16 arithmetic (Intel Sapphire Rapids has both).
BF16_CPU_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


def simulate_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str]) -> None:
    """Make the capability check (ganpipe.pipeline.precision) read `flags` as this CPU's, in this process.

    With BF16_CPU_FLAGS torch still runs bf16 autocast on a CPU without bf16 arithmetic, converting
    around each kernel: the same code path, slowly, with bf16 rounding.
    """
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)


def bf16_cpu_site(folder: Path) -> Path:
    """`folder` (created) holding a sitecustomize.py that simulates BF16_CPU_FLAGS in every Python
    process started with it first on PYTHONPATH: the stage, and torchrun's ranks, which inherit it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import ganpipe.pipeline.precision as precision\n\n"
        f"precision.cpu_flags = lambda: frozenset({sorted(BF16_CPU_FLAGS)!r})\n"
    )
    return folder


def make_processed(root: Path, channels: int = 1, size: int = 28) -> Path:
    """Preprocessed digits (TINY settings) under `root`, through the data stage functions."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = tiny_params(data__channels=channels, data__image_size=size)
        download(params["data"])
        preprocess(params)
    finally:
        os.chdir(cwd)
    return root / paths.PROCESSED_DIR


def train_in(root: Path, processed_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Run `train(params)` in `root` (created) on a copy of `processed_dir`; return train.json."""
    shutil.copytree(processed_dir, root / paths.PROCESSED_DIR)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return train(params)
    finally:
        os.chdir(cwd)


def _stage_dir(root: Path, processed_dir: Path, params: dict[str, Any]) -> Path:
    shutil.copytree(processed_dir, root / paths.PROCESSED_DIR)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def assert_resume_after_kill_is_bit_identical(
    tmp_path: Path,
    processed_dir: Path,
    params: dict[str, Any],
    outputs: tuple[Path, ...] = TRAIN_OUTPUTS,
    first_on_path: tuple[Path, ...] = (),
) -> None:
    """Train once uninterrupted; train again, kill -9 the stage after its first checkpoint and rerun it:
    every file of `outputs` must be byte-identical. `params` should make a run last a few seconds.
    `first_on_path`: folders put before the repository on the stages' PYTHONPATH (such as one holding
    a sitecustomize.py that simulates a capability of the machine)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, (*first_on_path, REPO))), CI="1")
    command = [sys.executable, str(REPO / "stages" / "train.py")]
    whole = _stage_dir(tmp_path / "whole", processed_dir, params)
    run(command, whole, env=env)  # a failure shows the stage's output, not only its status

    killed = _stage_dir(tmp_path / "killed", processed_dir, params)
    process = subprocess.Popen(
        command, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = killed / params["train"]["checkpoint_dir"]
    # Generous: a CPU shared with other jobs slows the stage's start; the assertions below name a miss.
    deadline = time.monotonic() + 600
    while (
        not list(checkpoints.rglob("checkpoint.pt"))
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # kill -9: no handler, no cleanup
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert list(checkpoints.rglob("checkpoint.pt")), "killed before its first checkpoint: nothing to resume"
    assert not (killed / paths.TRAIN_METRICS).exists()

    resumed = run(command, killed, env=env)
    assert "resuming from" in resumed.stderr
    for output in outputs:
        assert (whole / output).read_bytes() == (killed / output).read_bytes(), output
