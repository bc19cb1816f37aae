"""GAN losses and the options they accept, in one registry.

A loss is two small functions over critic outputs (raw scores, no sigmoid): one for the critic,
one for the generator. A new GAN variant is one `register_loss` call plus an entry under
`models:` in params.yaml; the training loop never changes.

Regularisers that are not a loss (gradient penalty, weight clipping, spectral norm, dropout, EMA)
live in the training loop and models; `accepts` says which loss-specific ones make sense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ganpipe.errors import ParamsError

CriticLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
GeneratorLoss = Callable[[torch.Tensor], torch.Tensor]

# Options that only some losses accept; every other model option works with any loss.
LOSS_SPECIFIC_OPTIONS = ("clip", "label_smoothing")


@dataclass(frozen=True)
class Loss:
    name: str
    critic: CriticLoss  # (scores on real, scores on fake, real-label smoothing) -> scalar
    generator: GeneratorLoss  # (scores on fake) -> scalar
    accepts: frozenset[str]  # which of LOSS_SPECIFIC_OPTIONS make sense with this loss


LOSSES: dict[str, Loss] = {}


def register_loss(
    name: str, critic: CriticLoss, generator: GeneratorLoss, accepts: tuple[str, ...] = ()
) -> None:
    """Add a loss under `name` (usable as `models.<model>.loss` in params.yaml)."""
    unknown = set(accepts) - set(LOSS_SPECIFIC_OPTIONS)
    if unknown:
        raise ValueError(f"register_loss({name!r}): unknown options {sorted(unknown)}")
    LOSSES[name] = Loss(name, critic, generator, frozenset(accepts))


def _option_is_set(cfg: dict[str, Any], option: str) -> bool:
    value = cfg.get(option)
    return value is not None and value != 0


def check_model_options(key: str, cfg: dict[str, Any]) -> None:
    """Refuse option combinations that make no sense, naming the key and the fix."""
    loss = LOSSES[cfg["loss"]]
    for option in LOSS_SPECIFIC_OPTIONS:
        if _option_is_set(cfg, option) and option not in loss.accepts:
            users = sorted(name for name, other in LOSSES.items() if option in other.accepts)
            raise ParamsError(
                f"params.yaml: {key}.{option} = {cfg[option]!r} makes no sense with loss {loss.name!r}; "
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


register_loss("wasserstein", wasserstein_critic, wasserstein_generator, accepts=("clip",))
register_loss("bce", bce_critic, bce_generator, accepts=("label_smoothing",))
register_loss("least_squares", least_squares_critic, least_squares_generator, accepts=("label_smoothing",))
register_loss("hinge", hinge_critic, hinge_generator)


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
    interpolate stays inside one class.
    """
    mixed = (alpha * real + (1 - alpha) * fake.to(real.dtype)).requires_grad_(True)
    scores = critic(mixed) if labels is None else critic(mixed, labels)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
