"""The privacy audit: each measure against a case computed by hand, planted copies in a finished run's
samples, the null, the export guard and its params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_params
from test_metrics import digits_28, write_processed

from ganpipe.config import validate
from ganpipe.gan.export import export
from ganpipe.gan.sample import sample
from ganpipe.gan.train import train
from ganpipe.measure import privacy
from ganpipe.measure.audit import audit, audit_subsets
from ganpipe.measure.classifier import train_and_evaluate
from ganpipe.measure.privacy import (
    PrivacyReference,
    Thresholds,
    alpha_precision_beta_recall,
    authenticity,
    blackbox_auc,
    critic_auc,
    flags,
    mann_whitney_z,
    nearest_neighbours,
)
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import save_npz, write_json

# --- each measure by hand (1-D features: distances are differences) ------------------------------


def column(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def test_nearest_neighbours_are_exact_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy, "CHUNK_ELEMENTS", 3)  # one query row at a time
    found = nearest_neighbours(column(0.0, 7.0, 2.9), column(0.0, 3.0, 10.0), k=2)
    np.testing.assert_allclose(found.distances, [[0, 3], [3, 4], [0.1, 2.9]], atol=1e-12)
    np.testing.assert_array_equal(found.indices, [[0, 1], [2, 1], [1, 0]])
    itself = nearest_neighbours(column(0.0, 3.0, 10.0), column(0.0, 3.0, 10.0), exclude_self=True)
    np.testing.assert_allclose(itself.distances[:, 0], [3, 3, 7])


def reference_code_authenticity(real: np.ndarray, samples: np.ndarray) -> float:
    """Alaa et al.'s reference code (and synthcity): j's real-real distance indexed by a sample index."""
    real_to_real = nearest_neighbours(real, real, exclude_self=True).distances[:, 0]
    real_to_sample = nearest_neighbours(real, samples)
    return float(np.mean(real_to_real[real_to_sample.indices[:, 0]] < real_to_sample.distances[:, 0]))


def test_authenticity_compares_with_the_nearest_real_images_own_neighbour() -> None:
    # Real 0, 1, 10: each one's nearest other real image is 1, 1 and 9 away. Sample 5 lies 4 from its
    # nearest real image (1), farther than 1's own neighbour: authentic. Sample 10.2 lies 0.2 from 10,
    # whose neighbour is 9 away: a copy. Authenticity 1/2; the reference code's indexing gives 2/3.
    real, samples = column(0, 1, 10), column(5, 10.2)
    real_to_real = nearest_neighbours(real, real, exclude_self=True).distances[:, 0]
    share, authentic = authenticity(nearest_neighbours(samples, real), real_to_real)
    assert share == 0.5 and authentic.tolist() == [True, False]
    assert reference_code_authenticity(real, samples) == pytest.approx(2 / 3)


def test_dcr_share_and_nndr_by_hand() -> None:
    # Train 0 and 10. Held-out DCRs 1, 4, 4, 0.5: their 5th percentile is 0.5 + 0.15 * 0.5 = 0.575.
    reference = PrivacyReference(column(0, 10), column(1, 4, 6, 9.5), 64, 10, 2, 0)
    assert reference.dcr_threshold == pytest.approx(0.575)
    measured, to_train = reference.measure(column(0, 0.5, 5))
    np.testing.assert_allclose(to_train.distances[:, 0], [0, 0.5, 5])
    assert measured["dcr_share"] == pytest.approx(2 / 3)
    assert measured["nndr_mean"] == pytest.approx((0 + 0.5 / 9.5 + 1) / 3)
    assert measured["dcr_median"] == 0.5


def test_mann_whitney_z_by_hand() -> None:
    # No sample distance exceeds a held-out one: U = 0, mean 2 * 3 / 2 = 3, sd sqrt(2 * 3 * 6 / 12).
    assert mann_whitney_z(np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])) == pytest.approx(-3 / np.sqrt(3))


def test_ct_is_the_heldout_weighted_mean_of_the_cells_z() -> None:
    # Two far-apart cells. Cell A: samples 1 away from train, held-out 4 away: U = 0, Z = -2 / sqrt(20/12).
    # Cell B: samples 4, 4 vs held-out 3, 5, 3: U = 4, Z = (4 - 3) / sqrt(3). Held-out weights 2/5, 3/5.
    train = column(0, 10, 20, 1000, 1010, 1020)
    heldout = column(4, 16, 1003, 1005, 1017)
    reference = PrivacyReference(train, heldout, 64, 2, 2, 0)
    result = reference.data_copying(column(1, 11, 1004, 1014))
    expected = 0.4 * (-2 / np.sqrt(20 / 12)) + 0.6 * (1 / np.sqrt(3))
    assert result == {"ct": pytest.approx(expected), "ct_cells": 2, "ct_cells_dropped": 0}
    # A cell with a single sample is dropped (min_cell 2): C_T is then cell B's Z alone.
    assert reference.data_copying(column(1, 1004, 1014))["ct"] == pytest.approx(1 / np.sqrt(3))


def test_alpha_precision_and_beta_recall_by_hand() -> None:
    real = column(-2, -1, 1, 2)
    real_to_real = nearest_neighbours(real, real, exclude_self=True).distances[:, 0]
    # Samples far outside every real ball and k-NN radius: both curves are 0 at every level, so each
    # summary is 1 - 2 * sum(alphas) * step = 1 - 2 * 15 / 29.
    far = column(100, 101)
    assert alpha_precision_beta_recall(real, far, real_to_real, nearest_neighbours(real, far)) == (
        pytest.approx(1 - 30 / 29),
        pytest.approx(1 - 30 / 29),
    )
    # A large real set as its own samples follows the diagonal: both close to 1.
    many = np.random.default_rng(0).normal(size=(500, 2))
    many_to_many = nearest_neighbours(many, many, exclude_self=True).distances[:, 0]
    same = alpha_precision_beta_recall(many, many, many_to_many, nearest_neighbours(many, many))
    assert min(same) > 0.95


def test_membership_aucs_by_hand() -> None:
    # Members 0 and 1 from their nearest sample, non-members 2 and 0.5: 3 of 4 pairs ranked right.
    assert blackbox_auc(np.array([0.0, 1.0]), np.array([2.0, 0.5])) == 0.75
    assert critic_auc(np.array([3.0, 1.0]), np.array([2.0, 0.0])) == 0.75


def test_flags_name_each_number_and_threshold() -> None:
    limits = Thresholds(max_dcr_share=0.1, min_ct=-3.0, max_authenticity_drop=0.1, max_blackbox_auc=0.6)
    null = {"dcr_share": 0.05, "ct": 0.1, "authenticity": 0.9, "blackbox_auc": 0.5}
    assert flags("domain", null, null, limits) == []
    copied = {"dcr_share": 0.3, "ct": -5.0, "authenticity": 0.5, "blackbox_auc": 0.7}
    assert flags("domain", copied, null, limits) == [
        "domain dcr_share 0.300 > 0.1",
        "domain ct -5.00 < -3.0",
        "domain authenticity 0.500 is 0.400 below the null's 0.900 (> 0.1)",
        "domain blackbox_auc 0.700 > 0.6",
    ]


def test_heldout_subsets_are_disjoint_stratified_and_fixed() -> None:
    labels = np.repeat(np.arange(4), 50)
    first = audit_subsets(labels, labels, 80, 60)
    assert len(np.intersect1d(first["heldout"], first["null"])) == 0
    assert len(first["heldout"]) == len(first["null"]) == 60 and len(first["train"]) == 80
    assert np.bincount(labels[first["null"]]).tolist() == [15] * 4
    again = audit_subsets(labels, labels, 80, 200)  # capped at half of val each
    assert len(again["heldout"]) == 100 and np.array_equal(
        audit_subsets(labels, labels, 80, 60)["null"], first["null"]
    )


# --- planted copies in a finished run -------------------------------------------------------------

N_TRAIN, N_VAL, N_SAMPLES = 1000, 600, 400


def run_params(**overrides: Any) -> dict[str, Any]:
    return validate(
        tiny_params(
            model="dcgan",
            data__channels=1,
            classifier__epochs=2,
            train__max_steps=4,
            sample__num_samples=N_SAMPLES,
            privacy__num_heldout=300,
            **overrides,
        )
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits (1000 train, 600 val), the domain classifier, a 4-step GAN and its samples."""
    root = tmp_path_factory.mktemp("privacy")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CI", "1")
        write_processed(*digits_28(), n_train=N_TRAIN, n_val=N_VAL)
        params = run_params()
        train_and_evaluate(params)
        train(params)
        sample(params)
    return root


def audit_of(images: np.ndarray) -> dict[str, Any]:
    save_npz(paths.SAMPLES, images=images)
    result = audit(run_params())
    assert json.loads(paths.PRIVACY_METRICS.read_text()) == result
    return result


def shifted_copies(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Near-copies: one pixel to the right, plus Gaussian noise of sd 4 grey levels."""
    shifted = np.roll(images, 1, axis=3).astype(np.float64) + rng.normal(0.0, 4.0, images.shape)
    return shifted.clip(0, 255).round().astype(np.uint8)


def test_planted_copies_move_every_measure_and_get_flagged(
    finished_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(finished_run)
    monkeypatch.setenv("CI", "1")
    with np.load(paths.SAMPLES) as data:
        generated = data["images"]
    with np.load(paths.PROCESSED_TRAIN) as data:
        train_images = data["images"]
    rng = np.random.default_rng(0)
    copies = train_images[rng.choice(N_TRAIN, N_SAMPLES, replace=False)]
    results = {}
    try:
        for share in (0.0, 0.05, 0.2, 1.0):
            count = round(share * N_SAMPLES)
            results[share] = audit_of(np.concatenate([copies[:count], generated[count:]]))
        count = round(0.2 * N_SAMPLES)
        near = audit_of(np.concatenate([shifted_copies(copies[:count], rng), generated[count:]]))
    finally:
        save_npz(paths.SAMPLES, images=generated)
    levels = [results[share] for share in sorted(results)]
    for key, rises in (("dcr_share", True), ("ct", False), ("authenticity", False), ("blackbox_auc", True)):
        values = [result[key] for result in levels]
        steps = np.diff(values) if rises else -np.diff(values)
        assert (steps > 0).all(), f"{key} is not monotonic over 0/5/20/100% copies: {values}"
    assert results[1.0]["flagged"] and near["flagged"], near["verdict"]
    assert near["dcr_share"] > 0.1
    protocol = near["protocol"]
    assert (protocol["num_train"], protocol["num_heldout"], protocol["num_generated"]) == (
        N_TRAIN,
        300,
        N_SAMPLES,
    )
    assert paths.COPY_GALLERY.stat().st_size > 0 and paths.DCR_HISTOGRAM_TSV.read_text().startswith("dcr\t")


def test_heldout_images_as_samples_are_not_flagged(
    finished_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(finished_run)
    monkeypatch.setenv("CI", "1")
    with np.load(paths.PROCESSED_VAL) as data:
        val_images, val_labels = data["images"], data["labels"]
    with np.load(paths.SAMPLES) as data:
        generated = data["images"]
    null = audit_subsets(np.zeros(N_TRAIN, np.int64), val_labels, N_TRAIN, 300)["null"]
    try:
        result = audit_of(val_images[null])
    finally:
        save_npz(paths.SAMPLES, images=generated)
    assert not result["flagged"], result["verdict"]
    assert abs(result["ct"]) < 1.5 and abs(result["dcr_share"] - 0.05) < 0.04
    assert abs(result["null_logan_auc"] - 0.5) < 0.1


# --- the export guard and the params ---------------------------------------------------------------


def write_audit(flagged: bool) -> None:
    reasons = ["domain dcr_share 0.300 > 0.1"] if flagged else []
    write_json(paths.PRIVACY_METRICS, {"verdict": {"flagged": flagged, "reasons": reasons, "thresholds": {}}})


def test_export_refuses_a_flagged_audit_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_audit(flagged=True)
    with pytest.raises(GanpipeError) as refused:
        export(run_params(export__require_private=True))
    message = str(refused.value)
    assert "\n" not in message and "dcr_share 0.300 > 0.1" in message and "require_private" in message
    assert not paths.EXPORT_NPZ.exists() and not paths.EXPORT_MANIFEST.exists()
    paths.PRIVACY_METRICS.unlink()
    with pytest.raises(GanpipeError, match=r"privacy\.json: not found"):
        export(run_params(export__require_private=True))


def test_export_records_the_verdict_and_goes_on(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(finished_run)
    write_audit(flagged=True)
    manifest = export(run_params())  # require_private false: the default, as before
    assert manifest["privacy"]["audited"] and manifest["privacy"]["flagged"]
    assert manifest["privacy"]["reasons"] == ["domain dcr_share 0.300 > 0.1"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("privacy.max_blackbox_auc", 0.3), ("privacy.ct_min_cell", 1), ("export.require_private", "yes")],
)
def test_bad_privacy_params_fail_in_one_line(key: str, value: Any) -> None:
    with pytest.raises(ParamsError) as bad:
        validate(tiny_params(**{key.replace(".", "__"): value}))
    assert str(bad.value).startswith(f"params.yaml: {key} = {value!r} is not allowed") and "\n" not in str(
        bad.value
    )
