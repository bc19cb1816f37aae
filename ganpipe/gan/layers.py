"""Building blocks that every architecture of ganpipe.gan.arch shares.

The conditioning lives here, in one place for every architecture:
- the generator swaps each batch norm for conditional batch norm (StudioGAN's ConditionalBatchNorm2d:
  batch norm without affine, then `(1 + gain[y]) * x + bias[y]` from per-class tables);
- `projection` adds `embed(y) · features` to the critic's score (Miyato & Koyama 2018; mimicry's
  cGAN-PD), so the critic still returns one scalar per image and every loss works;
- `acgan` adds an auxiliary classifier head on the same features.
Every critic is called as `critic(x, y) -> (score, aux_logits or None)` (ConditionalHeads). With
`conditional: none` both nets are exactly the unconditional ones: same modules, same parameters,
same initialisation draws, same forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MAX_WIDTH_MULT = 8  # caps channels at 8·ngf / 8·ndf for the deep 128/224 px nets
CONDITIONAL_MODES = ("none", "projection", "acgan")


def plan(size: int) -> tuple[int, int]:
    """(base side, number of ×2 steps) that reach `size`."""
    base = 7 if size % 7 == 0 else 4
    steps = round(math.log2(size / base))
    if base * 2**steps != size:
        raise ValueError(f"unsupported image size {size}; use 28, 64, 128 or 224")
    return base, steps


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


def maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    return _spectral_norm(layer) if enabled else layer


class ConditionalBatchNorm(nn.Module):
    """Batch norm without affine, then a per-class scale and shift: `(1 + gain[y]) * x + bias[y]`.

    `dims` 1 wraps BatchNorm1d (the 28 px fully connected entry, per feature), 2 BatchNorm2d. The
    tables are plain parameters read with index_select (no embedding module), so DCGAN init can
    give the gain N(0, 0.02) — a scale of N(1, 0.02), as unconditional batch norm starts — and the
    bias zeros. The tables get no spectral norm: it would bound the per-class scale, not a map.
    """

    def __init__(self, num_features: int, n_classes: int, dims: int) -> None:
        super().__init__()
        self.norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_features, affine=False)
        self.gain = nn.Parameter(torch.zeros(n_classes, num_features))
        self.bias = nn.Parameter(torch.zeros(n_classes, num_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        gain = self.gain.index_select(0, y).view(shape)
        bias = self.bias.index_select(0, y).view(shape)
        return (1 + gain) * self.norm(x) + bias


def batch_norm(num_features: int, n_classes: int, dims: int) -> nn.Module:
    """Today's batch norm without classes; conditional batch norm with them."""
    if n_classes:
        return ConditionalBatchNorm(num_features, n_classes, dims)
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_features)


def forward_with_labels(layers: nn.Sequential, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Run `layers` in order, handing the labels to the conditional batch norms."""
    for layer in layers:
        x = layer(x, y) if isinstance(layer, ConditionalBatchNorm) else layer(x)
    return x


def check_conditional(conditional: str, n_classes: int) -> None:
    if conditional not in CONDITIONAL_MODES:
        raise ValueError(f"conditional must be one of {', '.join(CONDITIONAL_MODES)}, got {conditional!r}")
    if conditional != "none" and n_classes < 1:
        raise ValueError(f"conditional={conditional!r} needs n_classes >= 1, got {n_classes}")


class Net(nn.Module):
    """Base of every generator and critic: the constructor arguments, kept in `config`, rebuild it
    from a checkpoint (ganpipe.gan.models)."""

    # The checkpoint's "arch" key; None writes none: DCGAN files written before ResNets existed
    # read the same.
    arch: str | None = None

    def record(self, **config: Any) -> None:
        """Check the conditioning arguments and keep every argument, in order, in `config`."""
        check_conditional(config["conditional"], config["n_classes"])
        self.config = ({"arch": self.arch} if self.arch else {}) | config


class GeneratorNet(Net):
    """Base of every generator: the constructor every architecture takes, which records the
    arguments and hands `build` what the layers need."""

    def __init__(
        self,
        nz: int,
        ngf: int,
        channels: int,
        size: int,
        spectral_norm: bool = False,
        n_classes: int = 0,
        conditional: str = "none",
    ) -> None:
        super().__init__()
        self.record(
            nz=nz,
            ngf=ngf,
            channels=channels,
            size=size,
            spectral_norm=spectral_norm,
            n_classes=n_classes,
            conditional=conditional,
        )
        self.conditional = conditional != "none"
        classes = n_classes if self.conditional else 0  # 0: plain batch norm, the unconditional net
        self.build(nz, ngf, channels, size, spectral_norm, classes)

    def build(self, nz: int, ngf: int, channels: int, size: int, spectral_norm: bool, classes: int) -> None:
        """Make the layers; `classes` is 0 for an unconditional generator (plain batch norm)."""
        raise NotImplementedError


class ConditionalHeads(Net):
    """The critic's output layers, shared by every architecture: the one place that knows the
    conditioning modes.

    Every critic is called as `critic(x, y) -> (score, aux_logits or None)`, `y` None when
    unconditional. The score is one raw value per image (each loss decides how to read it);
    `projection` adds `<embed(y), features>` to it (Miyato & Koyama 2018); `acgan` adds class logits
    from the same features (N, n_classes), None for the other modes.
    """

    def add_heads(self, features: int, n_classes: int, conditional: str, spectral_norm: bool) -> None:
        self.head = maybe_sn(nn.Linear(features, 1), spectral_norm)
        # Built after the head, so the unconditional critic's init draws are unchanged.
        self.embed = None  # projection: one vector per class, against the features
        self.classifier = None  # acgan: class logits from the features
        if conditional == "projection":
            self.embed = maybe_sn(nn.Embedding(n_classes, features), spectral_norm)
        elif conditional == "acgan":
            self.classifier = maybe_sn(nn.Linear(features, n_classes), spectral_norm)

    def read_heads(
        self, features: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(score (N,), logits (N, n_classes) or None) from `features` (N, F) and labels `y` (N,)."""
        score = self.head(features).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a projection critic needs class labels y")
            score = score + (self.embed(y) * features).sum(dim=1)
        logits = self.classifier(features) if self.classifier is not None else None
        return score, logits


class CriticNet(ConditionalHeads):
    """Base of every critic: the constructor every architecture takes, which records the arguments
    and hands them to `build`."""

    def __init__(
        self,
        ndf: int,
        channels: int,
        size: int,
        spectral_norm: bool = False,
        dropout: float = 0.0,
        n_classes: int = 0,
        conditional: str = "none",
    ) -> None:
        super().__init__()
        self.record(
            ndf=ndf,
            channels=channels,
            size=size,
            spectral_norm=spectral_norm,
            dropout=dropout,
            n_classes=n_classes,
            conditional=conditional,
        )
        features = self.build(ndf, channels, size, spectral_norm, dropout)
        self.add_heads(features, n_classes, conditional, spectral_norm)

    def build(self, ndf: int, channels: int, size: int, spectral_norm: bool, dropout: float) -> int:
        """Make the layers before the heads; return the size of the features the heads read."""
        raise NotImplementedError


def raw_weight(layer: nn.Module) -> torch.Tensor:
    """The trainable weight: under spectral norm, the original the parametrization normalises."""
    return layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight
