"""The seeds' DCGAN (arch.name: dcgan): one parametric generator and critic for every supported
image size and channel count.

Sizes 28 and 224 start from 7×7 feature maps, 64 and 128 from 4×4; each transposed convolution
doubles the side. At 28 px this is the original PathMNIST WGAN: a fully-connected layer reshaped
into ngf·2 maps of 7×7, then two stride-2 transposed convolutions (nz 100, ngf = ndf = 64).
Class conditioning (ganpipe.gan.layers) swaps every batch norm of the generator, the 28 px fully
connected entry's included (per feature, over the BatchNorm1d), for conditional batch norm.
Its properties beside the networks are its entry in ganpipe.gan.catalog.ARCHITECTURES.
"""

from __future__ import annotations

import torch
from torch import nn

from ganpipe.gan.layers import (
    MAX_WIDTH_MULT,
    ConditionalBatchNorm,
    CriticNet,
    GeneratorNet,
    LeakyReLU,
    batch_norm,
    forward_with_labels,
    maybe_sn,
    plan,
    raw_weight,
)


def _widths(width: int, steps: int) -> list[int]:
    """Channel widths from the coarsest map to the finest: width·2^(steps-1) ... width."""
    return [width * min(2 ** (steps - 1 - i), MAX_WIDTH_MULT) for i in range(steps)]


class Generator(GeneratorNet):
    """DCGAN generator; with `conditional` other than "none", every batch norm is conditional on y."""

    def build(self, nz: int, ngf: int, channels: int, size: int, spectral_norm: bool, classes: int) -> None:
        base, steps = plan(size)
        widths = _widths(ngf, steps)
        self.base, self.width0 = base, widths[0]
        self.project = nn.Sequential(
            maybe_sn(nn.Linear(nz, widths[0] * base * base, bias=False), spectral_norm),
            batch_norm(widths[0] * base * base, classes, dims=1),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip(widths, [*widths[1:], channels])):
            last = index == steps - 1
            layers.append(maybe_sn(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=last), spectral_norm))
            layers += [nn.Tanh()] if last else [batch_norm(w_out, classes, dims=2), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images from noise `z` (N, nz) and, for a conditional generator, class labels `y` (N,)."""
        if not self.conditional:
            x = self.project(z).view(z.shape[0], self.width0, self.base, self.base)
            return self.body(x)
        if y is None:
            raise ValueError("a conditional generator needs class labels y")
        x = forward_with_labels(self.project, z, y).view(z.shape[0], self.width0, self.base, self.base)
        return forward_with_labels(self.body, x, y)


class Critic(CriticNet):
    """DCGAN discriminator without batch norm, so the gradient penalty stays per sample.

    Called as `critic(x, y) -> (score, aux_logits or None)` (ConditionalHeads).
    """

    def build(self, ndf: int, channels: int, size: int, spectral_norm: bool, dropout: float) -> int:
        base, steps = plan(size)
        widths = list(reversed(_widths(ndf, steps)))
        layers: list[nn.Module] = []
        for w_in, w_out in zip([channels, *widths[:-1]], widths):
            layers += [maybe_sn(nn.Conv2d(w_in, w_out, 4, 2, 1), spectral_norm), LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        # Projection against the flattened map the head reads, not its sum over positions: here the
        # last map's units see about 10 px each, so summing them away discards the layout that tells
        # a 4 from a 9. On MNIST (hinge, 2,000 steps) pooling left the labels at label accuracy
        # 0.12-0.27; projecting the flattened map gave 0.72 and a lower FID (README, "Class-conditional
        # GANs"). Both terms are linear in the same vector, so under spectral norm their Lipschitz
        # bounds are equal. (ResNetCritic pools: its features have a global receptive field.)
        return widths[-1] * base * base

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(one score per image, class logits or None): see ConditionalHeads.read_heads."""
        return self.read_heads(self.body(x).flatten(1), y)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015): conv/linear weights N(0, 0.02), batch norm N(1, 0.02).

    Conditional batch norm starts the same way: gain N(0, 0.02) (a scale of 1 + gain), bias 0;
    the projection embedding is N(0, 0.02) like every other weight.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(raw_weight(layer), 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, ConditionalBatchNorm):
            nn.init.normal_(layer.gain, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(raw_weight(layer), 0.0, 0.02)


# The networks and their init, as ganpipe.gan.models builds them.
GENERATOR, CRITIC, init = Generator, Critic, init_dcgan_weights
