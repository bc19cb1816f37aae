"""The utility stage (train on synthetic, test on real): its arms never see the test or val split, it
measures something real (a perfect generator scores like real data, noise scores like chance), and an
unconditional model is skipped with a reason instead of failing."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_params

from ganpipe.data import download, preprocess
from ganpipe.measure import utility
from ganpipe.measure.classifier import evaluate, train_classifier
from ganpipe.measure.utility import ARMS, arm_data, measure_utility, tstr_ratio
from ganpipe.pipeline import paths
from ganpipe.pipeline.io import save_npz
from ganpipe.pipeline.processed import read_split


def _params(**overrides: Any) -> dict[str, Any]:
    settings = {
        "data__channels": 1,
        "data__limit": 600,
        "utility__seeds": 1,
        "utility__epochs": 3,
        "classifier__batch_size": 32,
    }
    return tiny_params(**{**settings, **overrides})


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("utility")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = _params()
        download(params["data"])
        preprocess(params)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def in_root(digits_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(digits_root)
    monkeypatch.setenv("CI", "1")
    return digits_root


def _bytes(images: np.ndarray) -> set[bytes]:
    return set(map(np.ndarray.tobytes, images))


def test_arms_never_train_on_the_test_or_val_split(in_root: Path) -> None:
    train, val, test = (
        read_split(path) for path in (paths.PROCESSED_TRAIN, paths.PROCESSED_VAL, paths.PROCESSED_TEST)
    )
    held_out = _bytes(val[0]) | _bytes(test[0])
    assert held_out and not (held_out & _bytes(train[0]))  # the splits themselves are disjoint
    rng = np.random.default_rng(0)
    synthetic = (rng.integers(0, 256, (3000, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3000))
    params = _params(utility__low_data_fraction=0.2, utility__synthetic_ratio=0.5)
    arms = arm_data(train, synthetic, 10, params, run=0)
    assert set(arms) == set(ARMS)
    n = len(train[1])
    assert {arm: len(labels) for arm, (_, labels) in arms.items()} == {
        "trtr": n,
        "tstr": n,
        "mixed": n + round(0.5 * n),
        "low": round(0.2 * n),
        "low_mixed": round(0.2 * n) + round(0.5 * n),
    }
    for arm, (images, labels) in arms.items():
        assert not (_bytes(images) & held_out), arm
        assert len(images) == len(labels)
    low_counts = np.bincount(arms["low"][1], minlength=10)
    assert np.all(np.abs(low_counts - np.bincount(train[1]) * 0.2) <= 1)  # stratified
    assert _bytes(arms["low"][0]) <= _bytes(train[0])
    assert arm_data(train, synthetic, 10, params, run=1)["low"][1].tolist() != arms["low"][1].tolist()


def test_arms_select_on_val_and_are_tested_on_test_only(
    in_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Classification Accuracy Score protocol: every arm's classifier selects its weights on the
    real val split and is evaluated on the real test split, and neither split is trained on. The real
    functions run; the wrappers record which images reached selection and evaluation. Only the first
    arm's classifier is trained (the others reuse it): what is checked is where the data flows."""
    splits = {
        name: _bytes(read_split(path)[0])
        for name, path in (("val", paths.PROCESSED_VAL), ("test", paths.PROCESSED_TEST))
    }
    assert splits["val"] and splits["test"] and not splits["val"] & splits["test"]  # distinguishable
    seen: dict[str, list[set[bytes]]] = {"training": [], "selection": [], "evaluation": []}
    trained: list[Any] = []

    def recorded_training(images: np.ndarray, labels: np.ndarray, n_classes: int, **options: Any) -> Any:
        seen["training"].append(_bytes(images))
        seen["selection"].append(_bytes(options["val_images"]))
        if not trained:
            trained.append(train_classifier(images, labels, n_classes, **options))
        return trained[0]

    def recorded_evaluation(model: Any, images: np.ndarray, labels: np.ndarray, device: Any) -> Any:
        seen["evaluation"].append(_bytes(images))
        return evaluate(model, images, labels, device)

    monkeypatch.setattr(utility, "train_classifier", recorded_training)
    monkeypatch.setattr(utility, "evaluate", recorded_evaluation)
    train_images, train_labels = read_split(paths.PROCESSED_TRAIN)
    save_npz(paths.SAMPLES, images=train_images, labels=train_labels)
    measure_utility(_params(utility__epochs=1))
    assert len(seen["selection"]) == len(seen["evaluation"]) == len(ARMS)
    assert all(selection == splits["val"] for selection in seen["selection"])
    assert all(evaluation == splits["test"] for evaluation in seen["evaluation"])
    assert not any(images & (splits["val"] | splits["test"]) for images in seen["training"])


def test_tstr_ratio_is_accuracy_over_accuracy() -> None:
    # Balanced accuracies that would give another ratio (0.3 / 0.6 = 0.5) are not used.
    metrics = {
        "tstr_accuracy_mean": 0.6,
        "trtr_accuracy_mean": 0.8,
        "tstr_balanced_accuracy_mean": 0.3,
        "trtr_balanced_accuracy_mean": 0.6,
    }
    assert tstr_ratio(metrics) == 0.75
    assert tstr_ratio({**metrics, "trtr_accuracy_mean": 0.0}) is None


def test_summary_is_the_mean_and_sample_std_over_runs() -> None:
    # Runs 0.5, 0.7, 0.9 (one undefined): mean 0.7, sample std sqrt(((-0.2)² + 0² + 0.2²) / 2) = 0.2.
    assert utility._summary([0.5, None, 0.7, 0.9]) == {"mean": 0.7, "std": 0.2}
    assert utility._summary([0.8]) == {"mean": 0.8, "std": 0.0}  # one run: no spread
    assert utility._summary([None, None]) == {"mean": None, "std": None}
    assert utility._summary([1 / 3, 2 / 3]) == {"mean": 0.5, "std": round(math.sqrt(1 / 18), 6)}
    assert utility._summary([0.0, 1 / 3, 2 / 3]) == {"mean": 0.333333, "std": 0.333333}  # 6 decimals


def _run(samples: dict[str, np.ndarray]) -> dict[str, Any]:
    save_npz(paths.SAMPLES, **samples)
    metrics = measure_utility(_params())
    assert json.loads(paths.UTILITY_METRICS.read_text()) == metrics
    assert paths.UTILITY_FIGURE.stat().st_size > 5_000
    return metrics


def test_unconditional_samples_are_skipped_with_the_reason(in_root: Path) -> None:
    metrics = _run({"images": np.zeros((64, 1, 28, 28), np.uint8)})
    assert "unconditional" in metrics["skipped"] and "conditional" in metrics["skipped"]
    assert metrics["tstr_ratio"] is None and metrics["trtr_accuracy_mean"] is None
    rows = paths.UTILITY_TSV.read_text().splitlines()
    assert rows[0].startswith("arm\t") and len(rows) == 1 + len(ARMS)


def test_a_perfect_generator_scores_like_real_data_and_noise_like_chance(
    in_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skipped_keys = set(_run({"images": np.zeros((64, 1, 28, 28), np.uint8)}))
    train_images, train_labels = read_split(paths.PROCESSED_TRAIN)
    perfect = _run({"images": train_images, "labels": train_labels})  # "generated" = the real split
    assert "warning" not in capsys.readouterr().err
    assert perfect["skipped"] is None and set(perfect) == skipped_keys
    assert perfect["trtr_accuracy_mean"] > 0.75
    assert perfect["tstr_ratio"] == pytest.approx(1.0, abs=0.1)
    assert all(perfect[f"{arm}_accuracy_std"] is not None for arm in ARMS)
    rng = np.random.default_rng(1)
    half = len(train_labels) // 2  # fewer samples than real images: the arms take all, and say so
    noise = _run(
        {
            "images": rng.integers(0, 256, (half, *train_images.shape[1:]), dtype=np.uint8),
            "labels": rng.integers(0, 10, half),
        }
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "sample.num_samples" in warnings[0], warnings
    assert noise["tstr_n_train"] == half and noise["mixed_n_train"] == len(train_labels) + half
    assert noise["tstr_accuracy_mean"] < 0.3 and noise["tstr_ratio"] < 0.35
    assert noise["trtr_accuracy_mean"] == perfect["trtr_accuracy_mean"]  # the real arm does not change
