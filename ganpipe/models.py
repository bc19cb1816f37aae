"""One parametric DCGAN generator and critic for every supported image size and channel count.

Sizes 28 and 224 start from 7×7 feature maps, 64 and 128 from 4×4; each transposed convolution
doubles the side. At 28 px this is the original PathMNIST WGAN: a fully-connected layer reshaped
into ngf·2 maps of 7×7, then two stride-2 transposed convolutions (nz 100, ngf = ndf = 64).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MAX_WIDTH_MULT = 8  # caps channels at 8·ngf / 8·ndf for the deep 128/224 px nets


def _plan(size: int) -> tuple[int, int]:
    """(base side, number of ×2 steps) that reach `size`."""
    base = 7 if size % 7 == 0 else 4
    steps = round(math.log2(size / base))
    if base * 2**steps != size:
        raise ValueError(f"unsupported image size {size}; use 28, 64, 128 or 224")
    return base, steps


def _widths(width: int, steps: int) -> list[int]:
    """Channel widths from the coarsest map to the finest: width·2^(steps-1) ... width."""
    return [width * min(2 ** (steps - 1 - i), MAX_WIDTH_MULT) for i in range(steps)]


class _LeakyReLUFunction(torch.autograd.Function):
    """leaky_relu whose backward treats the slope mask as a constant (its derivative is 0 almost
    everywhere). Autograd's own formula returns zeros for it, which the gradient penalty's double
    backward then pushes through the whole critic: a full convolution backward on zeros at every
    critic step (14% of a WGAN-GP critic step's FLOPs). Results are bit-identical."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float) -> torch.Tensor:
        y = torch.nn.functional.leaky_relu(x, slope)
        ctx.save_for_backward(y.detach())
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True), None


class LeakyReLU(nn.Module):
    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LeakyReLUFunction.apply(x, self.negative_slope)


def _maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(layer) if enabled else layer


class Generator(nn.Module):
    def __init__(self, nz: int, ngf: int, channels: int, size: int, spectral_norm: bool = False) -> None:
        super().__init__()
        self.config = {
            "nz": nz,
            "ngf": ngf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
        }
        base, steps = _plan(size)
        widths = _widths(ngf, steps)
        self.base, self.width0 = base, widths[0]
        self.project = nn.Sequential(
            _maybe_sn(nn.Linear(nz, widths[0] * base * base, bias=False), spectral_norm),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip(widths, [*widths[1:], channels])):
            last = index == steps - 1
            layers.append(_maybe_sn(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=last), spectral_norm))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(w_out), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.width0, self.base, self.base)
        return self.body(x)


class Critic(nn.Module):
    """DCGAN discriminator without batch norm, so the gradient penalty stays per sample.

    Outputs one raw score per image; each loss decides how to read it.
    """

    def __init__(
        self, ndf: int, channels: int, size: int, spectral_norm: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.config = {
            "ndf": ndf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
            "dropout": dropout,
        }
        base, steps = _plan(size)
        widths = list(reversed(_widths(ndf, steps)))
        layers: list[nn.Module] = []
        for w_in, w_out in zip([channels, *widths[:-1]], widths):
            layers += [_maybe_sn(nn.Conv2d(w_in, w_out, 4, 2, 1), spectral_norm), LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.head = _maybe_sn(nn.Linear(widths[-1] * base * base, 1), spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1)).squeeze(1)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015): conv/linear weights N(0, 0.02), batch norm N(1, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = (
                layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight
            )
            nn.init.normal_(weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def build_models(
    model_cfg: dict[str, Any], arch: dict[str, Any], channels: int, size: int
) -> tuple[Generator, Critic]:
    """The generator and critic for one `models.<name>` entry, DCGAN-initialised."""
    generator = Generator(arch["nz"], arch["ngf"], channels, size, model_cfg["spectral_norm_g"])
    critic = Critic(arch["ndf"], channels, size, model_cfg["spectral_norm_d"], model_cfg["dropout_d"])
    init_dcgan_weights(generator)
    init_dcgan_weights(critic)
    return generator, critic


def generator_from_checkpoint(saved: dict[str, Any]) -> Generator:
    """Rebuild a generator from a file written by the train stage ({'config', 'state_dict'})."""
    generator = Generator(**saved["config"])
    generator.load_state_dict(saved["state_dict"])
    return generator.eval()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
