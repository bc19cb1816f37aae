"""GAN losses and the options they accept, in one registry.

A loss is two small functions over critic outputs (raw scores, no sigmoid): one for the critic,
one for the generator. A new GAN variant is one `register_loss` call plus an entry under
`models:` in params.yaml; the training loop never changes.

Regularisers over the critic's scores (the gradient penalty, LeCam) are functions here beside the
losses; the others (weight clipping, spectral norm, dropout, EMA) live in the training loop and
models; ganpipe.gan.catalog says which loss-specific ones make sense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganpipe.gan.catalog import LOSS_OPTIONS

CriticLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
GeneratorLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Loss:
    name: str
    critic: CriticLoss  # (scores on real, scores on fake, real-label smoothing) -> scalar
    generator: GeneratorLoss  # (scores on fake) -> scalar


LOSSES: dict[str, Loss] = {}


def register_loss(name: str, critic: CriticLoss, generator: GeneratorLoss) -> None:
    """Add the code of loss `name`, which ganpipe.gan.catalog.LOSS_OPTIONS lists with its options.

    A name is registered once: a second registration would silently replace the formulas that every
    model with this loss trains on.
    """
    if name not in LOSS_OPTIONS:
        raise ValueError(f"register_loss({name!r}): add {name!r} to LOSS_OPTIONS in ganpipe/gan/catalog.py")
    if name in LOSSES:
        raise ValueError(f"register_loss({name!r}): a loss of that name is already registered")
    LOSSES[name] = Loss(name, critic, generator)


# --- the losses -------------------------------------------------------------------------------


def wasserstein_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    # The critic maximises E[D(real)] - E[D(fake)], the Wasserstein estimate.
    return fake.mean() - real.mean()


def wasserstein_generator(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def bce_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    # One-sided label smoothing: only the real target moves (Salimans et al. 2016).
    real_target = torch.full_like(real, 1.0 - smoothing)
    return F.binary_cross_entropy_with_logits(real, real_target) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def bce_generator(fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def least_squares_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    return 0.5 * ((real - (1.0 - smoothing)) ** 2).mean() + 0.5 * (fake**2).mean()


def least_squares_generator(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


def hinge_critic(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_generator(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


register_loss("wasserstein", wasserstein_critic, wasserstein_generator)
register_loss("bce", bce_critic, bce_generator)
register_loss("least_squares", least_squares_critic, least_squares_generator)
register_loss("hinge", hinge_critic, hinge_generator)


# LeCam's anchors: moving averages of the critic's mean scores with this decay (the paper's 0.99).
LECAM_DECAY = 0.99


def lecam_regulariser(
    real: torch.Tensor, fake: torch.Tensor, anchor_real: torch.Tensor, anchor_fake: torch.Tensor
) -> torch.Tensor:
    """LeCam regularisation (Tseng et al. 2021, the form of the authors' code):
    E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2].

    `anchor_real` / `anchor_fake` are the moving averages (LECAM_DECAY) of the critic's mean score on
    real / fake images. It keeps the scores on real images from running away above the fakes' usual
    level and those on fakes below the reals', which on a few hundred images is how a critic overfits.
    Computed in fp32 (a no-op in fp32) like the losses.
    """
    real, fake = _at_least_fp32(real), _at_least_fp32(fake)
    return F.relu(real - anchor_fake).pow(2).mean() + F.relu(anchor_real - fake).pow(2).mean()


def auxiliary_classifier_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ACGAN's auxiliary term (Odena et al. 2017): the cross-entropy of the critic's class logits
    (N, n_classes) against the labels (N,), in fp32 (losses are computed in fp32 under bf16)."""
    return F.cross_entropy(logits.float(), labels)


def gradient_penalty(
    critic: torch.nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty: E[(||grad D(x_hat)||_2 - 1)^2], the norm per sample over all dimensions.

    `alpha` (N, 1, 1, 1) holds the uniform mixing weights between each real and fake image. A
    conditional critic gets `labels` (N,): the fakes carry the real images' labels, so each
    interpolate stays inside one class. The penalty is on the score only, never on class logits.
    """
    mixed = (alpha * real + (1 - alpha) * fake.to(real.dtype)).requires_grad_(True)
    scores, _ = critic(mixed, labels)
    # Under bf16 autocast the critic runs in bf16, but the norm and the penalty are taken in fp32
    # (a no-op on fp32 and fp64 tensors): bf16 keeps about 3 significant digits, too few for
    # (norm - 1) near 0, which is where training pushes it.
    (grad,) = torch.autograd.grad(_at_least_fp32(scores).sum(), mixed, create_graph=True)
    return ((_at_least_fp32(grad).flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
