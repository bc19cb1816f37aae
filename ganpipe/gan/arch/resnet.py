"""SNGAN/BigGAN-style ResNet networks (arch.name: resnet).

Layout after StudioGAN's src/models/resnet.py and mimicry's sngan; docs/architectures.md says where
and why it differs. Its properties beside the networks (channels_last, spectral norm built into the
critic) are its entry in ganpipe.gan.catalog.ARCHITECTURES.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from ganpipe.gan.layers import (
    MAX_WIDTH_MULT,
    ConditionalBatchNorm,
    CriticNet,
    GeneratorNet,
    LeakyReLU,
    batch_norm,
    maybe_sn,
    plan,
    raw_weight,
)

# The finest map of a ResNet net has arch.ngf (arch.ndf) / RESNET_WIDTH_DIVISOR channels, each
# coarser map twice as many (capped at MAX_WIDTH_MULT times that): 16, 32, 64 at 28 px for the
# default 64. StudioGAN's widths are 4 to 16 times these; 3×3 convolutions at every resolution cost
# far more than DCGAN's strided 4×4 ones, and these keep the offline digits demo within 5 min on the
# 2-core CPU (docs/architectures.md has the timings).
RESNET_WIDTH_DIVISOR = 4


def _resnet_widths(width: int, steps: int) -> list[int]:
    """Channel widths of the steps + 1 maps, from the coarsest (the base side) to the finest."""
    finest = max(1, width // RESNET_WIDTH_DIVISOR)
    return [finest * min(2 ** (steps - k), MAX_WIDTH_MULT) for k in range(steps + 1)]


def _conv3(w_in: int, w_out: int, spectral_norm: bool, bias: bool = True) -> nn.Module:
    return maybe_sn(nn.Conv2d(w_in, w_out, 3, 1, 1, bias=bias), spectral_norm)


def _conv1(w_in: int, w_out: int, spectral_norm: bool, bias: bool = True) -> nn.Module:
    return maybe_sn(nn.Conv2d(w_in, w_out, 1, bias=bias), spectral_norm)


def _normalise(norm: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return norm(x, y) if isinstance(norm, ConditionalBatchNorm) else norm(x)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class UpBlock(nn.Module):
    """BN, ReLU, upsample ×2, conv3×3, BN, ReLU, conv3×3, plus a 1×1 conv of the upsampled input.

    The batch norms are conditional when `n_classes` > 0 (ConditionalBatchNorm). The convolutions
    have no bias, unlike StudioGAN's: every one feeds a batch norm, directly or through the shortcuts'
    1×1 convolutions (a per-channel constant stays one), which removes it, so its gradient is rounding
    noise that Adam scales up to full-size steps: biases drifting at random, which also made
    two-rank DDP runs part from one-process ones (the DCGAN generator has none either)."""

    def __init__(self, w_in: int, w_out: int, n_classes: int, spectral_norm: bool) -> None:
        super().__init__()
        self.norm1 = batch_norm(w_in, n_classes, dims=2)
        self.conv1 = _conv3(w_in, w_out, spectral_norm, bias=False)
        self.norm2 = batch_norm(w_out, n_classes, dims=2)
        self.conv2 = _conv3(w_out, w_out, spectral_norm, bias=False)
        self.shortcut = _conv1(w_in, w_out, spectral_norm, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(_upsample(torch.relu(_normalise(self.norm1, x, y))))
        h = self.conv2(torch.relu(_normalise(self.norm2, h, y)))
        return h + self.shortcut(_upsample(x))


class DownBlock(nn.Module):
    """ReLU, conv3×3, ReLU, conv3×3, avg-pool ×2, plus a shortcut (conv1×1 then avg-pool).

    `first`: SNGAN's "optimized" input block: no ReLU on the image, and its shortcut pools before
    the 1×1 conv (4 times fewer multiplies, the same linear map). Without `downsample` (the last
    block) nothing pools and the shortcut is the identity where the widths agree. The ReLUs are
    leaky_relu with slope 0 through LeakyReLU's Function: the same values, and the gradient penalty's
    double backward skips a convolution backward on zeros (see _LeakyReLUFunction).
    """

    def __init__(self, w_in: int, w_out: int, spectral_norm: bool, first: bool, downsample: bool) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        self.relu = LeakyReLU(0.0)
        self.conv1 = _conv3(w_in, w_out, spectral_norm)
        self.conv2 = _conv3(w_out, w_out, spectral_norm)
        self.shortcut = _conv1(w_in, w_out, spectral_norm) if downsample or w_in != w_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.relu(self.conv1(x if self.first else self.relu(x))))
        if self.downsample:
            h = torch.nn.functional.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:
            return h + self.shortcut(torch.nn.functional.avg_pool2d(x, 2))
        skip = self.shortcut(x)
        return h + (torch.nn.functional.avg_pool2d(skip, 2) if self.downsample else skip)


class ResNetGenerator(GeneratorNet):
    """SNGAN/BigGAN-style generator: linear to the base map (7×7 at 28/224 px, 4×4 at 64/128), one
    UpBlock per ×2 step, then BN, ReLU, conv3×3, tanh. Conditional: every block's batch norms are
    conditional on y; the final one stays plain, as StudioGAN's."""

    arch = "resnet"  # the checkpoint config's "arch" key

    def build(self, nz: int, ngf: int, channels: int, size: int, spectral_norm: bool, classes: int) -> None:
        base, steps = plan(size)
        widths = _resnet_widths(ngf, steps)
        self.base, self.width0 = base, widths[0]
        self.project = maybe_sn(nn.Linear(nz, widths[0] * base * base), spectral_norm)
        self.blocks = nn.ModuleList(
            UpBlock(w_in, w_out, classes, spectral_norm) for w_in, w_out in itertools.pairwise(widths)
        )
        self.norm = nn.BatchNorm2d(widths[-1])
        self.to_image = _conv3(widths[-1], channels, spectral_norm)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images from noise `z` (N, nz) and, for a conditional generator, class labels `y` (N,)."""
        if self.conditional and y is None:
            raise ValueError("a conditional generator needs class labels y")
        x = self.project(z).view(z.shape[0], self.width0, self.base, self.base)
        for block in self.blocks:
            x = block(x, y if self.conditional else None)
        return torch.tanh(self.to_image(torch.relu(self.norm(x))))


class ResNetCritic(CriticNet):
    """SNGAN-style critic: an optimized DownBlock on the image, one DownBlock per further ×2 step,
    one more block at the base side without pooling, ReLU, global SUM pooling, then the heads
    (ConditionalHeads: linear score, projection <embed(y), h>, ACGAN logits) on the pooled h.

    `spectral_norm` puts spectral norm on every layer, heads and embedding included (build_models
    always sets it); `dropout` follows each block. No batch norm: the gradient penalty stays per
    sample.
    """

    arch = "resnet"  # the checkpoint config's "arch" key

    def build(self, ndf: int, channels: int, size: int, spectral_norm: bool, dropout: float) -> int:
        _, steps = plan(size)
        widths = list(reversed(_resnet_widths(ndf, steps)))  # finest first
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip([channels, *widths[:-1]], widths)):
            layers.append(DownBlock(w_in, w_out, spectral_norm, first=index == 0, downsample=index < steps))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(LeakyReLU(0.0))
        self.body = nn.Sequential(*layers)
        return widths[-1]

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(one score per image, class logits or None): see ConditionalHeads.read_heads."""
        return self.read_heads(self.body(x).sum(dim=(2, 3)), y)


def init_resnet_weights(module: nn.Module) -> None:
    """SNGAN's init (Miyato et al.'s code, mimicry): Xavier-uniform weights, gain √2 on the residual
    3×3 convolutions (each follows a ReLU), 1 on the rest; biases 0. Batch norm starts at scale 1,
    conditional batch norm at gain 0 and bias 0 (scale exactly 1)."""
    residual = {
        id(conv)
        for block in module.modules()
        if isinstance(block, (UpBlock, DownBlock))
        for conv in (block.conv1, block.conv2)
    }
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(raw_weight(layer), math.sqrt(2.0) if id(layer) in residual else 1.0)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, ConditionalBatchNorm):
            nn.init.zeros_(layer.gain)
            nn.init.zeros_(layer.bias)


# The networks and their init, as ganpipe.gan.models builds them.
GENERATOR, CRITIC, init = ResNetGenerator, ResNetCritic, init_resnet_weights
