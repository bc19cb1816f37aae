"""The lazy gradient penalty (models.<m>.gp_every): which steps, what weight, exact reruns. Resume after
kill -9 with it on: tests/test_train.py, the one run with every training feature on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from conftest import set_params, tiny_params
from training import train_in

import ganpipe.gan.train
from ganpipe.config import validate
from ganpipe.gan.catalog import LOSS_OPTIONS
from ganpipe.gan.losses import LOSSES, register_loss, wasserstein_critic, wasserstein_generator
from ganpipe.gan.train import is_penalty_step
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.streams import torch_generator

TRAINED = ("generator.pt", "critic.pt", "generator_ema.pt", "epoch_samples.npz")


@pytest.fixture
def processed(processed_digits: Callable[..., Path]) -> Path:
    return processed_digits()


def _losses(root: Path) -> list[dict[str, str]]:
    header, *rows = (root / paths.LOSSES_TSV).read_text().splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"))) for row in rows]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (0, "an integer >= 1"),
        (-2, "an integer >= 1"),
        (2.5, "an integer >= 1"),
        (True, "an integer >= 1"),
        ("4", "an integer >= 1"),
    ],
)
def test_gp_every_must_be_a_positive_integer(value: Any, allowed: str) -> None:
    with pytest.raises(ParamsError, match=f"models.wgan_gp.gp_every = .* expected {allowed}") as caught:
        validate(set_params(tiny_params(), {"models.wgan_gp.gp_every": value}))
    assert "\n" not in str(caught.value)


def test_gp_every_without_a_penalty_is_refused() -> None:
    # Checked for every entry, not only the selected model: params.yaml must be valid as a whole.
    with pytest.raises(ParamsError, match=r"models\.lsgan\.gp_every = 4 with gp_lambda = 0\.0") as caught:
        validate(set_params(tiny_params(model="wgan_gp"), {"models.lsgan.gp_every": 4}))
    assert "\n" not in str(caught.value)
    validate(set_params(tiny_params(), {"models.lsgan.gp_every": 1}))  # 1 is the plain loop: allowed


def test_penalty_steps_are_a_pure_function_of_the_step() -> None:
    assert [s for s in range(13) if is_penalty_step(s, 10.0, 4)] == [0, 4, 8, 12]
    assert [s for s in range(5) if is_penalty_step(s, 10.0, 1)] == [0, 1, 2, 3, 4]
    assert not any(is_penalty_step(s, 0.0, 1) for s in range(5))


class _Probe(torch.autograd.Function):
    """Identity whose backward records the gradient reaching the penalty: its weight in the loss."""

    weights: ClassVar[list[float]] = []

    @staticmethod
    def forward(ctx: Any, penalty: torch.Tensor) -> torch.Tensor:
        return penalty.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        _Probe.weights.append(grad.item())
        return grad


@pytest.mark.parametrize("gp_every", (1, 3, 4))
def test_penalty_weight_is_lambda_k_on_every_kth_step(
    gp_every: int, processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    critic_steps: list[int] = []  # one entry per critic loss evaluated, i.e. per critic step
    penalties: list[tuple[int, torch.Tensor]] = []  # (critic step, mixing weights) per penalty
    original = ganpipe.gan.train.gradient_penalty

    def counting_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
        critic_steps.append(len(critic_steps))
        return wasserstein_critic(real, fake, smoothing)

    def probed(
        critic: Any, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        penalties.append((len(critic_steps) - 1, alpha.clone()))
        return _Probe.apply(original(critic, real, fake, alpha, labels))

    _Probe.weights = []
    monkeypatch.setattr(ganpipe.gan.train, "gradient_penalty", probed)
    monkeypatch.setitem(LOSS_OPTIONS, "counting", ())  # a catalog entry, as a new loss needs
    register_loss("counting", counting_critic, wasserstein_generator)
    try:
        params = tiny_params(model="counted", train__max_steps=14)
        counted = {**params["models"]["wgan_gp"], "loss": "counting", "gp_every": gp_every}
        params["models"]["counted"] = counted
        params = validate(params)
        train_in(tmp_path, processed, params)
    finally:
        del LOSSES["counting"]

    cfg, batch, nz = params["models"]["counted"], params["train"]["batch_size"], params["arch"]["nz"]
    assert len(critic_steps) == 14
    assert [step for step, _ in penalties] == list(range(0, 14, gp_every))
    assert _Probe.weights == [cfg["gp_lambda"] * gp_every] * len(penalties)  # exact: λ·k, a float32 product

    # The mixing weights come from the checkpointed noise stream, drawn only on penalty steps (after z).
    noise = torch_generator(params["seed"], "train.noise")
    expected = []
    for step in range(14):
        torch.empty(batch, nz).normal_(generator=noise)
        if step % gp_every == 0:
            expected.append(torch.empty(batch, 1, 1, 1).uniform_(generator=noise))
        if (step + 1) % cfg["n_critic"] == 0:
            torch.empty(batch, nz).normal_(generator=noise)  # the generator step's noise
    assert len(expected) == len(penalties)
    assert all(torch.equal(alpha, want) for (_, alpha), want in zip(penalties, expected))


def test_losses_tsv_logs_the_latest_penalty(processed: Path, tmp_path: Path) -> None:
    # n_critic 1: one log row per critic step, so every step's logged values can be checked.
    params = tiny_params(model="wgan_gp", train__max_steps=12)
    params["models"]["wgan_gp"].update(n_critic=1, gp_every=3)
    metrics = train_in(tmp_path, processed, validate(params))

    rows = _losses(tmp_path)
    assert [int(row["step"]) for row in rows] == list(range(1, 13))
    gp = [float(row["gp"]) for row in rows]  # never empty: the step-0 penalty comes first
    for previous, row, value in zip(gp, rows[1:], gp[1:]):
        if not is_penalty_step(int(row["step"]) - 1, 10.0, 3):
            assert value == previous  # held until the next penalty step
    assert len(set(gp)) == 4  # steps 0, 3, 6, 9 computed one each
    # loss_d is the critic loss plus λ·gp (the penalty at its average weight), on every row alike:
    # the Wasserstein critic loss is -gap, so loss_d + wasserstein = λ·gp.
    for row, value in zip(rows, gp):
        assert float(row["loss_d"]) + float(row["wasserstein"]) == pytest.approx(10.0 * value, abs=1e-4)
    assert metrics["gp"] == pytest.approx(np.mean(gp), rel=1e-4)


def test_same_seed_gives_bit_identical_weights_with_lazy_penalty(processed: Path, tmp_path: Path) -> None:
    params = tiny_params(model="wgan_gp")
    params["models"]["wgan_gp"].update(gp_every=3, dropout_d=0.2, ema_decay=0.9)
    params = validate(params)
    train_in(tmp_path / "a", processed, params)
    train_in(tmp_path / "b", processed, params)
    first, second = tmp_path / "a", tmp_path / "b"
    for name in TRAINED:
        assert (first / paths.TRAIN_DIR / name).read_bytes() == (second / paths.TRAIN_DIR / name).read_bytes()
    assert (first / paths.LOSSES_TSV).read_text() == (second / paths.LOSSES_TSV).read_text()

    params["models"]["wgan_gp"]["gp_every"] = 1  # the setting does change what is trained
    train_in(tmp_path / "c", processed, params)
    assert (first / paths.CRITIC).read_bytes() != (tmp_path / "c" / paths.CRITIC).read_bytes()
