"""Class-conditional GANs: every loss × conditioning mode trains, runs stay exact, labels flow from
training through sampling, scoring, figures and the exported synthetic dataset back into the pipeline.
Resume after kill -9 of a conditional model: tests/test_train.py, the one run with every training
feature on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_params
from training import train_in

from ganpipe.config import validate
from ganpipe.data import download, preprocess
from ganpipe.data.labels import check_conditional_data
from ganpipe.data.layout import inspect_npz
from ganpipe.gan.arch.dcgan import Critic, Generator
from ganpipe.gan.export import export
from ganpipe.gan.layers import ConditionalBatchNorm
from ganpipe.gan.models import build_models, generator_from_checkpoint
from ganpipe.gan.sample import sample
from ganpipe.gan.train import train
from ganpipe.measure.score import class_metrics
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.io import load_torch
from ganpipe.report.plots import CLASS_GRID_PNG, draw_all

# One model per loss of the registry: wasserstein with clipping and with the gradient penalty.
LOSS_MODELS = ("wgan", "wgan_gp", "dcgan", "lsgan", "hinge")
MODES = ("projection", "acgan")


def conditional_params(model: str, mode: str, **overrides: Any) -> dict[str, Any]:
    params = tiny_params(model=model, **overrides)
    params["models"][model]["conditional"] = mode
    return validate(params)


def _workdir(tmp_path: Path, processed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(processed_dir, tmp_path / paths.PROCESSED_DIR)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", LOSS_MODELS)
def test_every_loss_trains_conditional(
    model: str,
    mode: str,
    processed_digits: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
    params = conditional_params(model, mode, data__channels=1, train__max_steps=5)
    metrics = train(params)

    assert metrics["steps"] == 5 and metrics["conditional"] == mode
    assert all(np.isfinite(metrics[key]) for key in ("loss_g", "loss_d", "wasserstein"))
    saved = load_torch(paths.GENERATOR)
    assert saved["config"]["conditional"] == mode and saved["config"]["n_classes"] == 10
    assert load_torch(paths.CRITIC)["config"]["conditional"] == mode
    generator = generator_from_checkpoint(saved)
    images = generator(torch.randn(4, params["arch"]["nz"]), torch.tensor([0, 3, 7, 9]))
    assert images.shape == (4, 1, 28, 28)
    with np.load(paths.EPOCH_SAMPLES) as epoch_samples:
        assert epoch_samples["labels"].tolist() == [k % 10 for k in range(16)]


@pytest.mark.parametrize("mode", MODES)
def test_rgb_64_trains_conditional(
    mode: str, processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed_digits(3, 64), monkeypatch)
    params = conditional_params("wgan_gp", mode, data__channels=3, data__image_size=64, train__max_steps=5)
    params["models"]["wgan_gp"].update(spectral_norm_d=True, ema_decay=0.9)  # SN'd embedding / head
    assert train(params)["steps"] == 5
    generator = generator_from_checkpoint(load_torch(paths.GENERATOR_EMA))
    assert generator(torch.randn(2, params["arch"]["nz"]), torch.tensor([1, 2])).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("size", (28, 64, 128, 224))
@pytest.mark.parametrize("mode", ("none", *MODES))
def test_models_every_size(size: int, mode: str) -> None:
    cfg = {"spectral_norm_g": False, "spectral_norm_d": True, "dropout_d": 0.0, "conditional": mode}
    generator, critic = build_models(cfg, {"nz": 8, "ngf": 4, "ndf": 4}, 3, size, n_classes=5)
    labels = torch.tensor([0, 4])
    images = generator(torch.randn(2, 8), labels)
    assert images.shape == (2, 3, size, size)
    scores, logits = critic(images, None if mode == "none" else labels)
    assert scores.shape == (2,)
    assert logits is None if mode != "acgan" else logits.shape == (2, 5)
    if mode == "projection":  # one embedding entry per element of the flattened map the head reads
        assert critic.embed.weight.shape == (5, critic.head.in_features)


def test_unconditional_nets_are_todays() -> None:
    """conditional none: the same modules, parameters and init draws as a net built without classes."""
    torch.manual_seed(0)
    cfg = {"spectral_norm_g": False, "spectral_norm_d": False, "dropout_d": 0.0, "conditional": "none"}
    with_classes = build_models(cfg, {"nz": 8, "ngf": 8, "ndf": 8}, 1, 28, n_classes=10)
    torch.manual_seed(0)
    without = (Generator(8, 8, 1, 28), Critic(8, 1, 28))
    from ganpipe.gan.arch.dcgan import init_dcgan_weights

    for net in without:
        init_dcgan_weights(net)
    for a, b in zip(with_classes, without, strict=True):
        state_a, state_b = a.state_dict(), b.state_dict()
        assert list(state_a) == list(state_b)
        assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
        assert not any(isinstance(layer, ConditionalBatchNorm) for layer in a.modules())


def test_conditional_batch_norm_starts_at_unit_gain() -> None:
    torch.manual_seed(0)
    cfg = {"spectral_norm_g": False, "spectral_norm_d": False, "dropout_d": 0.0, "conditional": "projection"}
    generator, _ = build_models(cfg, {"nz": 8, "ngf": 8, "ndf": 8}, 1, 28, n_classes=10)
    norms = [layer for layer in generator.modules() if isinstance(layer, ConditionalBatchNorm)]
    assert len(norms) == 2 and norms[0].norm.__class__.__name__ == "BatchNorm1d"  # the 28 px FC entry too
    for norm in norms:
        assert float(norm.gain.detach().abs().max()) < 0.2 and float(norm.bias.detach().abs().max()) == 0.0


def test_conditional_reruns_are_bit_identical(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    params = conditional_params("wgan_gp", "projection", data__channels=1)
    params["models"]["wgan_gp"].update(dropout_d=0.2, ema_decay=0.9)
    train_in(tmp_path / "a", processed_digits(1, 28), params)
    train_in(tmp_path / "b", processed_digits(1, 28), params)
    for name in ("generator.pt", "critic.pt", "generator_ema.pt", "epoch_samples.npz"):
        first, second = (tmp_path / run / paths.TRAIN_DIR / name for run in ("a", "b"))
        assert first.read_bytes() == second.read_bytes()


def test_multi_label_data_is_refused_for_conditional_training() -> None:
    params = conditional_params("hinge", "projection")
    info = {"name": "chestmnist", "task": "multi-label, binary-class", "n_classes": 15}
    with pytest.raises(
        ParamsError,
        match=r"models\.hinge\.conditional = 'projection' needs single-label.*"
        r"set models\.hinge\.conditional=none",
    ):
        check_conditional_data(params, info)
    check_conditional_data(tiny_params(model="hinge"), info)  # unconditional: fine


def test_class_metrics_keys_do_not_depend_on_conditioning() -> None:
    rng = np.random.default_rng(0)
    n_classes, per_class = 3, 60
    real_labels = np.repeat(np.arange(n_classes), per_class)
    real_features = rng.normal(size=(len(real_labels), 4)) + real_labels[:, None]
    reference = {"labels": real_labels, "features": real_features}
    gen_labels = np.repeat(np.arange(n_classes), per_class)
    features = rng.normal(size=(len(gen_labels), 4)) + gen_labels[:, None]
    predicted = gen_labels.copy()
    predicted[:15] = 1  # 15 of the 60 class-0 images, the classifier calls class 1

    conditional, _, _ = class_metrics(features, predicted, reference, n_classes, gen_labels)
    unconditional, _, _ = class_metrics(features, predicted, reference, n_classes)

    assert conditional.keys() == unconditional.keys()
    assert conditional["label_accuracy"] == pytest.approx(1 - 15 / len(gen_labels))
    assert unconditional["label_accuracy"] is None
    assert (conditional["class_labels"], unconditional["class_labels"]) == ("conditioning", "predicted")
    assert unconditional["intra_fid_0"] is None  # 45 images predicted class 0: fewer than 50
    for key in ("intra_fid_0", "precision_0", "recall_0", "intra_fid_mean", "class_precision_mean"):
        assert conditional[key] is not None


def test_samples_figures_export_and_back_into_the_pipeline(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path / "work", processed_digits(1, 28), monkeypatch)
    params = conditional_params(
        "hinge",
        "projection",
        data__channels=1,
        train__max_steps=4,
        export__num_train=96,
        export__num_val=16,
        export__num_test=32,
        export__png=True,
    )
    train(params)

    sample(params)
    with np.load(paths.SAMPLES) as samples:
        prior_labels = samples["labels"]
        assert samples["images"].shape == (128, 1, 28, 28) and prior_labels.shape == (128,)
    params["sample"]["labels"] = "uniform"
    sample(params)
    with np.load(paths.SAMPLES) as samples:
        assert not np.array_equal(samples["labels"], prior_labels)
        assert set(samples["labels"].tolist()) <= set(range(10))

    assert paths.FIGURES / CLASS_GRID_PNG in draw_all(params)

    manifest = export(params)
    assert manifest["exported"] and manifest["num_images"] == {"train": 96, "val": 16, "test": 32}
    assert json.loads(paths.EXPORT_MANIFEST.read_text()) == manifest
    layout = inspect_npz(paths.EXPORT_NPZ)
    assert (layout.size, layout.channels, layout.splits) == (28, 1, {"train": 96, "val": 16, "test": 32})
    assert len(list(paths.EXPORT_PNG.rglob("*.png"))) == 144
    synthetic = tmp_path / "synthetic.npz"
    shutil.copy2(paths.EXPORT_NPZ, synthetic)

    # The synthetic set as a dataset: download, preprocess and a few training steps.
    (tmp_path / "again").mkdir()
    monkeypatch.chdir(tmp_path / "again")
    again = tiny_params(
        model="hinge", data__name="local", data__source=str(synthetic), data__channels=1, train__max_steps=3
    )
    again["models"]["hinge"]["conditional"] = "projection"
    again = validate(again)
    download(again["data"])
    preprocess(again)
    info = json.loads(paths.PROCESSED_INFO.read_text())
    assert info["n_classes"] == 10 and info["n_train"] + info["n_val"] + info["n_test"] == 144
    assert train(again)["steps"] == 3


def test_unconditional_export_writes_only_the_reason(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _workdir(tmp_path, processed_digits(1, 28), monkeypatch)
    params = validate(tiny_params(model="dcgan", data__channels=1, train__max_steps=2))
    train(params)
    sample(params)
    with np.load(paths.SAMPLES) as samples:
        assert samples.files == ["images"]  # no labels an unconditional generator was not given
    manifest = export(params)
    assert manifest["exported"] is False and "conditional = none" in manifest["reason"]
    assert not paths.EXPORT_NPZ.exists() and paths.EXPORT_MANIFEST.exists()
    assert CLASS_GRID_PNG not in [path.name for path in draw_all(params)]
