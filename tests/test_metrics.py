"""The metrics measure what they claim, on real images (scikit-learn's digits, upsampled to 28 px).

The reference is the first half of the digits train split; "generated" sets are the disjoint second
half (real vs real), uniform noise, a constant image, and the digits of one class (mode collapse).
The Inception path runs with a randomly initialised state dict as its local weights file and a
75 px input, so that it is exercised offline in seconds; its numbers mean nothing, its plumbing does.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from conftest import tiny_params
from sklearn.datasets import load_digits

from ganpipe.measure import score
from ganpipe.measure.classifier import (
    DomainClassifier,
    TrainingResult,
    accuracy,
    evaluate,
    predict_logits,
    random_shift,
    save_classifier,
    train_and_evaluate,
    train_classifier,
)
from ganpipe.measure.features import (
    EXTRACTORS,
    create_extractor,
    describe_resizer,
    ensure_weights,
    extract_features,
    resolve_weights,
)
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import save_npz, write_json

N_TRAIN = 1437  # sklearn's usual 80% of 1797
N_VAL = 180  # the other 360 images: half validation (model selection), half test
NUM_REAL = 700  # the reference: train[:700]; the real "generated" half: train[700:1400]
N_CLASSES = 10
CPU = torch.device("cpu")


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as uint8 (N, 1, 28, 28), in a fixed shuffled order."""
    digits = load_digits()
    small = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)
    images = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).numpy()
    order = np.random.RandomState(0).permutation(len(images))
    return images[order], digits.target[order].astype(np.int64)


def metric_params(**overrides: Any) -> dict[str, Any]:
    defaults = {"classifier__epochs": 5, "score__num_real": NUM_REAL, "score__batch_size": 250}
    return tiny_params(**{**defaults, **overrides})


def write_processed(
    images: np.ndarray, labels: np.ndarray, n_train: int = N_TRAIN, n_val: int = N_VAL
) -> None:
    save_npz(paths.PROCESSED_TRAIN, images=images[:n_train], labels=labels[:n_train])
    val_end = n_train + n_val
    save_npz(paths.PROCESSED_VAL, images=images[n_train:val_end], labels=labels[n_train:val_end])
    save_npz(paths.PROCESSED_TEST, images=images[val_end:], labels=labels[val_end:])
    info = {
        "name": "digits",
        "n_classes": N_CLASSES,
        "channels": 1,
        "size": 28,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": len(images) - n_train - n_val,
        "label_names": [str(k) for k in range(N_CLASSES)],
    }
    write_json(paths.PROCESSED_INFO, info)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo-like folder with processed digits, a trained classifier and the reference statistics."""
    root = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CI", "1")
        write_processed(*digits_28())
        train_and_evaluate(metric_params())
        score.compute_reference(metric_params())
        score.compute_train_reference(metric_params())
    return root


@pytest.fixture
def in_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("CI", "1")
    return workspace


def train_split() -> tuple[np.ndarray, np.ndarray]:
    with np.load(paths.PROCESSED_TRAIN) as data:
        return data["images"], data["labels"]


def score_images(images: np.ndarray, **overrides: Any) -> dict[str, Any]:
    save_npz(paths.SAMPLES, images=images)
    scores = score.score_samples(metric_params(**overrides))
    assert json.loads(paths.SCORES.read_text()) == scores  # strict JSON: no NaN slipped through
    return scores


def real_half() -> np.ndarray:
    return train_split()[0][NUM_REAL : 2 * NUM_REAL]


@pytest.fixture(scope="module")
def real_scores(workspace: Path) -> tuple[dict[str, Any], list[str]]:
    """Scores and class-histogram rows of the real second half against the reference (first half)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workspace)
        mp.setenv("CI", "1")
        scores = score_images(real_half())
        return scores, paths.CLASS_HISTOGRAM_TSV.read_text().splitlines()


def noise(n: int = NUM_REAL) -> np.ndarray:
    return np.random.RandomState(1).randint(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)


# --- the classifier --------------------------------------------------------------------------------


def test_classifier_accuracy_and_metrics_file(in_workspace: Path) -> None:
    metrics = json.loads(paths.CLASSIFIER_METRICS.read_text())
    assert set(metrics) == {
        "test_accuracy",
        "test_balanced_accuracy",
        "test_auc",
        "val_accuracy",
        "train_accuracy",
        "epochs",
        "best_epoch",
        "n_train",
        "n_val",
        "n_test",
        "n_classes",
        "train_time_s",
    }
    assert metrics["test_accuracy"] >= 0.97 and metrics["test_balanced_accuracy"] >= 0.97
    assert metrics["test_auc"] >= 0.99 and metrics["val_accuracy"] >= 0.97
    assert 1 <= metrics["best_epoch"] <= metrics["epochs"] == 5
    n_test = 1797 - N_TRAIN - N_VAL
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (N_TRAIN, N_VAL, n_test)
    saved = torch.load(paths.CLASSIFIER_WEIGHTS, weights_only=True)
    assert (saved["in_channels"], saved["size"], saved["n_classes"]) == (1, 28, N_CLASSES)
    assert all(torch.is_tensor(v) for v in saved["state_dict"].values())


def _train_small(seed: int = 3, epochs: int = 2) -> TrainingResult:
    images, labels = digits_28()
    return train_classifier(
        images[:160],
        labels[:160],
        N_CLASSES,
        val_images=images[160:256],
        val_labels=labels[160:256],
        epochs=epochs,
        batch_size=32,
        lr=3e-3,
        weight_decay=0.05,
        dropout=0.2,
        augment=True,
        seed=seed,
    )


def test_classifier_training_is_deterministic() -> None:
    """Weights, dropout, batch order and shifts all come from named streams: same seed, same weights."""
    first, second, other = (_train_small(seed, epochs=1).model.state_dict() for seed in (3, 3, 4))
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_classifier_keeps_the_best_validation_epoch() -> None:
    result = _train_small(epochs=4)
    images, labels = digits_28()
    curve = [(row["val_accuracy"], -row["val_loss"]) for row in result.history]
    assert result.best_epoch == 1 + curve.index(max(curve))
    assert result.val_accuracy == max(row["val_accuracy"] for row in result.history)
    # The returned weights are that epoch's: they reproduce its validation accuracy.
    assert accuracy(result.model, images[160:256], labels[160:256], "cpu") == result.val_accuracy


def test_features_and_head_give_the_logits() -> None:
    """features computes head(features(x)); in eval mode that is forward(x), dropout or not."""
    model = DomainClassifier(1, 28, N_CLASSES, dropout=0.5).eval()
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model.head(model.features(images)), model(images))


def test_random_shift_translates_and_repeats_edges() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 8, 8)
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    again = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape and torch.equal(shifted, again)

    def translated(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        rows, cols = (torch.arange(8) + dy).clamp(0, 7), (torch.arange(8) + dx).clamp(0, 7)
        return image[:, rows][:, :, cols]

    for image, out in zip(images, shifted):
        # Exactly one offset in [-2, 2]² maps the image onto the output: a translation, never a flip.
        offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        matches = [offset for offset in offsets if torch.equal(out, translated(image, *offset))]
        assert len(matches) == 1
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_evaluate_reports_balanced_accuracy_and_auc() -> None:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    model = DomainClassifier(1, 28, 2).eval()
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8).numpy()
    labels = np.array([0] * 30 + [1] * 10)
    result = evaluate(model, images, labels)
    probs = predict_logits(model, images).softmax(dim=1).double().numpy()
    assert result["auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))
    assert evaluate(model, images, np.zeros(40, np.int64))["auc"] is None  # one class: no AUC


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 28), (3, 64), (1, 128), (3, 224)])
def test_classifier_shapes(channels: int, size: int) -> None:
    model = DomainClassifier(channels, size, 7).eval()
    images = torch.randint(0, 256, (2, channels, size, size), dtype=torch.uint8)
    with torch.no_grad():
        assert model.features(images).shape == (2, 128)
        assert model(images).shape == (2, 7)


# --- the domain feature extractor -------------------------------------------------------------------


def test_domain_extractor_channels_and_resize(tmp_path: Path) -> None:
    """Grayscale reaches torch-fidelity as 3 equal channels and comes back as the original image;
    RGB passes through; other sizes are resized and the resizer says so."""
    domain = EXTRACTORS["domain"]
    rng = np.random.RandomState(0)
    for channels in (1, 3):
        model = DomainClassifier(channels, 28, N_CLASSES).eval()
        weights = tmp_path / f"classifier_{channels}.pt"
        save_classifier(weights, model)
        module = create_extractor(domain, weights, CPU)
        images = rng.randint(0, 256, size=(8, channels, 28, 28)).astype(np.uint8)
        features = extract_features(module, images, 4, CPU)
        with torch.no_grad():
            direct = model.features(torch.from_numpy(images))
        torch.testing.assert_close(features["features"], direct)
        assert features["logits"].shape == (8, N_CLASSES)
        assert describe_resizer(domain, module, 28) == "none"
    bigger = rng.randint(0, 256, size=(4, 3, 64, 64)).astype(np.uint8)
    assert extract_features(module, bigger, 4, CPU)["features"].shape == (4, 128)
    assert describe_resizer(domain, module, 64) == "bilinear-antialias-64-to-28"


# --- the scores --------------------------------------------------------------------------------------


def test_real_data_scores_like_real_data(real_scores: tuple[dict[str, Any], list[str]]) -> None:
    scores, rows = real_scores
    assert scores["is_mean"] >= 0.8 * N_CLASSES
    assert scores["precision"] >= 0.8 and scores["recall"] >= 0.8
    assert scores["coverage_classes"] == N_CLASSES and scores["coverage_kl"] < 0.05
    assert all(scores[f"intra_fid_{k}"] is not None for k in range(N_CLASSES))
    assert (scores["num_generated"], scores["num_real"], scores["kid_subset_size"]) == (700, 700, 700)
    assert scores["resizer"] == "none" and scores["extractors"] == "ganpipe-domain"
    assert not any(key.startswith("inception_") for key in scores)
    assert rows[0] == "label\treal\tgenerated" and len(rows) == N_CLASSES + 1
    assert math.isclose(sum(float(row.split("\t")[2]) for row in rows[1:]), 1.0, abs_tol=1e-4)


def test_fid_and_kid_separate_real_from_noise_and_constant(
    in_workspace: Path, real_scores: tuple[dict[str, Any], list[str]]
) -> None:
    real = real_scores[0]
    for fake in (noise(), np.zeros((NUM_REAL, 1, 28, 28), np.uint8)):
        scores = score_images(fake)
        assert real["fid"] < 0.05 * scores["fid"]
        assert real["kid_mean"] < 0.05 * scores["kid_mean"]
        assert scores["precision"] < 0.1 and scores["is_mean"] < 0.5 * real["is_mean"]


def test_collapsed_generator_shows_low_coverage_and_high_kl(
    in_workspace: Path, real_scores: tuple[dict[str, Any], list[str]]
) -> None:
    images, labels = train_split()
    ones = images[NUM_REAL:][labels[NUM_REAL:] == 1]
    real = real_scores[0]
    collapsed = score_images(ones)
    assert collapsed["coverage_classes"] <= 2 and collapsed["coverage_kl"] > math.log(N_CLASSES) - 0.3
    assert collapsed["recall"] < 0.3 and collapsed["fid"] > 10 * real["fid"]
    assert collapsed["intra_fid_1"] is not None and collapsed["intra_fid_0"] is None
    assert collapsed["kid_subset_size"] == len(ones)  # adapted to the smaller side
    assert set(collapsed) == set(real)  # the same keys whatever the results


def test_heldout_fid_scores_against_the_split_the_gan_never_saw(
    in_workspace: Path, real_scores: tuple[dict[str, Any], list[str]]
) -> None:
    """The held-out FID compares with the val split, at min(score.num_real, n_val) real images; real
    training images score near its noise floor, noise far above; the protocol is recorded."""
    real = real_scores[0]
    assert (real["heldout_split"], real["heldout_num_real"]) == ("val", min(NUM_REAL, N_VAL))
    # The real half is training images, as the floor's set is: near the floor, not at the train FID.
    assert real["heldout_fid"] < 2 * real["heldout_fid_noise_floor"] and real["heldout_fid"] != real["fid"]
    assert score_images(noise())["heldout_fid"] > 20 * real["heldout_fid"]
    meta = json.loads(score.REFERENCE_META.read_text())["heldout"]
    with np.load(score.HELDOUT_REFERENCE) as data:
        assert data["features"].shape[0] == meta["num_real"] == min(NUM_REAL, N_VAL)
    expected = {"protocol_train_split": "train", "protocol_heldout_split": "val"}
    assert {key: real[key] for key in expected} == expected
    assert real["protocol_selection_split"] == "none" and real["protocol_seed"] == metric_params()["seed"]


def test_score_refuses_a_stale_reference(in_workspace: Path) -> None:
    save_npz(paths.SAMPLES, images=real_half())
    with pytest.raises(GanpipeError, match="dvc repro reference"):
        score.score_samples(metric_params(score__num_real=NUM_REAL - 1))


def test_domain_fid_for_training(in_workspace: Path) -> None:
    """Against the FID-during-training reference (data/train_reference), not the scoring one; cached;
    the global RNG untouched."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    rng_state = torch.get_rng_state()
    fid_real = score.domain_fid(real_half(), CPU)
    module = next(iter(score._DOMAIN_CACHE.values()))[0]
    fid_noise = score.domain_fid(noise(200), CPU)
    assert next(iter(score._DOMAIN_CACHE.values()))[0] is module
    assert torch.equal(rng_state, torch.get_rng_state())
    features = extract_features(module, real_half(), 250, CPU)[EXTRACTORS["domain"].feature_layer]
    with np.load(score.TRAIN_REFERENCE) as train_reference:
        stats = fid_features_to_statistics(features)
        expected = fid_statistics_to_metric(stats, dict(train_reference), False)["frechet_inception_distance"]
    assert math.isclose(fid_real, expected, rel_tol=1e-6)
    meta = json.loads(score.TRAIN_REFERENCE_META.read_text())
    assert meta["num_real"] == metric_params()["score"]["train_samples"]
    assert fid_real < 0.05 * fid_noise


# --- the Inception path --------------------------------------------------------------------------------


@pytest.fixture
def random_inception_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state dict of torch-fidelity's InceptionV3 architecture with random weights.

    Its constructor always loads weights (downloading when given no path), so the random initial
    state is captured by a subclass whose `load_state_dict` keeps it, with the download stubbed out.
    """

    class Unloaded(tf_inception.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
            return None

    with monkeypatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        torch.manual_seed(0)
        state = Unloaded("random-inception", ["2048"]).state_dict()
    path = tmp_path / EXTRACTORS["inception"].weights_file
    torch.save(state, path)
    # The smallest input InceptionV3 takes: the plumbing is the same, at 1/16 of the cost.
    monkeypatch.setattr(tf_inception.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
    return path


def test_inception_path_with_local_weights(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, random_inception_weights: Path
) -> None:
    small = tmp_path / "inception"
    for path in (paths.PROCESSED_DIR, paths.CLASSIFIER_DIR):
        shutil.copytree(workspace / path, small / path)
    monkeypatch.chdir(small)
    monkeypatch.setenv("CI", "1")
    params = {
        "score__num_real": 16,
        "score__extractors": ["domain", "inception"],
        "score__weights": {"inception": str(random_inception_weights)},
    }
    meta = score.compute_reference(metric_params(**params))
    assert meta["extractors"]["inception"]["resizer"] == "tf1x-bilinear-to-299"
    assert meta["extractors"]["inception"]["input_range"] == EXTRACTORS["inception"].input_range
    with np.load(paths.REFERENCE_DIR / "inception.npz") as reference:
        assert reference["features"].shape == (16, 2048)
    scores = score_images(train_split()[0][100:116], **params)
    expected = {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"}
    expected |= {"resizer", "input_range", "fid_noise_floor", "kid_noise_floor"}
    assert {f"inception_{key}" for key in expected} <= set(scores)
    assert all(scores[f"inception_{key}"] is not None for key in expected)
    assert scores["extractors"] == "ganpipe-domain,inception-v3-compat"
    # Taking Inception off the list drops its statistics and its keys.
    meta = score.compute_reference(metric_params(score__num_real=16))
    assert "inception" not in meta["extractors"] and not (paths.REFERENCE_DIR / "inception.npz").exists()
    assert not any(
        key.startswith("inception_") for key in score_images(train_split()[0][100:116], score__num_real=16)
    )


def test_inception_weights_off_and_bad_file(tmp_path: Path) -> None:
    """No weights are resolved for the domain extractor alone; a bad local file is refused in one line.
    (The offline failure of a download is tested for every extractor in tests/test_extractors.py.)"""
    assert resolve_weights({"extractors": ["domain"], "weights": {"inception": None}}) == {}
    not_torch = tmp_path / "not_weights.pth"
    not_torch.write_text("not a state dict")
    other_architecture = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, other_architecture)
    for bad in (not_torch, other_architecture):
        with pytest.raises(GanpipeError, match="not usable as inception weights") as error:
            ensure_weights(EXTRACTORS["inception"], str(bad))
        assert "\n" not in str(error.value)
