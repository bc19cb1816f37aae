"""Known values of every loss, the gradient penalty and the conditioning terms, worked out by hand
from their formulas on tensors small enough to check on paper. Each test calls the project's
functions (ganpipe.gan.losses, ganpipe.gan.models), never a copy of them.

Scores are raw critic outputs (logits for bce). With s the real-label smoothing:
- wasserstein: critic E[D(f)] - E[D(r)], generator -E[D(f)];
- hinge: critic E[relu(1 - D(r))] + E[relu(1 + D(f))], generator -E[D(f)];
- bce: critic BCE(D(r), 1 - s) + BCE(D(f), 0), generator BCE(D(f), 1) (non-saturating), where
  BCE(x, t) = softplus(x) - t x;
- least_squares: critic ½E[(D(r) - (1 - s))²] + ½E[D(f)²], generator ½E[(D(f) - 1)²].
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganpipe.gan import losses
from ganpipe.gan.arch.dcgan import Critic
from ganpipe.gan.losses import LOSSES, auxiliary_classifier_loss, gradient_penalty

REAL = [1.0, -2.0, 3.0]
FAKE = [0.5, -1.0]
SMOOTHING = 0.1


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def bce(x: float, target: float) -> float:
    """Binary cross-entropy of logit x against target t: -t log σ(x) - (1 - t) log σ(-x)."""
    return softplus(x) - target * x


# loss -> (critic value at smoothing 0, at SMOOTHING, generator value), all on REAL and FAKE.
EXPECTED = {
    "wasserstein": (mean(FAKE) - mean(REAL), mean(FAKE) - mean(REAL), -mean(FAKE)),
    "hinge": (
        mean([0.0, 3.0, 0.0]) + mean([1.5, 0.0]),
        mean([0.0, 3.0, 0.0]) + mean([1.5, 0.0]),
        -mean(FAKE),
    ),
    "bce": (
        mean([bce(x, 1.0) for x in REAL]) + mean([bce(x, 0.0) for x in FAKE]),
        mean([bce(x, 1.0 - SMOOTHING) for x in REAL]) + mean([bce(x, 0.0) for x in FAKE]),
        mean([softplus(-x) for x in FAKE]),
    ),
    "least_squares": (
        0.5 * mean([(x - 1.0) ** 2 for x in REAL]) + 0.5 * mean([x**2 for x in FAKE]),
        0.5 * mean([(x - (1.0 - SMOOTHING)) ** 2 for x in REAL]) + 0.5 * mean([x**2 for x in FAKE]),
        0.5 * mean([(x - 1.0) ** 2 for x in FAKE]),
    ),
}


def test_every_registered_loss_has_known_values() -> None:
    assert set(EXPECTED) == set(LOSSES)


def test_register_loss_adds_a_catalogued_name_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(losses.LOSS_OPTIONS, "test_loss", ())
    monkeypatch.setattr(losses, "LOSSES", dict(LOSSES))
    critic, generator = losses.hinge_critic, losses.wasserstein_generator
    losses.register_loss("test_loss", critic, generator)
    assert losses.LOSSES["test_loss"] == losses.Loss("test_loss", critic, generator)
    with pytest.raises(ValueError, match=r"register_loss\('test_loss'\): .* already registered"):
        losses.register_loss("test_loss", critic, generator)
    with pytest.raises(ValueError, match=r"add 'unlisted' to LOSS_OPTIONS in ganpipe/gan/catalog.py"):
        losses.register_loss("unlisted", critic, generator)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values_from_the_formulas(name: str) -> None:
    real, fake = torch.tensor(REAL, dtype=torch.float64), torch.tensor(FAKE, dtype=torch.float64)
    plain, smoothed, generator = EXPECTED[name]
    loss = LOSSES[name]
    assert loss.critic(real, fake, 0.0).item() == pytest.approx(plain, rel=1e-12)
    assert loss.critic(real, fake, SMOOTHING).item() == pytest.approx(smoothed, rel=1e-12)
    assert loss.generator(fake).item() == pytest.approx(generator, rel=1e-12)


def test_smoothing_lowers_only_the_real_target() -> None:
    """One-sided smoothing: a real score at 1 - s is the least-squares optimum; fakes are unaffected."""
    at_target = torch.tensor([1.0 - SMOOTHING], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    assert LOSSES["least_squares"].critic(at_target, zero, SMOOTHING).item() == 0.0
    # The bce critic's gradient on a real logit x is σ(x) - (1 - s): zero where σ(x) = 1 - s.
    logit = torch.tensor([math.log((1 - SMOOTHING) / SMOOTHING)], dtype=torch.float64, requires_grad=True)
    LOSSES["bce"].critic(logit, zero, SMOOTHING).backward()
    assert logit.grad is not None and abs(logit.grad.item()) < 1e-12


def test_generator_losses_push_fake_scores_up() -> None:
    """Every generator loss decreases as the critic rates the fakes more real; the non-saturating bce
    keeps a gradient at a logit of 0 rather than vanishing: -σ(0) / 2 = -1/4 per logit of a batch of two."""
    for name, loss in LOSSES.items():
        low, high = torch.tensor([-0.5, 0.0]), torch.tensor([0.25, 0.75])
        assert loss.generator(high) < loss.generator(low), name
    logits = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    LOSSES["bce"].generator(logits).backward()
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.full((2,), -0.25, dtype=torch.float64))


# --- the gradient penalty -------------------------------------------------------------------------


class KnownGradientCritic(nn.Module):
    """A critic whose input gradient is known in closed form, conditional or not:
    D(x, y) = <w_y, x> + ½ c ||x||², so that grad_x D = w_y + c x.

    The one place these tests call a critic the way gradient_penalty does: when the critic's call
    signature changes (e.g. to return (score, aux logits)), adapt `forward` here only.
    """

    def __init__(self, weights: torch.Tensor, curvature: float = 0.0) -> None:
        super().__init__()
        self.weights = weights  # (n_classes, C, H, W); one row without conditioning
        self.curvature = curvature

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        # The project's critic signature: (score, aux_logits or None).
        w = self.weights[0 if y is None else y].expand_as(x)
        return (w * x).flatten(1).sum(1) + 0.5 * self.curvature * x.flatten(1).pow(2).sum(1), None


def _images(*values: float) -> torch.Tensor:
    """A batch of 1×2×2 images, one per value, filled with that value."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared() -> None:
    # ||w|| = ||(1, 1, 1, 1)|| = 2 over all dims of the image: (2 - 1)² = 1, at every interpolate.
    critic = KnownGradientCritic(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    real, fake = _images(1.0, -3.0), _images(2.0, 5.0)
    alpha = torch.tensor([0.25, 0.5], dtype=torch.float64).view(-1, 1, 1, 1)
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(1.0, rel=1e-12)
    # ||w|| = 0.5: (0.5 - 1)² = 0.25; a unit-norm gradient costs nothing.
    critic.weights = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(0.25, rel=1e-12)
    critic.weights = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(0.0, abs=1e-12)


def test_penalty_is_taken_at_alpha_real_plus_one_minus_alpha_fake() -> None:
    """D = ½||x||²: grad = x_hat, whose norm over a 2×2 image of value v is 2|v|. The interpolates
    are 0.25·1 + 0.75·2 = 1.75 and 0.5·(-3) + 0.5·5 = 1: penalty ((3.5 - 1)² + (2 - 1)²) / 2."""
    critic = KnownGradientCritic(torch.zeros(1, 1, 2, 2, dtype=torch.float64), curvature=1.0)
    real, fake = _images(1.0, -3.0), _images(2.0, 5.0)
    alpha = torch.tensor([0.25, 0.5], dtype=torch.float64).view(-1, 1, 1, 1)
    expected = ((3.5 - 1) ** 2 + (2 - 1) ** 2) / 2
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(expected, rel=1e-12)
    # alpha = 1 takes the reals, alpha = 0 the fakes.
    ones, zeros = torch.ones_like(alpha), torch.zeros_like(alpha)
    at_real = ((2 * 1.0 - 1) ** 2 + (2 * 3.0 - 1) ** 2) / 2
    at_fake = ((2 * 2.0 - 1) ** 2 + (2 * 5.0 - 1) ** 2) / 2
    assert gradient_penalty(critic, real, fake, ones).item() == pytest.approx(at_real, rel=1e-12)
    assert gradient_penalty(critic, real, fake, zeros).item() == pytest.approx(at_fake, rel=1e-12)


def test_conditional_penalty_uses_each_samples_class() -> None:
    # Class 0: ||w|| = 2 -> 1; class 1: ||w|| = 1 -> 0; class 2: ||w|| = 4 -> 9.
    weights = torch.stack([torch.full((1, 2, 2), v, dtype=torch.float64) for v in (1.0, 0.5, 2.0)])
    critic = KnownGradientCritic(weights)
    real, fake = _images(1.0, 2.0, 3.0), _images(0.0, 0.0, 0.0)
    alpha = torch.full((3, 1, 1, 1), 0.5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    assert gradient_penalty(critic, real, fake, alpha, labels).item() == pytest.approx(10 / 3, rel=1e-12)


def test_penalty_gradient_reaches_the_critic_weights() -> None:
    """The penalty is a training loss: d/dw (||w|| - 1)² = 2 (||w|| - 1) w / ||w||, here 2 · 1 · w / 2."""
    weights = torch.ones(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    critic = KnownGradientCritic(weights)
    alpha = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    gradient_penalty(critic, _images(1.0, 2.0), _images(0.0, 1.0), alpha).backward()
    assert weights.grad is not None
    torch.testing.assert_close(weights.grad, torch.ones_like(weights) * 0.5 * 2)


# --- conditioning: the projection term and ACGAN's auxiliary loss -----------------------------------


def test_auxiliary_classifier_loss_is_the_cross_entropy_of_the_labels() -> None:
    # softmax(0, ln 3) = (1/4, 3/4): label 1 costs -ln(3/4), label 0 costs ln 4.
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)
    both = auxiliary_classifier_loss(logits, torch.tensor([1, 0]))
    # rel 1e-6 here and below: the loss is computed in fp32 by design (bf16 training), whatever comes in.
    assert both.item() == pytest.approx((-math.log(0.75) + math.log(4.0)) / 2, rel=1e-6)
    confident = torch.tensor([[20.0, -20.0, 0.0]])
    assert auxiliary_classifier_loss(confident, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-8)
    assert auxiliary_classifier_loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])).item() == pytest.approx(
        math.log(3.0), rel=1e-6
    )


def _scores(critic: Critic, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores, ACGAN logits or None): the one place these tests call a conditional critic."""
    return critic(x, y)


def _conditional_critic(mode: str) -> Critic:
    torch.manual_seed(0)
    return Critic(ndf=4, channels=1, size=16, n_classes=3, conditional=mode).double()


def test_projection_adds_the_class_embedding_dotted_with_the_head_features() -> None:
    """score(x, y) = head(φ(x)) + <e_y, φ(x)>. With e_0 = 0, e_1 = the head's weight and e_2 = minus
    it, class 1 doubles the head's linear part and class 2 leaves only its bias."""
    critic = _conditional_critic("projection")
    head = critic.head.weight.detach()[0]
    with torch.no_grad():
        critic.embed.weight.copy_(torch.stack([torch.zeros_like(head), head, -head]))
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bias = critic.head.bias.item()
    by_class = [_scores(critic, x, torch.full((2,), label))[0] for label in range(3)]
    linear = by_class[0] - bias
    assert linear.abs().min() > 1e-6  # the features are not trivially zero
    torch.testing.assert_close(by_class[1] - bias, 2 * linear, rtol=1e-12, atol=1e-12)
    only_bias = torch.full((2,), bias, dtype=torch.float64)
    torch.testing.assert_close(by_class[2], only_bias, rtol=1e-12, atol=1e-12)


def test_acgan_logits_are_the_classifier_head_on_the_critic_features() -> None:
    """The aux logits come from the same features as the score: zeroing the classifier's weight leaves
    its bias, whatever the image, and the score does not depend on the label."""
    critic = _conditional_critic("acgan")
    with torch.no_grad():
        critic.classifier.weight.zero_()
        critic.classifier.bias.copy_(torch.tensor([0.0, math.log(3.0), 0.0]))
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    scores_0, logits = _scores(critic, x, torch.tensor([0, 0]))
    scores_2, _ = _scores(critic, x, torch.tensor([2, 2]))
    assert logits is not None
    torch.testing.assert_close(scores_0, scores_2)
    torch.testing.assert_close(logits, critic.classifier.bias.detach().expand(2, 3))
    # softmax(0, ln 3, 0) = (1/5, 3/5, 1/5): label 1 costs -ln(3/5).
    loss = auxiliary_classifier_loss(logits, torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(-math.log(0.6), rel=1e-6)
