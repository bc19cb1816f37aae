"""The names params.yaml may use for GAN training, as plain data.

Params validation (ganpipe.gan.schema) runs in every stage that reads the GAN's sections, so it must
not import torch: the loss names, the options each loss accepts and the DiffAugment operations live
here, and ganpipe.gan.losses and ganpipe.gan.augment register their code under these names (the
architectures' networks, one file each, ganpipe.gan.arch's). A new loss is an entry in LOSS_OPTIONS
plus one `register_loss` call; a new architecture an entry in ARCHITECTURES plus its file
(docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ganpipe.pipeline.errors import ParamsError

# Options that only some losses accept; every other model option works with any loss.
LOSS_SPECIFIC_OPTIONS = ("clip", "label_smoothing")

# loss name -> the LOSS_SPECIFIC_OPTIONS that make sense with it
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "wasserstein": ("clip",),
    "bce": ("label_smoothing",),
    "least_squares": ("label_smoothing",),
    "hinge": (),
}

# Network architectures (arch.name): the one registry. Each entry's networks are the file of its
# name in ganpipe/gan/arch/.
CONTIGUOUS, CHANNELS_LAST = "contiguous_format", "channels_last"  # torch memory formats, by name


@dataclass(frozen=True)
class Architecture:
    """What the rest of ganpipe needs to know about an architecture, beside its networks (which are
    ganpipe/gan/arch/<name>.py).

    `memory_format`: the layout its fp32 weights and activations train in (bf16 always trains
    channels_last). `spectral_norm_builtin`: its critic has spectral norm on every layer whatever
    `models.<m>.spectral_norm_d` says, so weight clipping, which would constrain it twice, is refused
    with it. Its optimiser recipes per loss are data in params.yaml (`recipes.<name>`).
    """

    name: str
    description: str
    memory_format: str = CONTIGUOUS
    spectral_norm_builtin: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    spec.name: spec
    for spec in (
        Architecture("dcgan", "the seeds' DCGAN: strided 4×4 (transposed) convolutions"),
        Architecture(
            "resnet",
            "SNGAN-style residual blocks, spectral norm on every critic layer",
            # Its fp32 step is 1.2-1.3x faster NHWC on the CPU; DCGAN's is not
            # (benchmarks/memory_format.py).
            memory_format=CHANNELS_LAST,
            spectral_norm_builtin=True,
        ),
    )
}


# DiffAugment operations (train.augment), in the order they are applied.
AUGMENT_OPS = ("color", "translation", "cutout")


def _option_is_set(cfg: dict[str, Any], option: str) -> bool:
    value = cfg.get(option)
    return value is not None and value != 0


def check_model_options(key: str, cfg: dict[str, Any]) -> None:
    """Refuse option combinations that make no sense, naming the key and the fix."""
    loss = cfg["loss"]
    for option in LOSS_SPECIFIC_OPTIONS:
        if _option_is_set(cfg, option) and option not in LOSS_OPTIONS[loss]:
            users = sorted(name for name, accepted in LOSS_OPTIONS.items() if option in accepted)
            raise ParamsError(
                f"params.yaml: {key}.{option} = {cfg[option]!r} makes no sense with loss {loss!r}; "
                f"set it to {'null' if option == 'clip' else 0} or use a loss among {', '.join(users)}"
            )
    if _option_is_set(cfg, "clip") and cfg["gp_lambda"] > 0:
        raise ParamsError(
            f"params.yaml: {key}.clip = {cfg['clip']!r} with gp_lambda = {cfg['gp_lambda']!r}: weight "
            "clipping and the gradient penalty both enforce the Lipschitz bound; keep one "
            "(clip: null or gp_lambda: 0)"
        )
    if cfg["gp_every"] > 1 and cfg["gp_lambda"] == 0:
        # Refused rather than ignored: a lazy penalty without a penalty is a typo or a forgotten λ.
        raise ParamsError(
            f"params.yaml: {key}.gp_every = {cfg['gp_every']!r} with gp_lambda = {cfg['gp_lambda']!r}: "
            "there is no gradient penalty to compute lazily; set gp_every: 1 or gp_lambda > 0"
        )
    if _option_is_set(cfg, "clip") and cfg["spectral_norm_d"]:
        raise ParamsError(
            f"params.yaml: {key}.clip = {cfg['clip']!r} with spectral_norm_d = true: both constrain the "
            "critic; keep one (clip: null or spectral_norm_d: false)"
        )
