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
    FlagRule,
    PrivacyReference,
    alpha_precision_beta_recall,
    auc_check,
    authenticity,
    blackbox_auc,
    critic_auc,
    ct_check,
    mann_whitney_z,
    nearest_neighbours,
    nearest_other,
    share_check,
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


def test_a_sample_as_far_as_the_real_images_own_neighbour_is_not_authentic() -> None:
    # Real 0 and 2: each one's nearest other real image is 2 away. Sample 4 lies exactly 2 from 2: a tie,
    # which Alaa et al.'s strict rule calls not authentic; sample 4.5 (2.5 away) is authentic.
    real = column(0, 2)
    real_to_real = nearest_neighbours(real, real, exclude_self=True).distances[:, 0]
    share, authentic = authenticity(nearest_neighbours(column(4, 4.5), real), real_to_real)
    assert authentic.tolist() == [False, True] and share == 0.5


def test_nearest_other_skips_the_row_itself_but_not_its_duplicates() -> None:
    reference = column(0, 0, 5, 7)
    np.testing.assert_allclose(nearest_other(reference, np.array([0, 1, 2, 3])), [0, 0, 2, 2])
    np.testing.assert_allclose(nearest_other(reference, np.array([3])), [2])


def test_dcr_share_and_nndr_by_hand() -> None:
    # Train 0 and 10. Held-out DCRs 1, 4, 4, 0.5: their 5th percentile is 0.5 + 0.15 * 0.5 = 0.575.
    reference = PrivacyReference(column(0, 10), column(1, 4, 6, 9.5), np.arange(2), 64, 10, 2, 0)
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
    reference = PrivacyReference(train, heldout, np.arange(6), 64, 2, 2, 0)
    result = reference.data_copying(column(1, 11, 1004, 1014))
    expected = 0.4 * (-2 / np.sqrt(20 / 12)) + 0.6 * (1 / np.sqrt(3))
    # Under the null each cell's Z is N(0, 1): the weighted mean's sd is sqrt(0.4^2 + 0.6^2) / 1.
    se = np.sqrt(0.4**2 + 0.6**2)
    assert result == {
        "ct": pytest.approx(expected),
        "ct_se": pytest.approx(se),
        "ct_cells": 2,
        "ct_cells_dropped": 0,
    }
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


def test_distances_go_to_every_training_row_and_set_statistics_to_the_members() -> None:
    # Train 0, 10, 20; members: 0 and 10 only. A sample at 20 is a copy of a non-member: DCR 0, not
    # authentic; the black-box AUC sees only members (0 and 10, 10 and 0 from the sample) vs held-out.
    reference = PrivacyReference(column(0, 10, 20), column(4, 15), np.array([0, 1]), 64, 1, 1, 0)
    measured, to_train = reference.measure(column(20))
    assert to_train.indices[0, 0] == 2 and measured["dcr_share"] == 1.0 and measured["authenticity"] == 0.0
    # Members 20 and 10 from the sample, held-out 16 and 5: members are farther, AUC 1/4.
    assert measured["blackbox_auc"] == 0.25


RULE = FlagRule(flag_z=3.0, min_share_margin=0.01, min_auc_margin=0.02, min_ct_margin=1.0)


def test_a_share_flags_beyond_its_null_by_the_binomial_margin() -> None:
    # Pooled share (0.1 * 1000 + 0.05 * 1000) / 2000 = 0.075: se sqrt(0.075 * 0.925 * 2 / 1000).
    check = share_check("domain dcr_share", 0.1, 1000, 0.05, 1000, +1, RULE)
    assert check.margin == pytest.approx(3 * np.sqrt(0.075 * 0.925 * 0.002))
    assert check.flagged and check.reason() == "domain dcr_share 0.100 > null 0.050 + margin 0.035"
    assert not share_check("domain dcr_share", 0.08, 1000, 0.05, 1000, +1, RULE).flagged
    # A share that copying lowers (authenticity) flags below its null.
    low = share_check("domain authenticity", 0.5, 1000, 0.6, 1000, -1, RULE)
    assert low.flagged and low.reason().startswith("domain authenticity 0.500 < null 0.600 - margin")
    assert not share_check("domain authenticity", 0.7, 1000, 0.6, 1000, -1, RULE).flagged
    # The floor: a share of 0 against 0 still needs to clear min_share_margin.
    assert share_check("pixel copy_share", 0.0, 10**6, 0.0, 10**6, +1, RULE).margin == 0.01


def test_an_auc_and_ct_flag_beyond_their_null_by_their_standard_errors() -> None:
    # AUC at 0.5 on 100 vs 50 scores: se sqrt(151 / (12 * 5000)); the difference of two: sqrt(2) times.
    check = auc_check("critic logan_auc", 0.75, 0.5, 100, 50, RULE)
    assert check.margin == pytest.approx(3 * np.sqrt(2 * 151 / 60000))
    assert check.flagged and not auc_check("critic logan_auc", 0.7, 0.5, 100, 50, RULE).flagged
    assert auc_check("domain blackbox_auc", 0.5, 0.5, 10**6, 10**6, RULE).margin == 0.02  # the floor
    measured, null = {"ct": -3.0, "ct_se": 0.4}, {"ct": 0.1, "ct_se": 0.3}
    ct = ct_check("domain ct", measured, null, RULE)
    assert ct is not None and ct.margin == pytest.approx(1.5) and ct.flagged
    assert ct_check("domain ct", {"ct": None, "ct_se": None}, null, RULE) is None


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
    # Shifted and noisy copies: the pixel copy search sees them.
    assert any(reason.startswith("pixel copy_share") for reason in near["verdict"]["reasons"]), near[
        "verdict"
    ]
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
    reasons = ["domain dcr_share 0.300 > null 0.050 + margin 0.020"] if flagged else []
    write_json(paths.PRIVACY_METRICS, {"verdict": {"flagged": flagged, "reasons": reasons, "checks": []}})


def test_export_refuses_a_flagged_audit_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_audit(flagged=True)
    with pytest.raises(GanpipeError) as refused:
        export(run_params(export__require_private=True))
    message = str(refused.value)
    assert (
        "\n" not in message
        and "dcr_share 0.300 > null 0.050 + margin 0.020" in message
        and "require_private" in message
    )
    assert not paths.EXPORT_NPZ.exists() and not paths.EXPORT_MANIFEST.exists()
    paths.PRIVACY_METRICS.unlink()
    with pytest.raises(GanpipeError, match=r"privacy\.json: not found"):
        export(run_params(export__require_private=True))


def test_export_records_the_verdict_and_goes_on(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(finished_run)
    write_audit(flagged=True)
    manifest = export(run_params())  # require_private false: the default, as before
    assert manifest["privacy"]["audited"] and manifest["privacy"]["flagged"]
    assert manifest["privacy"]["reasons"] == ["domain dcr_share 0.300 > null 0.050 + margin 0.020"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("privacy.flag_z", 0),
        ("privacy.copy_flips", ["diagonal"]),
        ("privacy.ct_min_cell", 1),
        ("export.require_private", "yes"),
    ],
)
def test_bad_privacy_params_fail_in_one_line(key: str, value: Any) -> None:
    with pytest.raises(ParamsError) as bad:
        validate(tiny_params(**{key.replace(".", "__"): value}))
    assert str(bad.value).startswith(f"params.yaml: {key} = {value!r} is not allowed") and "\n" not in str(
        bad.value
    )
