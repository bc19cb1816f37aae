"""Per-architecture optimiser recipes (recipes.<arch>.<loss>), the generator EMA's warm-up and its
batch-norm statistics, and the LeCam regulariser: known values, what a run records, exact resume and
one-line refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_params
from torch import nn
from training import assert_resume_after_kill_is_bit_identical, train_in

from ganpipe.config import validate
from ganpipe.gan.losses import lecam_regulariser
from ganpipe.gan.models import generator_from_checkpoint
from ganpipe.gan.train import ema_decay_at
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.io import load_torch
from ganpipe.pipeline.params import model_config, recipe


def hinge_params(arch: str, **overrides: Any) -> dict[str, Any]:
    return validate(tiny_params(model="hinge", arch__name=arch, data__channels=1, **overrides))


def test_lecam_known_values() -> None:
    # relu(D(x) - a_F)^2 on reals [1, -2, 3] with a_F = -0.2: 1.2², 0, 3.2² -> mean 11.68 / 3;
    # relu(a_R - D(G(z)))^2 on fakes [0.5, -1] with a_R = 0.7: 0.2², 1.7² -> mean 2.93 / 2.
    value = lecam_regulariser(
        torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, -1.0]), torch.tensor(0.7), torch.tensor(-0.2)
    )
    assert value.item() == pytest.approx(11.68 / 3 + 2.93 / 2, rel=1e-6)


def test_lecam_is_zero_inside_the_anchors_and_pulls_outliers_back() -> None:
    # Reals scored below the fakes' anchor and fakes above the reals' anchor cost nothing.
    inside = lecam_regulariser(
        torch.tensor([-1.0]), torch.tensor([2.0]), torch.tensor(1.0), torch.tensor(0.0)
    )
    assert inside.item() == 0.0
    real = torch.tensor([3.0], requires_grad=True)
    lecam_regulariser(real, torch.tensor([2.0]), torch.tensor(1.0), torch.tensor(0.0)).backward()
    assert real.grad.item() == pytest.approx(2 * 3.0)  # d/dx (x - 0)^2 at 3: lowers the real score


@pytest.mark.parametrize(
    ("decay", "step", "expected"),
    [(0.999, 0, 0.1), (0.999, 90, 0.91), (0.999, 10**6, 0.999), (0.5, 0, 0.1), (0.5, 10, 0.5)],
)
def test_ema_decay_warms_up_to_its_setting(decay: float, step: int, expected: float) -> None:
    assert ema_decay_at(decay, step) == pytest.approx(expected)


def test_resnet_hinge_takes_its_architectures_recipe() -> None:
    params = hinge_params("resnet")
    name, settings = recipe(params)
    assert name == params["recipes"]["resnet"]["hinge"]["name"] and settings
    config = model_config(params)
    assert all(config[key] == value for key, value in settings.items())
    # arch.recipe: model keeps the model's own settings; dcgan has no recipe.
    for own in (hinge_params("resnet", arch__recipe="model"), hinge_params("dcgan")):
        assert recipe(own) == ("model", {}) and model_config(own) == own["models"]["hinge"]


def test_a_recipe_leaves_the_keys_it_does_not_set_to_the_model() -> None:
    """The built-in recipes set no EMA: models.hinge.ema_decay reaches a resnet run, and a recipe's
    own ema_decay wins over it."""
    params = hinge_params("resnet")
    params["models"]["hinge"].update(ema_decay=0.9, lr_g=1.0)
    config = model_config(params)
    assert config["ema_decay"] == 0.9 and config["lr_g"] == params["recipes"]["resnet"]["hinge"]["lr_g"]
    params["recipes"]["resnet"]["hinge"].update(ema_decay=0.99)
    assert model_config(params)["ema_decay"] == 0.99


def test_a_run_records_its_recipe(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    """train.json names the recipe, and the recipe is what trains: the model's own settings give
    other weights from the same seed."""
    runs = {}
    for choice in ("auto", "model"):
        params = hinge_params("resnet", train__max_steps=2, arch__recipe=choice)
        runs[choice] = train_in(tmp_path / choice, processed_digits(1, 28), params)["recipe"]
    assert runs == {"auto": params["recipes"]["resnet"]["hinge"]["name"], "model": "model"}
    weights = [load_torch(tmp_path / choice / paths.GENERATOR)["state_dict"] for choice in runs]
    assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["recipes"]["resnet"]["hinge"].update(clip=0.01),
            "params.yaml: recipes.resnet.hinge.clip is not a recipe key; a recipe sets only optimizer,",
        ),
        (
            lambda p: p["recipes"]["resnet"]["hinge"].update(lr_g=-1),
            "params.yaml: recipes.resnet.hinge.lr_g = -1",
        ),
        (lambda p: p["recipes"].pop("dcgan"), "params.yaml: recipes = "),
        (
            lambda p: p["recipes"]["resnet"].update(ranking={"name": "x"}),
            "params.yaml: recipes.resnet.ranking",
        ),
        (lambda p: p["recipes"]["resnet"]["hinge"].pop("name"), "params.yaml: recipes.resnet.hinge = "),
        (lambda p: p["arch"].update(recipe="best"), "params.yaml: arch.recipe = 'best' is not allowed"),
    ],
    ids=["unknown-key", "bad-value", "missing-arch", "unknown-loss", "no-name", "bad-choice"],
)
def test_bad_recipes_are_refused_in_one_line(change: Callable[[dict[str, Any]], Any], message: str) -> None:
    params = tiny_params(model="hinge", arch__name="resnet")
    change(params)
    with pytest.raises(ParamsError) as error:
        validate(params)
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_lecam_changes_training_and_resumes_exactly(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    params = hinge_params("dcgan", train__checkpoint_every=3)
    params["models"]["hinge"].update(lecam_lambda=0.5, ema_decay=0.9)
    assert_resume_after_kill_is_bit_identical(tmp_path / "lecam", processed_digits(1, 28), params)
    plain = hinge_params("dcgan", train__checkpoint_every=3)
    plain["models"]["hinge"].update(ema_decay=0.9)
    train_in(tmp_path / "plain", processed_digits(1, 28), plain)
    with_lecam = load_torch(tmp_path / "lecam/whole" / paths.CRITIC)["state_dict"]
    without = load_torch(tmp_path / "plain" / paths.CRITIC)["state_dict"]
    assert any(not torch.equal(with_lecam[key], without[key]) for key in without)


def test_ema_generator_batch_norms_hold_its_own_statistics(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    """The saved EMA generator's running statistics are those of its own activations, so eval mode
    (which sampling uses) gives what train mode on a large batch gives; the trained generator's
    statistics, which update_ema copies at each step, would not."""
    params = hinge_params("dcgan", train__max_steps=6)
    params["models"]["hinge"].update(ema_decay=0.5)
    train_in(tmp_path, processed_digits(1, 28), params)
    ema = generator_from_checkpoint(load_torch(tmp_path / paths.GENERATOR_EMA))
    trained = generator_from_checkpoint(load_torch(tmp_path / paths.GENERATOR))
    noise = torch.randn(2048, params["arch"]["nz"], generator=torch.Generator().manual_seed(0))

    def eval_error(model: nn.Module) -> float:
        with torch.no_grad():
            return (model.eval()(noise) - model.train()(noise)).abs().mean().item()

    own_error = eval_error(ema)
    ema.load_state_dict(
        {**ema.state_dict(), **{k: v for k, v in trained.state_dict().items() if "running" in k}}
    )
    assert own_error < 0.5 * eval_error(ema), own_error
