"""The metrics of ganpipe.measure.score against independent implementations on small fixed feature
sets: FID by scipy's sqrtm (torch-fidelity takes eigenvalues instead), KID by a hand-written unbiased
MMD with the cubic polynomial kernel, precision/recall by a brute-force k-NN manifold count, IS from
its formula, coverage_kl by hand in the direction KL(real ‖ generated), and the per-class metrics.

Tolerance: 1e-6 relative everywhere. The features are float64 (the pipeline's are float32; the
formulas do not depend on the dtype, and float64 keeps the comparison about the formula, not the
rounding). KID is deterministic here because its subset size is N on both sides: every subset is a
permutation of all the samples, and MMD does not depend on the order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.datasets import load_digits

from ganpipe.measure.extractors import EXTRACTORS
from ganpipe.measure.score import (
    COVERAGE_SHARE,
    HELDOUT_REFERENCE,
    ISC_SPLITS,
    KL_EPSILON,
    MIN_INTRA_SAMPLES,
    PRC_NEIGHBORHOOD,
    RNG_SEED,
    TRAIN_REFERENCE,
    _floor_metrics,
    class_metrics,
    fid_between,
    fidelity_metrics,
    heldout_metrics,
    reference_path,
    reference_subsets,
)
from ganpipe.pipeline.io import save_npz

DOMAIN = EXTRACTORS["domain"]
N, DIM, CLASSES = 64, 8, 5
RELATIVE = 1e-6


# --- the independent implementations ---------------------------------------------------------------


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½), the square root by scipy.linalg.sqrtm."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * root))


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² (Gretton et al. 2012) with k(a, b) = (a·b / d + 1)³: the kernel means over
    distinct pairs within each set, minus twice the mean over all cross pairs."""
    d = x.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def knn_precision_recall(generated: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019, by brute force: a sample's ball reaches its k-th nearest neighbour in
    its own set; precision is the share of generated samples inside some real ball, recall the
    share of real samples inside some generated ball."""

    def radii(points: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(points[:, None] - points[None], axis=2)
        return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself

    cross = np.linalg.norm(generated[:, None] - real[None], axis=2)  # (generated, real)
    precision = np.mean([np.any(row <= radii(real)) for row in cross])
    recall = np.mean([np.any(column <= radii(generated)) for column in cross.T])
    return float(precision), float(recall)


def inception_score(logits: np.ndarray, splits: int, seed: int) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) per split of the rows shuffled by RandomState(seed), p(y) the
    split's mean prediction; mean and (population) std over the splits. Split i holds rows
    i·N // splits to (i + 1)·N // splits, as in the reference code (openai/improved-gan)."""
    logits = logits[np.random.RandomState(seed).permutation(len(logits))]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    scores = []
    count = len(probabilities)
    for i in range(splits):
        chunk = probabilities[i * count // splits : (i + 1) * count // splits]
        marginal = chunk.mean(axis=0)
        kl = np.sum(chunk * (np.log(chunk) - np.log(marginal)), axis=1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# --- fixed feature sets --------------------------------------------------------------------------------


def _features(seed: int, count: int = N, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.eye(DIM) + 0.3 * rng.standard_normal((DIM, DIM))  # correlated dimensions
    return shift + scale * rng.standard_normal((count, DIM)) @ mixing


def _reference(real: np.ndarray) -> dict[str, np.ndarray]:
    """What the reference stage stores: the features, their mean and covariance."""
    return {"features": real, "mu": real.mean(axis=0), "sigma": np.cov(real, rowvar=False)}


# Function-scoped on purpose: mutmut runs for each mutant the tests that called it, and a shared
# fixture would credit the call to the first test only.
@pytest.fixture
def scored() -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    generated, real = _features(1, scale=1.3, shift=0.4), _features(2)
    logits = np.random.default_rng(3).standard_normal((N, CLASSES)) * 2.0
    inputs = {
        DOMAIN.feature_layer: torch.from_numpy(generated),
        DOMAIN.logits_layer: torch.from_numpy(logits),
    }
    metrics = fidelity_metrics(inputs, _reference(real), DOMAIN, kid_subset_size=N)
    return metrics, generated, real, logits


def test_fidelity_metrics_keys(scored) -> None:
    assert set(scored[0]) == {"fid", "kid_mean", "kid_std", "precision", "recall", "is_mean", "is_std"}


def test_kid_subsets_are_seeded() -> None:
    """With N above the subset size, KID averages random subsets: drawn from RNG_SEED, so the same
    inputs give the same value, run after run."""
    generated, real = _features(1, 80), _features(2, 70)
    inputs = {DOMAIN.feature_layer: torch.from_numpy(generated), DOMAIN.logits_layer: torch.zeros(80, 3)}
    runs = [fidelity_metrics(inputs, _reference(real), DOMAIN, kid_subset_size=50) for _ in range(2)]
    assert runs[0]["kid_std"] > 0 and runs[0]["kid_mean"] == runs[1]["kid_mean"]
    floors = [_floor_metrics(torch.from_numpy(real), torch.from_numpy(generated)) for _ in range(2)]
    assert floors[0] == floors[1]


@pytest.mark.parametrize("sizes", [(40, 60), (60, 40)])
def test_noise_floor_kid_subset_fits_the_smaller_set(sizes: tuple[int, int]) -> None:
    real, other = (torch.from_numpy(_features(seed, size)) for seed, size in zip((8, 9), sizes))
    floor = _floor_metrics(real, other)
    assert floor["fid_noise_floor"] == pytest.approx(scipy_fid(other.numpy(), real.numpy()), rel=RELATIVE)
    assert math.isfinite(floor["kid_noise_floor"])


def test_fid_agrees_with_scipy_sqrtm(scored) -> None:
    metrics, generated, real, _ = scored
    expected = scipy_fid(generated, real)
    assert expected > 1.0  # the sets differ: not a comparison of two zeros
    assert metrics["fid"] == pytest.approx(expected, rel=RELATIVE)
    assert fid_between(generated, real) == pytest.approx(expected, rel=RELATIVE)
    assert fid_between(real, real) == pytest.approx(0.0, abs=1e-9)


def test_kid_agrees_with_a_hand_written_unbiased_mmd(scored) -> None:
    metrics, generated, real, _ = scored
    expected = unbiased_mmd2(generated, real)
    assert expected > 0.1
    assert metrics["kid_mean"] == pytest.approx(expected, rel=RELATIVE)
    assert metrics["kid_std"] == pytest.approx(0.0, abs=1e-9 * expected)  # every subset is everything


def test_precision_recall_agree_with_a_brute_force_knn_count(scored) -> None:
    metrics, generated, real, _ = scored
    precision, recall = knn_precision_recall(generated, real, PRC_NEIGHBORHOOD)
    assert 0 < precision < 1 and 0 < recall < 1 and precision != recall  # a swap would show
    assert (metrics["precision"], metrics["recall"]) == pytest.approx((precision, recall), rel=RELATIVE)


def test_inception_score_agrees_with_its_formula(scored) -> None:
    metrics, *_, logits = scored
    expected_mean, expected_std = inception_score(logits, ISC_SPLITS, RNG_SEED)
    assert expected_mean > 1.1 and expected_std > 0
    assert metrics["is_mean"] == pytest.approx(expected_mean, rel=RELATIVE)
    assert metrics["is_std"] == pytest.approx(expected_std, rel=RELATIVE)


def test_inception_score_is_one_for_a_single_prediction_and_the_class_count_for_sure_distinct_ones() -> None:
    """Closed forms: identical predictions give IS 1; N confident predictions spread evenly over C
    classes within every split give IS C (KL of a one-hot from the uniform marginal is ln C)."""
    features = {DOMAIN.feature_layer: torch.from_numpy(_features(4))}
    real = _reference(_features(5))
    same = torch.tensor([[1.0, 2.0, 0.5, 0.0, -1.0]], dtype=torch.float64).expand(N, CLASSES)
    once = fidelity_metrics({**features, DOMAIN.logits_layer: same}, real, DOMAIN, kid_subset_size=N)
    assert once["is_mean"] == pytest.approx(1.0, rel=1e-12) and once["is_std"] == pytest.approx(0, abs=1e-12)
    # N = 60 rows in 10 splits of 6: class (shuffled position mod 6) puts each of 6 classes once per
    # split, given the project's shuffle (RandomState(RNG_SEED)); undo it to place the rows.
    count, classes = 60, 6
    position = np.empty(count, dtype=np.int64)
    position[np.random.RandomState(RNG_SEED).permutation(count)] = np.arange(count)
    confident = torch.from_numpy(50.0 * np.eye(classes)[position % classes])
    features = {DOMAIN.feature_layer: torch.from_numpy(_features(4, count))}
    spread = fidelity_metrics(
        {**features, DOMAIN.logits_layer: confident}, _reference(_features(5, count)), DOMAIN, count
    )
    assert spread["is_mean"] == pytest.approx(classes, rel=1e-9)


# --- class coverage and the per-class metrics -------------------------------------------------------


def _histogram_kl(p_counts: list[int], q_counts: list[int]) -> float:
    """KL(p ‖ q) = Σ p log(p / q) of two count histograms, each smoothed by KL_EPSILON and renormalised."""
    p = np.array(p_counts) / sum(p_counts) + KL_EPSILON
    q = np.array(q_counts) / sum(q_counts) + KL_EPSILON
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_coverage_kl_is_kl_of_real_from_generated_class_frequencies() -> None:
    real_counts, generated_counts = [50, 30, 20, 0], [85, 12, 1, 2]
    reference = {"labels": _labels(real_counts), "features": _features(6, 100)}
    out, real_hist, gen_hist = class_metrics(_features(7, 100), _labels(generated_counts), reference, 4)
    np.testing.assert_allclose(real_hist, [0.5, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(gen_hist, [0.85, 0.12, 0.01, 0.02])
    forward, reverse = (
        _histogram_kl(real_counts, generated_counts),
        _histogram_kl(generated_counts, real_counts),
    )
    assert abs(forward - reverse) > 0.05  # the two directions are told apart
    assert out["coverage_kl"] == pytest.approx(forward, rel=RELATIVE)
    # Covered: a real class with at least COVERAGE_SHARE of its frequency among the generated images.
    assert COVERAGE_SHARE == 0.1
    assert out["coverage_classes"] == 2  # class 2 gets 0.01 < 0.1 × 0.2; class 3 is not a real class
    assert out["label_accuracy"] is None and out["class_labels"] == "predicted"
    assert out["n_classes"] == 4 and out["intra_fid_min_samples"] == MIN_INTRA_SAMPLES
    # Without conditioning labels, per-class metrics split the generated rows by the predicted class;
    # class 0 has exactly MIN_INTRA_SAMPLES real images (50), the least that is scored.
    assert MIN_INTRA_SAMPLES == 50
    gen_0 = _features(7, 100)[_labels(generated_counts) == 0]
    assert out["intra_fid_0"] == pytest.approx(scipy_fid(gen_0, reference["features"][:50]), rel=RELATIVE)
    assert out["intra_fid_1"] is None  # 30 real images of class 1: too few


def test_coverage_counts_a_class_at_exactly_the_share() -> None:
    """gen_hist >= COVERAGE_SHARE × real_hist: 5 of 100 generated against half the real images."""
    reference = {"labels": _labels([50, 50]), "features": _features(6, 100)}
    out, _, _ = class_metrics(_features(7, 100), _labels([5, 95]), reference, 2)
    assert out["coverage_classes"] == 2


def test_per_class_means_are_null_when_no_class_has_enough_samples() -> None:
    reference = {"labels": _labels([10, 10]), "features": _features(6, 20)}
    out, _, _ = class_metrics(_features(7, 20), _labels([10, 10]), reference, 2)
    assert out["intra_fid_mean"] is None and out["class_precision_mean"] is None
    assert out["class_recall_mean"] is None


def test_per_class_fid_precision_recall_split_by_conditioning_labels() -> None:
    """Two classes with MIN_INTRA_SAMPLES + 10 images a side and a third with too few: per-class FID
    and precision/recall agree with the independent implementations on each class's rows, and the
    generated rows are split by their conditioning labels, not by the classifier's predictions."""
    per_class = MIN_INTRA_SAMPLES + 10
    counts = [per_class, per_class, 5]
    real_labels, conditioning = _labels(counts), _labels(counts)[::-1].copy()
    real = np.concatenate([_features(10 + k, c, shift=3.0 * k) for k, c in enumerate(counts)])
    gen_by_class = [_features(20 + k, c, scale=1.2, shift=3.0 * k + 0.5) for k, c in enumerate(counts)]
    generated = np.concatenate(gen_by_class[::-1])  # rows in conditioning order: class 2, 1, 0
    predicted = conditioning.copy()
    predicted[:10] = 0  # the classifier mislabels 10 rows: they must stay in their conditioning class
    reference = {"labels": real_labels, "features": real}
    out, _, _ = class_metrics(generated, predicted, reference, 3, gen_conditioning=conditioning)
    assert out["class_labels"] == "conditioning"
    assert out["label_accuracy"] == pytest.approx(1 - 10 / len(conditioning), rel=1e-12)
    fids = []
    for label in (0, 1):
        gen_k, real_k = generated[conditioning == label], real[real_labels == label]
        fids.append(scipy_fid(gen_k, real_k))
        precision, recall = knn_precision_recall(gen_k, real_k, PRC_NEIGHBORHOOD)
        assert out[f"intra_fid_{label}"] == pytest.approx(fids[-1], rel=RELATIVE)
        assert (out[f"precision_{label}"], out[f"recall_{label}"]) == pytest.approx(
            (precision, recall), rel=RELATIVE
        )
    assert out["intra_fid_2"] is None and out["precision_2"] is None and out["recall_2"] is None
    assert out["intra_fid_mean"] == pytest.approx(np.mean(fids), rel=RELATIVE)
    precisions = [out["precision_0"], out["precision_1"]]
    assert out["class_precision_mean"] == pytest.approx(np.mean(precisions), rel=1e-12)


# --- the noise floor ------------------------------------------------------------------------------------


RULES = {
    "other": "the reference vs other training images",
    "halves": "two disjoint stratified halves of the train split (too few images for the score's N)",
}


@pytest.mark.parametrize(("num_images", "rule"), [(1797, "other"), (400, "other"), (300, "halves")])
def test_noise_floor_sets_are_disjoint_and_score_above_zero_on_real_digits(
    num_images: int, rule: str
) -> None:
    """Both rules give two disjoint stratified sets of real digits and an FID floor above 0 on their
    pixels: the reference vs other training images (1797 images, 200 + 200; 400 images: exactly 200
    left over), and two halves when too few are left (300 images: 100 left for 200 wanted). The KID
    floor is an unbiased estimate of 0 here (one distribution): it is checked against the hand MMD,
    not for its sign."""
    digits = load_digits()
    labels, pixels = digits.target[:num_images], digits.data[:num_images] / 16.0  # float64 in [0, 1]
    subsets = reference_subsets(labels, 200, 200)
    floor_real, floor_other = subsets["floor_real"], subsets["floor_other"]
    assert len(np.intersect1d(floor_real, floor_other)) == 0
    assert len(np.unique(floor_real)) == len(floor_real) and len(np.unique(floor_other)) == len(floor_other)
    expected = 200 if rule == "other" else num_images // 2
    assert len(floor_real) == len(floor_other) == expected and len(subsets["reference"]) == 200
    assert subsets["floor_rule"] == RULES[rule]
    for chosen in (floor_real, floor_other):  # stratified: every class, in proportion
        share = np.bincount(labels[chosen], minlength=10) / len(chosen)
        np.testing.assert_allclose(share, np.bincount(labels, minlength=10) / len(labels), atol=0.01)
    floor = _floor_metrics(torch.from_numpy(pixels[floor_real]), torch.from_numpy(pixels[floor_other]))
    assert floor["fid_noise_floor"] > 0.01 * float(np.trace(np.cov(pixels, rowvar=False)))
    # Equal N on both sides: KID's subsets are everything, so the value is exact.
    expected_kid = unbiased_mmd2(pixels[floor_other], pixels[floor_real])
    assert floor["kid_noise_floor"] == pytest.approx(expected_kid, rel=RELATIVE)


def test_heldout_fid_reads_the_heldout_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Three references on disk, each from other features: only the held-out one gives scipy's FID of
    # the generated features against the held-out features.
    monkeypatch.chdir(tmp_path)
    generated, heldout = _features(1, scale=1.3, shift=0.4), _features(2)
    save_npz(HELDOUT_REFERENCE, **_reference(heldout))
    save_npz(reference_path(DOMAIN), **_reference(_features(3, shift=2.0)))
    save_npz(TRAIN_REFERENCE, **_reference(_features(4, scale=0.5)))
    meta = {"heldout": {"split": "val", "num_real": N, "fid_noise_floor": 1.5}}
    result = heldout_metrics(torch.from_numpy(generated), meta)
    assert result["heldout_fid"] == pytest.approx(scipy_fid(generated, heldout), rel=RELATIVE)
    assert (result["heldout_split"], result["heldout_num_real"], result["heldout_fid_noise_floor"]) == (
        "val",
        N,
        1.5,
    )
