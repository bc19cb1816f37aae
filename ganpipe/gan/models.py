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
- `acgan` adds an auxiliary classifier head whose logits the loop reads with `aux=True`.
With `conditional: none` both nets are exactly the unconditional ones: same modules, same
parameters, same initialisation draws, same forward.
"""

from __future__ import annotations

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


class Critic(nn.Module):
    """DCGAN discriminator without batch norm, so the gradient penalty stays per sample.

    Outputs one raw score per image; each loss decides how to read it. `projection` adds the
    class projection to that score; `acgan` adds a classifier head, read with `aux=True`.
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
        self.head = _maybe_sn(nn.Linear(widths[-1] * base * base, 1), spectral_norm)
        # Built after the head, so the unconditional critic's init draws are unchanged.
        self.embed = None  # projection: one vector per class, against the flattened features
        self.classifier = None  # acgan: class logits from the flattened features
        if conditional == "projection":
            self.embed = _maybe_sn(nn.Embedding(n_classes, widths[-1] * base * base), spectral_norm)
        elif conditional == "acgan":
            self.classifier = _maybe_sn(nn.Linear(widths[-1] * base * base, n_classes), spectral_norm)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, aux: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One score per image; with `aux` (acgan only) also the class logits (N, n_classes).

        `y` (N,) is needed by the projection critic and ignored otherwise.
        """
        features = self.body(x)
        flat = features.flatten(1)
        score = self.head(flat).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a projection critic needs class labels y")
            # The class embedding projects the vector the head reads: the flattened map, not its sum
            # over positions. In ResNet critics (cGAN-PD's) the pooled features have a global receptive
            # field; here the last map's units see about 10 px each, so summing them away discards the
            # layout that tells a 4 from a 9. On MNIST (hinge, 2,000 steps) pooling left the labels at
            # label accuracy 0.12-0.27; projecting the flattened map gave 0.72 and a lower FID
            # (README, "Class-conditional GANs"). Both terms are linear in the same vector, so under
            # spectral norm their Lipschitz bounds are equal.
            score = score + (self.embed(y) * flat).sum(dim=1)
        if aux:
            if self.classifier is None:
                raise ValueError("aux=True needs an acgan critic")
            return score, self.classifier(flat)
        return score


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


def build_models(
    model_cfg: dict[str, Any], arch: dict[str, Any], channels: int, size: int, n_classes: int = 0
) -> tuple[Generator, Critic]:
    """The generator and critic for one `models.<name>` entry, DCGAN-initialised.

    `n_classes` (the processed data's) is recorded in both configs; it shapes the nets only when
    `model_cfg["conditional"]` is not "none".
    """
    conditional = model_cfg.get("conditional", "none")
    generator = Generator(
        arch["nz"], arch["ngf"], channels, size, model_cfg["spectral_norm_g"], n_classes, conditional
    )
    critic = Critic(
        arch["ndf"],
        channels,
        size,
        model_cfg["spectral_norm_d"],
        model_cfg["dropout_d"],
        n_classes,
        conditional,
    )
    init_dcgan_weights(generator)
    init_dcgan_weights(critic)
    return generator, critic


def generator_from_checkpoint(saved: dict[str, Any]) -> Generator:
    """Rebuild a generator from a file written by the train stage ({'config', 'state_dict'})."""
    generator = Generator(**saved["config"])
    generator.load_state_dict(saved["state_dict"])
    return generator.eval()


def critic_from_checkpoint(saved: dict[str, Any]) -> Critic:
    """Rebuild a critic from a file written by the train stage ({'config', 'state_dict'})."""
    critic = Critic(**saved["config"])
    critic.load_state_dict(saved["state_dict"])
    return critic.eval()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
