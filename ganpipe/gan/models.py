"""Build the generator and critic of any architecture (ganpipe.gan.arch), and rebuild them from the
files the train stage writes.

Each architecture's networks are one file of ganpipe/gan/arch/ (dcgan.py, resnet.py) over the shared
blocks of ganpipe.gan.layers; its properties are its entry in ganpipe.gan.catalog.ARCHITECTURES. Every
architecture takes the same constructor arguments, and its critic the signature of ConditionalHeads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganpipe.gan.arch import networks
from ganpipe.gan.catalog import ARCHITECTURES, CHANNELS_LAST, Architecture

DEFAULT_ARCH = "dcgan"  # params and checkpoint configs from before arch.name existed


def architecture(arch: dict[str, Any]) -> Architecture:
    """The registry entry of an `arch` params section."""
    return ARCHITECTURES[arch.get("name", DEFAULT_ARCH)]


def memory_format(arch: dict[str, Any], precision: str) -> torch.memory_format:
    """The layout the nets train in: the architecture's, or channels_last for bf16.

    oneDNN's AMX/AVX512-BF16 and cuDNN's tensor-core convolutions work on NHWC: channels_last weights
    spare a layout reorder around every bf16 convolution. An fp32 architecture keeps the layout it
    declares: other kernels would change the weights of every earlier fp32 run.
    """
    name = CHANNELS_LAST if precision == "bf16" else architecture(arch).memory_format
    return getattr(torch, name)


def build_models(
    model_cfg: dict[str, Any], arch: dict[str, Any], channels: int, size: int, n_classes: int = 0
) -> tuple[nn.Module, nn.Module]:
    """The generator and critic of architecture `arch["name"]` for one `models.<name>` entry,
    initialised as that architecture's references do.

    `n_classes` (the processed data's) is recorded in both configs; it shapes the nets only when
    `model_cfg["conditional"]` is not "none". Without `arch["name"]` (older params) it is dcgan.
    """
    conditional = model_cfg.get("conditional", "none")
    spec = architecture(arch)
    nets = networks(spec.name)
    # An architecture with spectral norm built in (SNGAN's ResNet critic) has it whatever
    # spectral_norm_d says (which chooses for the others); weight clipping, which would constrain it
    # twice, is refused with it (ganpipe.gan.schema). docs/architectures.md.
    critic_spectral_norm = model_cfg["spectral_norm_d"] or spec.spectral_norm_builtin
    generator = nets.GENERATOR(
        arch["nz"], arch["ngf"], channels, size, model_cfg["spectral_norm_g"], n_classes, conditional
    )
    critic = nets.CRITIC(
        arch["ndf"],
        channels,
        size,
        critic_spectral_norm,
        model_cfg["dropout_d"],
        n_classes,
        conditional,
    )
    nets.init(generator)
    nets.init(critic)
    return generator, critic


def _from_checkpoint(saved: dict[str, Any], role: str) -> nn.Module:
    # DCGAN configs carry no "arch" key (files written before ResNets existed read the same).
    config = dict(saved["config"])
    net = getattr(networks(config.pop("arch", DEFAULT_ARCH)), role)(**config)
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def generator_from_checkpoint(saved: dict[str, Any]) -> nn.Module:
    """Rebuild a generator from a file written by the train stage ({'config', 'state_dict'})."""
    return _from_checkpoint(saved, "GENERATOR")


def critic_from_checkpoint(saved: dict[str, Any]) -> nn.Module:
    """Rebuild a critic from a file written by the train stage ({'config', 'state_dict'})."""
    return _from_checkpoint(saved, "CRITIC")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
