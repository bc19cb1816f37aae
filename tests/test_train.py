"""The GAN zoo and the training loop: every model trains, runs are deterministic and resumable."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_params
from training import (
    BF16_CPU_FLAGS,
    TRAIN_OUTPUTS,
    assert_resume_after_kill_is_bit_identical,
    simulate_cpu_flags,
    train_in,
)

import ganpipe.gan.train
from ganpipe.config import validate
from ganpipe.gan.catalog import LOSS_OPTIONS
from ganpipe.gan.losses import LOSSES, register_loss, wasserstein_critic, wasserstein_generator
from ganpipe.gan.models import generator_from_checkpoint
from ganpipe.gan.train import run_key, train
from ganpipe.measure.classifier import train_and_evaluate
from ganpipe.measure.score import compute_train_reference, domain_fid
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import load_torch

MODELS = ("wgan", "wgan_gp", "lsgan", "dcgan", "hinge")
TIMING_KEYS = {"wall_time_s", "train_time_s", "critic_images_per_s"}


def _workdir(tmp_path: Path, processed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(processed_dir, tmp_path / paths.PROCESSED_DIR)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("size", (28, 64))
@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(
    model: str,
    channels: int,
    size: int,
    processed_digits: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _workdir(tmp_path, processed_digits(channels, size), monkeypatch)
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
    assert metrics["environment"].startswith(f"torch {torch.__version__}, numpy {np.__version__}, ")
    kernels = f", cpu {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    assert metrics["environment"].endswith(kernels)
    assert not list(Path(params["train"]["checkpoint_dir"]).rglob("checkpoint.pt"))  # finished runs clean up
    if model == "dcgan":
        assert list(Path("runs").rglob("events.out.tfevents.*"))


def test_checkpoints_follow_checkpoint_every_not_epoch_ends(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a small set an epoch is a few steps; a checkpoint (carrying every epoch's samples) at each
    epoch end made saving grow with the square of the run's length. 8 steps per epoch here."""
    _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
    saved_steps: list[int] = []
    real_save = ganpipe.gan.train.save_torch

    def recording_save(path: Path, state: Any) -> None:
        if Path(path).name == "checkpoint.pt":
            saved_steps.append(state["step"])
        real_save(path, state)

    monkeypatch.setattr(ganpipe.gan.train, "save_torch", recording_save)
    metrics = train(validate(tiny_params(model="hinge", train__epochs=3, train__checkpoint_every=5)))

    assert metrics["steps"] == 24
    assert saved_steps == [5, 10, 15, 20]
    with np.load(paths.EPOCH_SAMPLES) as saved:
        assert saved["images"].shape[0] == 3  # epoch-end samples are still taken


def test_epoch_grids_thin_the_kept_sample_grids_and_keep_the_last_epoch(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    """At most train.epoch_grids grids: past that the stride doubles (1, 2, 4 epochs), and the last
    epoch's grid is kept even off the stride. 10 epochs, at most 3: epochs 4, 8 and 10. The cap
    changes only which grids are kept: the weights match those of a run that keeps every grid."""
    thinned, every = (tmp_path / "thinned", tmp_path / "every")
    for root, cap in ((thinned, 3), (every, 10)):
        train_in(
            root,
            processed_digits(1, 28),
            validate(tiny_params(model="hinge", train__epochs=10, train__epoch_grids=cap)),
        )
    with np.load(thinned / paths.EPOCH_SAMPLES) as kept, np.load(every / paths.EPOCH_SAMPLES) as all_grids:
        assert kept["epochs"].tolist() == [4, 8, 10]
        assert all_grids["epochs"].tolist() == list(range(1, 11))
        assert np.array_equal(kept["images"], all_grids["images"][[3, 7, 9]])
    for name in ("generator.pt", "critic.pt"):
        weights = thinned / paths.TRAIN_DIR / name
        assert weights.read_bytes() == (every / paths.TRAIN_DIR / name).read_bytes()


def test_same_seed_gives_bit_identical_weights(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    params = validate(tiny_params(model="wgan_gp"))
    params["models"]["wgan_gp"].update(dropout_d=0.2, ema_decay=0.9)
    first = train_in(tmp_path / "a", processed_digits(1, 28), params)
    second = train_in(tmp_path / "b", processed_digits(1, 28), params)

    for name in ("generator.pt", "critic.pt", "generator_ema.pt", "epoch_samples.npz"):
        assert (tmp_path / "a/data/train" / name).read_bytes() == (
            tmp_path / "b/data/train" / name
        ).read_bytes()
    assert {k: v for k, v in first.items() if k not in TIMING_KEYS} == {
        k: v for k, v in second.items() if k not in TIMING_KEYS
    }
    other_seed = validate(tiny_params(model="wgan_gp", seed=1))
    train_in(tmp_path / "c", processed_digits(1, 28), other_seed)
    assert (tmp_path / "a/data/train/critic.pt").read_bytes() != (
        tmp_path / "c/data/train/critic.pt"
    ).read_bytes()


@pytest.mark.parametrize("precision", ("fp32", "bf16"))
def test_nan_loss_stops_within_one_step_and_keeps_checkpoint(
    precision: str, processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cpu_flags(monkeypatch, BF16_CPU_FLAGS)  # bf16 runs here on any CPU, emulated where need be
    calls = {"critic": 0}

    def exploding_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
        calls["critic"] += 1
        loss = wasserstein_critic(real, fake, smoothing)
        return loss * float("nan") if calls["critic"] >= 7 else loss

    monkeypatch.setitem(LOSS_OPTIONS, "exploding", ())  # a catalog entry, as a new loss needs
    register_loss("exploding", exploding_critic, wasserstein_generator)
    try:
        _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
        params = tiny_params(model="boom", train__checkpoint_every=2, train__precision=precision)
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
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
    params = validate(tiny_params(model="wgan"))
    from ganpipe.pipeline.io import file_md5  # the key is a hash of params, data and code

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
        ({"train__compile": True}, "train.compile = true needs a CUDA device"),
        ({"train__batch_size": 1000}, "exceeds the 256 training images"),
        ({"train__eval_every": 1}, "classifier.pt: not found, and train.eval_every needs it"),
    ],
)
def test_training_options_checked_before_training(
    overrides: dict[str, Any],
    message: str,
    processed_digits: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
    with pytest.raises(GanpipeError, match=message):  # ParamsError (exit 2) is a GanpipeError
        train(validate(tiny_params(**overrides)))
    assert not paths.TRAIN_DIR.exists()


def test_resume_after_kill_is_bit_identical(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    """One kill -9 and resume with every training feature that keeps state or draws random numbers on:
    a feature whose state the checkpoint missed would change the resumed run's files. (One run for all
    of them, not one each: each kill-and-resume check costs three training processes.)"""
    # Big enough that the run lasts a few seconds. Dropout, EMA, the gradient penalty's interpolates,
    # DiffAugment's draws and the conditional labels are each a stream or a state of their own.
    # checkpoint_every 4 against gp_every 3 and n_critic 5: checkpoints fall between penalty steps and
    # inside a generator step's window, so the latest penalty must come back from the checkpoint.
    # epoch_grids 2 thins the kept sample grids from the third epoch on (their stride is state too).
    params = tiny_params(
        model="wgan_gp",
        arch__ngf=32,
        arch__ndf=32,
        train__epochs=4,
        train__checkpoint_every=4,
        train__augment=["color", "translation", "cutout"],
        train__epoch_grids=2,
    )
    params["models"]["wgan_gp"].update(conditional="projection", gp_every=3, dropout_d=0.2, ema_decay=0.95)
    outputs = (*TRAIN_OUTPUTS, paths.GENERATOR_EMA)
    assert_resume_after_kill_is_bit_identical(tmp_path, processed_digits(1, 28), params, outputs)


def test_fid_during_training_leaves_the_training_unchanged(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.eval_every only watches: the FID it logs draws its noise and labels from streams of their
    own and samples in eval mode, so the weights, losses and kept grids match a run that never evaluates.
    (Otherwise results at different eval_every, like the 20,000- and 40,000-step groups, would differ
    for that reason alone.) dcgan's batch norm, dropout and DiffAugment are the state and streams an
    evaluation could disturb. No EMA: its copy of the batch-norm buffers would hide a generator
    evaluated in train mode."""
    overrides = dict(model="dcgan", arch__ngf=16, arch__ndf=16, train__augment=["color", "translation"])
    plain_params = validate(tiny_params(**overrides))
    evaluated_params = validate(tiny_params(**overrides, train__eval_every=1))
    for params in (plain_params, evaluated_params):
        params["models"]["dcgan"].update(conditional="projection", dropout_d=0.2)
    train_in(tmp_path / "plain", processed_digits(1, 28), plain_params)

    evaluated = tmp_path / "evaluated"
    shutil.copytree(processed_digits(1, 28), evaluated / paths.PROCESSED_DIR)
    monkeypatch.chdir(evaluated)
    # FID during training needs the classifier and train_reference stages' outputs
    train_and_evaluate(evaluated_params)
    compute_train_reference(evaluated_params)
    train(evaluated_params, fid=domain_fid)

    fid_rows = (evaluated / paths.FID_TSV).read_text().splitlines()[1:]
    assert [int(row.split("\t")[0]) for row in fid_rows] == [1, 2]
    assert all(np.isfinite(float(row.split("\t")[2])) for row in fid_rows)
    for output in TRAIN_OUTPUTS:
        assert (evaluated / output).read_bytes() == (tmp_path / "plain" / output).read_bytes(), output
