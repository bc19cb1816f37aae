"""The GAN zoo and the training loop: every model trains, runs are deterministic and resumable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_params

from ganpipe import paths
from ganpipe.data import download, preprocess
from ganpipe.errors import GanpipeError, ParamsError
from ganpipe.io import load_torch
from ganpipe.losses import LOSSES, register_loss, wasserstein_critic, wasserstein_generator
from ganpipe.models import generator_from_checkpoint
from ganpipe.params import validate
from ganpipe.train import run_key, train

MODELS = ("wgan", "wgan_gp", "lsgan", "dcgan", "hinge")
TIMING_KEYS = {"wall_time_s", "train_time_s", "critic_images_per_s"}


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Path]:
    """Preprocessed digits for each (channels, size), made once through the data stage functions."""
    made = {}
    for channels in (1, 3):
        for size in (28, 64):
            root = tmp_path_factory.mktemp(f"digits_{channels}_{size}")
            cwd = os.getcwd()
            os.chdir(root)
            try:
                params = tiny_params(data__channels=channels, data__image_size=size)
                download(params["data"])
                preprocess(params)
            finally:
                os.chdir(cwd)
            made[(channels, size)] = root / paths.PROCESSED_DIR
    return made


def _workdir(tmp_path: Path, processed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(processed_dir, tmp_path / paths.PROCESSED_DIR)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("size", (28, 64))
@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(
    model: str, channels: int, size: int, processed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed[(channels, size)], monkeypatch)
    params = validate(
        tiny_params(
            model=model,
            data__channels=channels,
            data__image_size=size,
            train__max_steps=6,
            train__tensorboard=model == "dcgan",
        )
    )
    metrics = train(params)

    assert metrics["steps"] == 6
    assert metrics["generator_steps"] == 6 // params["models"][model]["n_critic"]
    assert all(np.isfinite(metrics[key]) for key in ("loss_g", "loss_d", "wasserstein"))
    rows = paths.LOSSES_TSV.read_text().splitlines()
    assert rows[0].split("\t") == ["step", "epoch", "loss_g", "loss_d", "wasserstein", "gp"]
    assert len(rows) == 1 + metrics["generator_steps"]
    has_gp = params["models"][model]["gp_lambda"] > 0
    assert all((row.split("\t")[5] != "") == has_gp for row in rows[1:])
    generator = generator_from_checkpoint(load_torch(paths.GENERATOR))
    assert generator(torch.randn(2, params["arch"]["nz"])).shape == (2, channels, size, size)
    with np.load(paths.EPOCH_SAMPLES) as saved:
        assert saved["images"].shape == (1, 16, channels, size, size)
    assert json.loads(paths.TRAIN_METRICS.read_text()) == metrics
    assert not list(Path(params["train"]["checkpoint_dir"]).rglob("checkpoint.pt"))  # finished runs clean up
    if model == "dcgan":
        assert list(Path("runs").rglob("events.out.tfevents.*"))


def _train_in(root: Path, processed_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    shutil.copytree(processed_dir, root / paths.PROCESSED_DIR)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return train(params)
    finally:
        os.chdir(cwd)


def test_same_seed_gives_bit_identical_weights(processed: dict, tmp_path: Path) -> None:
    params = validate(tiny_params(model="wgan_gp"))
    params["models"]["wgan_gp"].update(dropout_d=0.2, ema_decay=0.9)
    first = _train_in(tmp_path / "a", processed[(1, 28)], params)
    second = _train_in(tmp_path / "b", processed[(1, 28)], params)

    for name in ("generator.pt", "critic.pt", "generator_ema.pt", "epoch_samples.npz"):
        assert (tmp_path / "a/data/train" / name).read_bytes() == (
            tmp_path / "b/data/train" / name
        ).read_bytes()
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == {
        k: v for k, v in second.items() if k not in TIMING_KEYS
    }
    other_seed = validate(tiny_params(model="wgan_gp", seed=1))
    _train_in(tmp_path / "c", processed[(1, 28)], other_seed)
    assert (tmp_path / "a/data/train/critic.pt").read_bytes() != (
        tmp_path / "c/data/train/critic.pt"
    ).read_bytes()


def test_nan_loss_stops_within_one_step_and_keeps_checkpoint(
    processed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"critic": 0}

    def exploding_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
        calls["critic"] += 1
        loss = wasserstein_critic(real, fake, smoothing)
        return loss * float("nan") if calls["critic"] >= 7 else loss

    register_loss("exploding", exploding_critic, wasserstein_generator)
    try:
        _workdir(tmp_path, processed[(1, 28)], monkeypatch)
        params = tiny_params(model="boom", train__checkpoint_every=2)
        params["models"]["boom"] = {**params["models"]["lsgan"], "loss": "exploding", "n_critic": 1}
        params = validate(params)
        with pytest.raises(GanpipeError, match=r"diverged at step 7 .*loss_d = nan"):
            train(params)
    finally:
        del LOSSES["exploding"]
    (checkpoint,) = Path(params["train"]["checkpoint_dir"]).rglob("checkpoint.pt")
    state = load_torch(checkpoint)
    assert state["step"] == 6  # the last good one: saved every 2 steps, the NaN came at step 7
    assert all(np.isfinite(row[3]) for row in state["log"])
    assert not paths.TRAIN_METRICS.exists()


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {Path.cwd() / 'payload-ran'}",))


def test_checkpoint_with_pickled_payload_is_refused(
    processed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed[(1, 28)], monkeypatch)
    params = validate(tiny_params(model="wgan"))
    from ganpipe.io import file_md5  # the key is a hash of params, data and code

    key = run_key(params, torch.device("cpu"), file_md5(paths.PROCESSED_TRAIN))
    checkpoint = Path(params["train"]["checkpoint_dir"]) / key / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"step": 3, "generator": _Payload()}, checkpoint)

    with pytest.raises(GanpipeError, match="refused to load"):
        train(params)
    assert not (tmp_path / "payload-ran").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models.hinge.clip": 0.05}, "no sense with loss 'hinge'"),
        ({"models.wgan.label_smoothing": 0.1}, "no sense with loss 'wasserstein'"),
        ({"models.wgan_gp.clip": 0.01}, "keep one"),
        ({"models.wgan.spectral_norm_d": True}, "keep one"),
    ],
)
def test_option_conflicts_are_refused(overrides: dict[str, Any], message: str) -> None:
    from conftest import set_params

    with pytest.raises(ParamsError, match=message):
        validate(set_params(tiny_params(), overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train__bf16": True}, "train.bf16 = true needs a CUDA device"),
        ({"train__compile": True}, "train.compile = true needs a CUDA device"),
        ({"train__batch_size": 1000}, "exceeds the 256 training images"),
        ({"train__eval_every": 1}, "classifier.pt: not found, and train.eval_every needs it"),
    ],
)
def test_training_options_checked_before_training(
    overrides: dict[str, Any], message: str, processed: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed[(1, 28)], monkeypatch)
    with pytest.raises(GanpipeError, match=message):  # ParamsError (exit 2) is a GanpipeError
        train(validate(tiny_params(**overrides)))
    assert not paths.TRAIN_DIR.exists()


def _stage_dir(root: Path, processed_dir: Path, params: dict[str, Any]) -> Path:
    shutil.copytree(processed_dir, root / paths.PROCESSED_DIR)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def test_resume_after_kill_is_bit_identical(processed: dict, tmp_path: Path) -> None:
    # Big enough that the run lasts a few seconds; dropout + EMA + GP exercise every RNG stream.
    params = tiny_params(
        model="wgan_gp", arch__ngf=32, arch__ndf=32, train__epochs=4, train__checkpoint_every=3
    )
    params["models"]["wgan_gp"].update(dropout_d=0.2, ema_decay=0.95)
    env = dict(os.environ, PYTHONPATH=str(REPO), CI="1")
    command = [sys.executable, str(REPO / "stages" / "train.py")]

    whole = _stage_dir(tmp_path / "whole", processed[(1, 28)], params)
    subprocess.run(command, cwd=whole, env=env, check=True, capture_output=True)

    killed = _stage_dir(tmp_path / "killed", processed[(1, 28)], params)
    process = subprocess.Popen(
        command, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = killed / params["train"]["checkpoint_dir"]
    deadline = time.monotonic() + 120
    while (
        not list(checkpoints.rglob("checkpoint.pt"))
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # kill -9: no handler, no cleanup
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / paths.TRAIN_METRICS).exists()

    resumed = subprocess.run(command, cwd=killed, env=env, check=True, capture_output=True, text=True)
    assert "resuming from" in resumed.stderr
    for name in ("generator.pt", "critic.pt", "generator_ema.pt", "epoch_samples.npz"):
        assert (whole / paths.TRAIN_DIR / name).read_bytes() == (killed / paths.TRAIN_DIR / name).read_bytes()
    assert (whole / paths.LOSSES_TSV).read_text() == (killed / paths.LOSSES_TSV).read_text()
