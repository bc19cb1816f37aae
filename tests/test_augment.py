"""DiffAugment's three operations do what the reference implementation does, from checkpointable draws.
Resume after kill -9 with it on: tests/test_train.py, the one run with every training feature on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_params
from training import TRAIN_OUTPUTS, train_in

from ganpipe.config import validate
from ganpipe.gan.augment import DRAWS, DiffAugment
from ganpipe.gan.losses import LOSSES, gradient_penalty
from ganpipe.gan.train import Run, Steps
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.params import model_config


def _augment(policy: list[str], uniform: list[float], batch: int = 1, side: int = 16) -> DiffAugment:
    augment = DiffAugment(policy, batch, side, "cpu")
    augment.uniform.copy_(torch.tensor([uniform] * batch))
    return augment


def test_no_policy_and_neutral_colour_draws_are_the_identity() -> None:
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.equal(DiffAugment([], 3, 16, "cpu")(x), x)
    neutral = _augment(["color"], [0.5] * DRAWS, batch=3)  # brightness +0, saturation ×1, contrast ×1
    torch.testing.assert_close(neutral(x), x)


def test_colour_shifts_brightness_and_scales_saturation_and_contrast() -> None:
    x = torch.rand(1, 3, 8, 8)
    brighter = _augment(["color"], [1.0, 0.5, 0.5, 0, 0, 0, 0], side=8)
    torch.testing.assert_close(brighter(x), x + 0.5)
    gray = _augment(["color"], [0.5, 0.0, 0.5, 0, 0, 0, 0], side=8)  # saturation × 0: channel mean
    torch.testing.assert_close(gray(x), x.mean(dim=1, keepdim=True).expand_as(x))
    flat = _augment(["color"], [0.5, 0.5, 0.0, 0, 0, 0, 0], side=8)  # contrast × 0.5 about the mean
    mean = x.mean()
    torch.testing.assert_close(flat(x), (x - mean) * 0.5 + mean)


def test_translation_shifts_by_up_to_an_eighth_with_zero_padding() -> None:
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16) + 1
    # side 16: shifts of -2..2 (5 values); draw 0.99 -> +2 rows, 0.0 -> -2 columns.
    shifted = _augment(["translation"], [0, 0, 0, 0.99, 0.0, 0, 0])(x)
    expected = torch.zeros_like(x)
    expected[..., :14, 2:] = x[..., 2:, :14]  # out[r, c] = in[r + 2, c - 2]
    assert torch.equal(shifted, expected)
    centred = _augment(["translation"], [0, 0, 0, 0.5, 0.5, 0, 0])(x)  # the middle value: no shift
    assert torch.equal(centred, x)


def test_contrast_scales_about_each_images_own_mean() -> None:
    x = torch.stack([torch.rand(3, 8, 8), torch.rand(3, 8, 8) + 2.0])
    flat = _augment(["color"], [0.5, 0.5, 0.0, 0, 0, 0, 0], batch=2, side=8)(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(flat, (x - mean) * 0.5 + mean)


def test_translation_by_more_than_the_padding_still_fills_zeros() -> None:
    """side 32: shifts of -4..4, beyond the one-pixel padding the gather reads: rows and columns that
    come from outside the image must be zero in both directions."""
    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32) + 1
    up_left = _augment(["translation"], [0, 0, 0, 0.0, 0.0, 0, 0], side=32)(x)  # -4 rows, -4 columns
    expected = torch.zeros_like(x)
    expected[..., 4:, 4:] = x[..., :28, :28]  # out[r, c] = in[r - 4, c - 4]
    assert torch.equal(up_left, expected)
    down_right = _augment(["translation"], [0, 0, 0, 0.99, 0.99, 0, 0], side=32)(x)
    expected = torch.zeros_like(x)
    expected[..., :28, :28] = x[..., 4:, 4:]
    assert torch.equal(down_right, expected)


def test_cutout_of_an_odd_square_and_distinct_row_and_column_draws() -> None:
    """side 14: a 7 × 7 square, centres 0..13 (14 positions for an odd side, as in the reference);
    row centre from draw 5, column centre from draw 6."""
    x = torch.ones(1, 1, 14, 14)
    out = _augment(["cutout"], [0, 0, 0, 0, 0, 0.5, 0.99], side=14)(x)  # centres row 7, column 13
    zero = (out[0, 0] == 0).nonzero()
    assert (zero[:, 0].min(), zero[:, 0].max(), zero[:, 1].min(), zero[:, 1].max()) == (4, 10, 10, 13)


def test_cutout_zeroes_a_half_side_square_clipped_to_the_image() -> None:
    x = torch.ones(1, 2, 16, 16)
    out = _augment(["cutout"], [0, 0, 0, 0, 0, 0.5, 0.5])(x)  # centre 8 of 17 positions: rows 4..11
    assert torch.equal(out[0, 0] == 0, out[0, 1] == 0)  # the same mask on every channel
    zero = (out[0, 0] == 0).nonzero()
    assert (zero[:, 0].min(), zero[:, 0].max(), zero[:, 1].min(), zero[:, 1].max()) == (4, 11, 4, 11)
    corner = _augment(["cutout"], [0, 0, 0, 0, 0, 0.0, 0.0])(x)  # centre 0: only rows/cols 0..3 remain
    assert int((corner[0, 0] == 0).sum()) == 4 * 4


def test_draws_come_from_the_given_generator_and_differ_per_image() -> None:
    x = torch.rand(4, 3, 16, 16)
    outputs = []
    for seed in (1, 1, 2):
        augment = DiffAugment(["color", "translation", "cutout"], 4, 16, "cpu")
        augment.draw(torch.Generator().manual_seed(seed))
        outputs.append(augment(x))
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])
    assert len({tuple(row.tolist()) for row in augment.uniform}) == 4


def test_gradient_penalty_differentiates_through_every_op() -> None:
    """The project's penalty on a critic that applies T first: its double backward goes through T and
    second-order gradients reach the critic's weights."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 1)
    )
    augment = DiffAugment(["color", "translation", "cutout"], 2, 16, "cpu")
    augment.draw(torch.Generator().manual_seed(0))

    def critic(x: torch.Tensor, y: None) -> tuple[torch.Tensor, None]:
        return net(augment(x)).squeeze(1), None  # the project's critic signature

    real, fake = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    penalty = gradient_penalty(critic, real, fake, torch.full((2, 1, 1, 1), 0.5))
    penalty.backward()
    weight_grad = net[0].weight.grad
    assert weight_grad is not None and torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0


def test_unknown_ops_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown DiffAugment ops.*; use color, translation, cutout"):
        DiffAugment(["colour"], 1, 16, "cpu")


# --- in the training loop ------------------------------------------------------------------------------


def _augmented_params(**overrides: Any) -> dict[str, Any]:
    settings = {"model": "wgan_gp", "train__augment": ["color", "translation", "cutout"], **overrides}
    params = validate(tiny_params(**settings))
    params["models"]["wgan_gp"].update(dropout_d=0.2, ema_decay=0.9)
    return params


def test_augmented_training_is_bit_identical_and_differs_from_plain(processed_digits, tmp_path: Path) -> None:
    runs = [train_in(tmp_path / name, processed_digits(), _augmented_params()) for name in ("a", "b")]
    assert runs[0]["loss_d"] == runs[1]["loss_d"]
    for output in TRAIN_OUTPUTS:
        assert (tmp_path / "a" / output).read_bytes() == (tmp_path / "b" / output).read_bytes(), output
    train_in(tmp_path / "plain", processed_digits(), _augmented_params(train__augment=[]))
    assert (tmp_path / "a" / paths.CRITIC).read_bytes() != (tmp_path / "plain" / paths.CRITIC).read_bytes()


@pytest.mark.parametrize("bad", [["colour"], ["color", "color"], "color", [1]])
def test_augment_policy_is_validated(bad: Any) -> None:
    with pytest.raises(ParamsError, match=r"train\.augment = .* among color, translation, cutout"):
        validate(tiny_params(train__augment=bad))


def _critic_scores(critic: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """An unconditional critic's scores: the one place this file calls a critic."""
    return critic(images, None)[0]


@pytest.mark.parametrize("model", ["wgan_gp", "dcgan"])
def test_generator_step_scores_augmented_fakes(model: str) -> None:
    """The generator's loss is L_G(D(T(G(z)))) with the step's own draws of z and T: recomputed from
    the weights before the step it matches exactly, and it differs from the loss without T."""
    params = validate(tiny_params(model=model, train__augment=["color", "translation", "cutout"]))
    run = Run(params, torch.device("cpu"), channels=1, size=16, prior=torch.full((10,), 0.1))
    images = torch.randint(0, 256, (params["train"]["batch_size"], 1, 16, 16), dtype=torch.uint8)
    steps = Steps(run, params, images, torch.zeros(len(images), dtype=torch.int64))
    generator_before = copy.deepcopy(run.generator)
    steps.generator_step()
    (loss_g,) = steps.outputs["generator"]
    loss = LOSSES[model_config(params)["loss"]]
    with torch.no_grad():
        fakes = generator_before(steps.z_generator)
        scores_augmented = _critic_scores(run.critic, steps.augment_generator(fakes))
        scores_plain = _critic_scores(run.critic, fakes)
    assert torch.equal(loss_g, loss.generator(scores_augmented))  # bit-identical: the same CPU ops
    # T changes what the critic sees (not a no-op on these draws), so without T the loss would differ.
    assert not torch.allclose(scores_augmented, scores_plain, rtol=1e-3, atol=0)
    assert not torch.equal(loss_g, loss.generator(scores_plain))
