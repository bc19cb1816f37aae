"""arch.name: resnet: every size, channel count, loss and conditioning mode; exact resume and reruns;
one-line refusals. The DCGAN nets' own tests are in test_conditional.py and test_train.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_params
from training import TRAIN_OUTPUTS, assert_resume_after_kill_is_bit_identical, train_in

from ganpipe.config import validate
from ganpipe.gan.arch.resnet import DownBlock, ResNetCritic, ResNetGenerator
from ganpipe.gan.layers import ConditionalBatchNorm
from ganpipe.gan.models import build_models, critic_from_checkpoint, generator_from_checkpoint
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.io import load_torch

# One model per loss of the registry (wgan's clipping is refused with resnet: see below).
LOSS_MODELS = ("wgan_gp", "dcgan", "lsgan", "hinge")
MODES = ("none", "projection", "acgan")
TINY_ARCH = {"name": "resnet", "nz": 8, "ngf": 8, "ndf": 8}


def resnet_params(model: str, mode: str = "none", **overrides: Any) -> dict[str, Any]:
    params = tiny_params(model=model, arch__name="resnet", **{"data__channels": 1, **overrides})
    params["models"][model]["conditional"] = mode
    return validate(params)


def _model_cfg(mode: str) -> dict[str, Any]:
    return {"spectral_norm_g": False, "spectral_norm_d": False, "dropout_d": 0.0, "conditional": mode}


@pytest.mark.parametrize("channels", (1, 3))
@pytest.mark.parametrize("size", (28, 64, 128, 224))
@pytest.mark.parametrize("mode", MODES)
def test_resnet_nets_at_every_size(size: int, channels: int, mode: str) -> None:
    torch.manual_seed(0)
    generator, critic = build_models(_model_cfg(mode), TINY_ARCH, channels, size, n_classes=5)
    labels = torch.tensor([0, 4])
    images = generator(torch.randn(2, 8), labels)
    assert images.shape == (2, channels, size, size)
    assert images.abs().max() <= 1.0
    scores, logits = critic(images, labels)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert logits is None if mode != "acgan" else logits.shape == (2, 5)
    # The heads read the sum-pooled features of the last block: one value per channel.
    pooled = critic.head.in_features
    if mode == "projection":
        assert critic.embed.weight.shape == (5, pooled)
    # Every map but the base one halves: 28 -> 14 -> 7, 64 -> ... -> 4; the last block keeps its side.
    blocks = [layer for layer in critic.body if isinstance(layer, DownBlock)]
    assert [block.downsample for block in blocks] == [True] * (len(blocks) - 1) + [False]
    assert blocks[0].first and not any(block.first for block in blocks[1:])


def test_resnet_layout_matches_the_design() -> None:
    """Widths from ngf/ndf (finest ngf/4, doubling towards the base map), conditional batch norm in
    every up-block when conditional, spectral norm on every critic layer whatever spectral_norm_d."""
    generator, critic = build_models(_model_cfg("projection"), {**TINY_ARCH, "ngf": 64, "ndf": 64}, 1, 28, 10)
    assert isinstance(generator, ResNetGenerator) and isinstance(critic, ResNetCritic)
    assert [block.conv1.out_channels for block in generator.blocks] == [32, 16]
    assert generator.project.out_features == 64 * 7 * 7
    norms = [m for block in generator.blocks for m in (block.norm1, block.norm2)]
    assert all(isinstance(norm, ConditionalBatchNorm) for norm in norms)
    assert not isinstance(generator.norm, ConditionalBatchNorm)  # the final one stays plain (StudioGAN)
    blocks = [layer for layer in critic.body if isinstance(layer, DownBlock)]
    assert [block.conv1.out_channels for block in blocks] == [16, 32, 64]
    weighted = [
        m for m in critic.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))
    ]
    assert weighted and all(hasattr(m, "parametrizations") for m in weighted)
    assert not any(hasattr(m, "parametrizations") for m in generator.modules())  # spectral_norm_g false


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", LOSS_MODELS)
def test_resnet_trains_with_every_loss_and_mode(
    model: str, mode: str, processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    params = resnet_params(model, mode, train__max_steps=4)
    params["models"][model]["n_critic"] = 2  # generator steps within the 4 critic steps (wgan_gp: 5)
    metrics = train_in(tmp_path, processed_digits(1, 28), params)
    assert metrics["steps"] == 4
    assert all(np.isfinite(metrics[key]) for key in ("loss_g", "loss_d", "wasserstein"))
    saved = load_torch(tmp_path / paths.GENERATOR)
    assert saved["config"]["arch"] == "resnet"
    generator = generator_from_checkpoint(saved)
    labels = torch.tensor([0, 9]) if mode != "none" else None
    assert generator(torch.randn(2, params["arch"]["nz"]), labels).shape == (2, 1, 28, 28)
    critic = critic_from_checkpoint(load_torch(tmp_path / paths.CRITIC))
    assert isinstance(critic, ResNetCritic)


def test_resnet_rgb_64_with_augment_ema_and_lazy_penalty(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    params = resnet_params(
        "wgan_gp",
        "acgan",
        data__channels=3,
        data__image_size=64,
        train__max_steps=4,
        train__augment=["color", "translation", "cutout"],
    )
    params["models"]["wgan_gp"].update(
        n_critic=1, ema_decay=0.9, gp_every=2, dropout_d=0.1, spectral_norm_g=True
    )
    metrics = train_in(tmp_path, processed_digits(3, 64), params)
    assert metrics["steps"] == 4 and np.isfinite(metrics["gp"])
    generator = generator_from_checkpoint(load_torch(tmp_path / paths.GENERATOR_EMA))
    assert generator(torch.randn(2, params["arch"]["nz"]), torch.tensor([1, 2])).shape == (2, 3, 64, 64)


def test_resnet_reruns_are_bit_identical(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    params = resnet_params("hinge", "projection", train__max_steps=6, train__augment=["translation"])
    params["models"]["hinge"].update(ema_decay=0.9)
    for name in ("first", "second"):
        train_in(tmp_path / name, processed_digits(1, 28), params)
    for output in (*TRAIN_OUTPUTS, paths.GENERATOR_EMA):
        assert (tmp_path / "first" / output).read_bytes() == (tmp_path / "second" / output).read_bytes(), (
            output
        )


def test_resnet_resume_after_kill_is_bit_identical(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    params = resnet_params("wgan_gp", "projection", train__checkpoint_every=3)
    params["models"]["wgan_gp"].update(ema_decay=0.9, gp_every=2)
    assert_resume_after_kill_is_bit_identical(tmp_path, processed_digits(1, 28), params)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"arch__name": "vgg"},
            "params.yaml: arch.name = 'vgg' is not allowed; expected one of dcgan, resnet",
        ),
        (
            {"arch__name": "resnet", "model": "wgan"},
            "params.yaml: models.wgan.clip = 0.01 with arch.name = resnet",
        ),
    ],
)
def test_bad_arch_is_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamsError) as error:
        validate(tiny_params(**change))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_clipping_elsewhere_does_not_block_resnet() -> None:
    """Only the selected model is checked: the wgan entry keeps its clip and resnet still runs hinge."""
    params = validate(tiny_params(arch__name="resnet", model="hinge"))
    assert params["models"]["wgan"]["clip"] == 0.01
