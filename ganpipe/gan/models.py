"""One parametric DCGAN generator and critic for every supported image size and channel count.

Sizes 28 and 224 start from 7×7 feature maps, 64 and 128 from 4×4; each transposed convolution
doubles the side. At 28 px this is the original PathMNIST WGAN: a fully-connected layer reshaped
into ngf·2 maps of 7×7, then two stride-2 transposed convolutions (nz 100, ngf = ndf = 64).

Class conditioning (`models.<m>.conditional`) is an option of the same two nets:
- the generator swaps each batch norm for conditional batch norm (StudioGAN's ConditionalBatchNorm2d:
  batch norm without affine, then `(1 + gain[y]) * x + bias[y]` from per-class tables), the 28 px
  fully connected entry included (the same per feature, over the BatchNorm1d);
- `projection` adds `embed(y) · features` to the critic's score (Miyato & Koyama 2018; mimicry's
  cGAN-PD), the features being the flattened map that the linear head reads, so the critic still
  returns one scalar per image and every loss works;
- `acgan` adds an auxiliary classifier head on the same features.
Every critic is called as `critic(x, y) -> (score, aux_logits or None)` (ConditionalHeads).
With `conditional: none` both nets are exactly the unconditional ones: same modules, same
parameters, same initialisation draws, same forward.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MAX_WIDTH_MULT = 8  # caps channels at 8·ngf / 8·ndf for the deep 128/224 px nets
CONDITIONAL_MODES = ("none", "projection", "acgan")


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


def _batch_norm(num_features: int, n_classes: int, dims: int) -> nn.Module:
    """Today's batch norm without classes; conditional batch norm with them."""
    if n_classes:
        return ConditionalBatchNorm(num_features, n_classes, dims)
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_features)


def _forward_with_labels(layers: nn.Sequential, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Run `layers` in order, handing the labels to the conditional batch norms."""
    for layer in layers:
        x = layer(x, y) if isinstance(layer, ConditionalBatchNorm) else layer(x)
    return x


def _check_conditional(conditional: str, n_classes: int) -> None:
    if conditional not in CONDITIONAL_MODES:
        raise ValueError(f"conditional must be one of {', '.join(CONDITIONAL_MODES)}, got {conditional!r}")
    if conditional != "none" and n_classes < 1:
        raise ValueError(f"conditional={conditional!r} needs n_classes >= 1, got {n_classes}")


class Generator(nn.Module):
    """DCGAN generator; with `conditional` other than "none", every batch norm is conditional on y."""

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
        _check_conditional(conditional, n_classes)
        self.config = {
            "nz": nz,
            "ngf": ngf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
            "n_classes": n_classes,
            "conditional": conditional,
        }
        self.conditional = conditional != "none"
        classes = n_classes if self.conditional else 0  # 0: plain batch norm, today's generator
        base, steps = _plan(size)
        widths = _widths(ngf, steps)
        self.base, self.width0 = base, widths[0]
        self.project = nn.Sequential(
            _maybe_sn(nn.Linear(nz, widths[0] * base * base, bias=False), spectral_norm),
            _batch_norm(widths[0] * base * base, classes, dims=1),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip(widths, [*widths[1:], channels])):
            last = index == steps - 1
            layers.append(_maybe_sn(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=last), spectral_norm))
            layers += [nn.Tanh()] if last else [_batch_norm(w_out, classes, dims=2), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images from noise `z` (N, nz) and, for a conditional generator, class labels `y` (N,)."""
        if not self.conditional:
            x = self.project(z).view(z.shape[0], self.width0, self.base, self.base)
            return self.body(x)
        if y is None:
            raise ValueError("a conditional generator needs class labels y")
        x = _forward_with_labels(self.project, z, y).view(z.shape[0], self.width0, self.base, self.base)
        return _forward_with_labels(self.body, x, y)


class ConditionalHeads(nn.Module):
    """The critic's output layers, shared by every architecture: the one place that knows the
    conditioning modes.

    Every critic is called as `critic(x, y) -> (score, aux_logits or None)`, `y` None when
    unconditional. The score is one raw value per image (each loss decides how to read it);
    `projection` adds `<embed(y), features>` to it (Miyato & Koyama 2018); `acgan` adds class logits
    from the same features (N, n_classes), None for the other modes.
    """

    def add_heads(self, features: int, n_classes: int, conditional: str, spectral_norm: bool) -> None:
        self.head = _maybe_sn(nn.Linear(features, 1), spectral_norm)
        # Built after the head, so the unconditional critic's init draws are unchanged.
        self.embed = None  # projection: one vector per class, against the features
        self.classifier = None  # acgan: class logits from the features
        if conditional == "projection":
            self.embed = _maybe_sn(nn.Embedding(n_classes, features), spectral_norm)
        elif conditional == "acgan":
            self.classifier = _maybe_sn(nn.Linear(features, n_classes), spectral_norm)

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


class Critic(ConditionalHeads):
    """DCGAN discriminator without batch norm, so the gradient penalty stays per sample.

    Called as `critic(x, y) -> (score, aux_logits or None)` (ConditionalHeads).
    """

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
        _check_conditional(conditional, n_classes)
        self.config = {
            "ndf": ndf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
            "dropout": dropout,
            "n_classes": n_classes,
            "conditional": conditional,
        }
        base, steps = _plan(size)
        widths = list(reversed(_widths(ndf, steps)))
        layers: list[nn.Module] = []
        for w_in, w_out in zip([channels, *widths[:-1]], widths):
            layers += [_maybe_sn(nn.Conv2d(w_in, w_out, 4, 2, 1), spectral_norm), LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        # Projection against the flattened map the head reads, not its sum over positions: here the
        # last map's units see about 10 px each, so summing them away discards the layout that tells
        # a 4 from a 9. On MNIST (hinge, 2,000 steps) pooling left the labels at label accuracy
        # 0.12-0.27; projecting the flattened map gave 0.72 and a lower FID (README, "Class-conditional
        # GANs"). Both terms are linear in the same vector, so under spectral norm their Lipschitz
        # bounds are equal. (ResNetCritic pools: its features have a global receptive field.)
        self.add_heads(widths[-1] * base * base, n_classes, conditional, spectral_norm)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(one score per image, class logits or None): see ConditionalHeads.read_heads."""
        return self.read_heads(self.body(x).flatten(1), y)


def _raw_weight(layer: nn.Module) -> torch.Tensor:
    """The trainable weight: under spectral norm, the original the parametrization normalises."""
    return layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015): conv/linear weights N(0, 0.02), batch norm N(1, 0.02).

    Conditional batch norm starts the same way: gain N(0, 0.02) (a scale of 1 + gain), bias 0;
    the projection embedding is N(0, 0.02) like every other weight.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(_raw_weight(layer), 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, ConditionalBatchNorm):
            nn.init.normal_(layer.gain, 0.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Embedding):
            nn.init.normal_(_raw_weight(layer), 0.0, 0.02)


# --- ResNet (SNGAN / BigGAN family) ------------------------------------------------------------
# Layout after StudioGAN's src/models/resnet.py and mimicry's sngan; docs/architectures.md says
# where and why it differs.

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
    return _maybe_sn(nn.Conv2d(w_in, w_out, 3, 1, 1, bias=bias), spectral_norm)


def _conv1(w_in: int, w_out: int, spectral_norm: bool, bias: bool = True) -> nn.Module:
    return _maybe_sn(nn.Conv2d(w_in, w_out, 1, bias=bias), spectral_norm)


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
        self.norm1 = _batch_norm(w_in, n_classes, dims=2)
        self.conv1 = _conv3(w_in, w_out, spectral_norm, bias=False)
        self.norm2 = _batch_norm(w_out, n_classes, dims=2)
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


class ResNetGenerator(nn.Module):
    """SNGAN/BigGAN-style generator: linear to the base map (7×7 at 28/224 px, 4×4 at 64/128), one
    UpBlock per ×2 step, then BN, ReLU, conv3×3, tanh. Conditional: every block's batch norms are
    conditional on y; the final one stays plain, as StudioGAN's."""

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
        _check_conditional(conditional, n_classes)
        self.config = {
            "arch": "resnet",
            "nz": nz,
            "ngf": ngf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
            "n_classes": n_classes,
            "conditional": conditional,
        }
        self.conditional = conditional != "none"
        classes = n_classes if self.conditional else 0
        base, steps = _plan(size)
        widths = _resnet_widths(ngf, steps)
        self.base, self.width0 = base, widths[0]
        self.project = _maybe_sn(nn.Linear(nz, widths[0] * base * base), spectral_norm)
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


class ResNetCritic(ConditionalHeads):
    """SNGAN-style critic: an optimized DownBlock on the image, one DownBlock per further ×2 step,
    one more block at the base side without pooling, ReLU, global SUM pooling, then the heads
    (ConditionalHeads: linear score, projection <embed(y), h>, ACGAN logits) on the pooled h.

    `spectral_norm` puts spectral norm on every layer, heads and embedding included (build_models
    always sets it); `dropout` follows each block. No batch norm: the gradient penalty stays per
    sample.
    """

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
        _check_conditional(conditional, n_classes)
        self.config = {
            "arch": "resnet",
            "ndf": ndf,
            "channels": channels,
            "size": size,
            "spectral_norm": spectral_norm,
            "dropout": dropout,
            "n_classes": n_classes,
            "conditional": conditional,
        }
        _, steps = _plan(size)
        widths = list(reversed(_resnet_widths(ndf, steps)))  # finest first
        layers: list[nn.Module] = []
        for index, (w_in, w_out) in enumerate(zip([channels, *widths[:-1]], widths)):
            layers.append(DownBlock(w_in, w_out, spectral_norm, first=index == 0, downsample=index < steps))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(LeakyReLU(0.0))
        self.body = nn.Sequential(*layers)
        self.add_heads(widths[-1], n_classes, conditional, spectral_norm)

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
            nn.init.xavier_uniform_(_raw_weight(layer), math.sqrt(2.0) if id(layer) in residual else 1.0)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, ConditionalBatchNorm):
            nn.init.zeros_(layer.gain)
            nn.init.zeros_(layer.bias)


# arch.name -> (generator, critic, init); a new architecture is one entry, with the same
# constructor arguments and the critic signature of ConditionalHeads.
ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module], Any]] = {
    "dcgan": (Generator, Critic, init_dcgan_weights),
    "resnet": (ResNetGenerator, ResNetCritic, init_resnet_weights),
}


def build_models(
    model_cfg: dict[str, Any], arch: dict[str, Any], channels: int, size: int, n_classes: int = 0
) -> tuple[nn.Module, nn.Module]:
    """The generator and critic of architecture `arch["name"]` for one `models.<name>` entry,
    initialised as that architecture's references do.

    `n_classes` (the processed data's) is recorded in both configs; it shapes the nets only when
    `model_cfg["conditional"]` is not "none". Without `arch["name"]` (older params) it is dcgan.
    """
    conditional = model_cfg.get("conditional", "none")
    name = arch.get("name", "dcgan")
    generator_class, critic_class, init = ARCHITECTURES[name]
    # The ResNet critic is SNGAN's: spectral norm on every layer is part of the architecture, so it
    # is on whatever spectral_norm_d says (which chooses for dcgan); weight clipping, which would
    # constrain it twice, is refused with it (ganpipe.pipeline.params). docs/architectures.md.
    critic_spectral_norm = model_cfg["spectral_norm_d"] or name == "resnet"
    generator = generator_class(
        arch["nz"], arch["ngf"], channels, size, model_cfg["spectral_norm_g"], n_classes, conditional
    )
    critic = critic_class(
        arch["ndf"],
        channels,
        size,
        critic_spectral_norm,
        model_cfg["dropout_d"],
        n_classes,
        conditional,
    )
    init(generator)
    init(critic)
    return generator, critic


def _from_checkpoint(saved: dict[str, Any], role: int) -> nn.Module:
    # DCGAN configs carry no "arch" key (files written before ResNets existed read the same).
    config = dict(saved["config"])
    net = ARCHITECTURES[config.pop("arch", "dcgan")][role](**config)
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def generator_from_checkpoint(saved: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from a file written by the train stage ({'config', 'state_dict'})."""
    return _from_checkpoint(saved, 0)


def critic_from_checkpoint(saved: dict[str, Any]) -> nn.Module:
    """Rebuild a critic from a file written by the train stage ({'config', 'state_dict'})."""
    return _from_checkpoint(saved, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
