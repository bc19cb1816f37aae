"""The privacy audit as an assurance: copies of training images planted among held-out stand-ins for
samples, drawn from the whole of a 30,000-image PathMNIST-shaped training split, must be flagged
(exact, shifted by 1 and 2 px, flipped, 10% brighter), the stand-ins alone must not be, and the
export guard must refuse every flagged audit.

The real side of the audit is built once for the module; each planted set is then one `measure`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_params
from planted import brighter, flipped, shifted, textures

from ganpipe.config import validate
from ganpipe.gan.export import privacy_verdict
from ganpipe.measure.audit import AuditReference, verdict
from ganpipe.measure.classifier import save_classifier, train_classifier
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import write_json

N_TRAIN, N_VAL, N_POOL, N_SAMPLES = 30_000, 4_000, 6_000, 2_000
DRAWS = 10
COPIERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exact": lambda images: images,
    "shifted 1 px": lambda images: shifted(images, 0, 1),
    "shifted 2 px": lambda images: shifted(images, 2, -2),
    "flipped": flipped,
    "brighter 10%": brighter,
}
PLANTED = [(0.05, "exact")] + [(0.2, name) for name in COPIERS]


def audit_params() -> dict[str, Any]:
    return validate(tiny_params(privacy__num_heldout=N_VAL // 2))


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """30k training textures, 4k val (held-out + null), a pool of 6k unseen ones for stand-ins, the
    domain classifier trained one epoch on 10k of the training images, and the audit's real side."""
    root = tmp_path_factory.mktemp("planted")
    images, labels = textures(N_TRAIN + N_VAL + N_POOL, seed=0)
    train = images[:N_TRAIN], labels[:N_TRAIN]
    val = images[N_TRAIN : N_TRAIN + N_VAL], labels[N_TRAIN : N_TRAIN + N_VAL]
    pool = images[N_TRAIN + N_VAL :]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CI", "1")
        classifier = train_classifier(
            train[0][:10_000], train[1][:10_000], 9, epochs=1, batch_size=256, lr=1e-3, seed=0
        )
        save_classifier(paths.CLASSIFIER_WEIGHTS, classifier.model)
        reference = AuditReference(audit_params(), train, val, torch.device("cpu"))
    return {"root": root, "train": train[0], "pool": pool, "reference": reference}


def planted_set(real: dict[str, Any], share: float, copier: str, seed: int) -> np.ndarray:
    """N_SAMPLES stand-ins from the pool, `share` of them replaced by copies of training images drawn
    from the whole split."""
    rng = np.random.default_rng(seed)
    samples = real["pool"][rng.choice(N_POOL, N_SAMPLES, replace=False)]
    count = round(share * N_SAMPLES)
    copies = real["train"][rng.choice(N_TRAIN, count, replace=False)]
    samples[:count] = COPIERS[copier](copies)
    return samples


def audited(real: dict[str, Any], samples: np.ndarray) -> dict[str, Any]:
    reference = real["reference"]
    out, checks = reference.measure(samples)
    return {**out, "verdict": verdict(checks, reference.rule)}


@pytest.mark.parametrize(("share", "copier"), PLANTED)
def test_planted_copies_are_flagged_and_refused_by_the_export_guard(
    real: dict[str, Any], share: float, copier: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    samples = planted_set(real, share, copier, seed=1)
    result = audited(real, samples)
    assert result["verdict"]["flagged"], result["verdict"]
    # The pixel copy search puts nearly every copy below the held-out 5th percentile.
    reference = real["reference"]
    copies = samples[: round(share * N_SAMPLES)]
    assert np.mean(reference.copies.nearest(copies).distances < reference.copy_threshold) > 0.95
    monkeypatch.chdir(tmp_path)
    write_json(paths.PRIVACY_METRICS, result)
    with pytest.raises(GanpipeError) as refused:
        privacy_verdict(require_private=True)
    message = str(refused.value)
    assert message.startswith("export refused: the privacy audit flags copying (") and "\n" not in message
    assert "pixel copy_share" in message


def test_heldout_stand_ins_are_never_flagged(real: dict[str, Any]) -> None:
    verdicts = [audited(real, planted_set(real, 0.0, "exact", seed))["verdict"] for seed in range(DRAWS)]
    assert [v["reasons"] for v in verdicts] == [[]] * DRAWS
    # The verdict lists every statistic with its value, null and margin.
    statistics = {check["statistic"] for check in verdicts[0]["checks"]}
    assert {"pixel copy_share", "domain dcr_share", "domain authenticity"} <= statistics
    assert all(check["margin"] > 0 for check in verdicts[0]["checks"])
