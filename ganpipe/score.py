"""Reference statistics of the real data, and the scores of generated samples.

The real side is extracted once per dataset (the reference stage) and stored as DVC outputs, full
feature arrays included, because KID and precision/recall need every feature vector, not only mean
and covariance. torch-fidelity's own cache is not used: its key includes neither the extractor
weights nor N. Every experiment's score stage then extracts only the generated side.

All metric math is torch-fidelity's (its `*_features_to_metric` / FID statistics functions); this
module decides what is fed to them and with which settings, and records those settings with the
numbers, since FID, KID and precision/recall depend on N and on the resize.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from ganpipe import paths
from ganpipe.classifier import load_info, load_split, pick_device
from ganpipe.errors import GanpipeError
from ganpipe.features import (
    EXTRACTORS,
    Extractor,
    create_extractor,
    describe_resizer,
    ensure_inception_weights,
    extract_features,
)
from ganpipe.io import file_md5, save_npz, write_json, write_text

REFERENCE_META = paths.REFERENCE_DIR / "reference.json"

# torch-fidelity's defaults, except that the KID subset shrinks to the smaller sample count.
ISC_SPLITS = 10
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
PRC_NEIGHBORHOOD = 3
PRC_BATCH_SIZE = 2000  # rows of the distance matrix at a time: ~80 MB per block at N=10,000
RNG_SEED = 2020
# A class counts as covered when it gets at least this share of its real frequency.
COVERAGE_SHARE = 0.1
KL_EPSILON = 1e-6
# Intra-class FID needs enough samples of the class on both sides; below this it is null.
MIN_INTRA_SAMPLES = 50
TRAIN_FID_BATCH_SIZE = 250


def active_extractors(params: dict[str, Any]) -> list[tuple[Extractor, str]]:
    """(extractor, weights path) per configured extractor: the domain one always, Inception on request."""
    out = [(EXTRACTORS["domain"], str(paths.CLASSIFIER_WEIGHTS))]
    inception_weights = ensure_inception_weights(params["score"])
    if inception_weights is not None:
        out.append((EXTRACTORS["inception"], inception_weights))
    return out


def reference_path(extractor: Extractor) -> Path:
    return paths.REFERENCE_DIR / f"{extractor.key}.npz"


def compute_reference(params: dict[str, Any]) -> dict[str, Any]:
    """The reference stage: features of the first min(score.num_real, n_train) train images, per extractor.

    Writes <key>.npz (features, mu, sigma; the domain one also the true labels)
    and reference.json (N, extractors, weights md5, resizer, torch-fidelity version).
    """
    images, labels = load_split(paths.PROCESSED_TRAIN)
    n_train = len(images)
    num_real = min(params["score"]["num_real"], n_train)
    images, labels = images[:num_real], labels[:num_real]
    device = pick_device()
    meta: dict[str, Any] = {
        "num_real": num_real,
        "n_train": n_train,
        "source": f"{paths.PROCESSED_TRAIN}[:{num_real}]",
        "torch_fidelity_version": torch_fidelity.__version__,
        "extractors": {},
    }
    for extractor, weights in active_extractors(params):
        module = create_extractor(extractor, weights, device)
        feats = extract_features(module, images, params["score"]["batch_size"], device)
        features = feats[extractor.feature_layer]
        stats = fid_features_to_statistics(features)
        arrays = {"features": features.numpy(), "mu": stats["mu"], "sigma": stats["sigma"]}
        if extractor.key == "domain":
            arrays["labels"] = labels
        save_npz(reference_path(extractor), **arrays)
        meta["extractors"][extractor.key] = {
            "name": extractor.name,
            "feature_layer": extractor.feature_layer,
            "dim": int(features.shape[1]),
            "weights": str(weights),
            "weights_md5": file_md5(weights),
            "resizer": describe_resizer(extractor, module, images.shape[-1]),
        }
    for extractor in EXTRACTORS.values():  # a previous run's extractor that is now switched off
        if extractor.key not in meta["extractors"]:
            reference_path(extractor).unlink(missing_ok=True)
    write_json(REFERENCE_META, meta)
    return meta


def load_reference_meta() -> dict[str, Any]:
    try:
        return json.loads(REFERENCE_META.read_text())
    except FileNotFoundError:
        raise GanpipeError(f"{REFERENCE_META}: not found; run dvc repro reference") from None


def load_reference(extractor: Extractor, weights: str, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The stored real-side arrays, refused when they were made with other weights."""
    entry = meta["extractors"].get(extractor.key)
    if entry is None:
        raise GanpipeError(
            f"{paths.REFERENCE_DIR} has no {extractor.name} statistics; run dvc repro reference"
        )
    if entry["weights_md5"] != file_md5(weights):
        raise GanpipeError(
            f"{paths.REFERENCE_DIR}: {extractor.name} statistics were made with other weights than "
            f"{weights}; run dvc repro reference"
        )
    with np.load(reference_path(extractor)) as data:
        return dict(data)


def fidelity_metrics(
    generated: dict[str, torch.Tensor],
    reference: dict[str, np.ndarray],
    extractor: Extractor,
    kid_subset_size: int,
) -> dict[str, float]:
    """FID (against the stored mu/sigma), IS, KID and precision/recall, by torch-fidelity."""
    gen = generated[extractor.feature_layer]
    real = torch.from_numpy(reference["features"])
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(gen), {"mu": reference["mu"], "sigma": reference["sigma"]}, verbose=False
    )
    isc = isc_features_to_metric(generated[extractor.logits_layer], ISC_SPLITS, True, RNG_SEED)
    kid = kid_features_to_metric(
        gen, real, kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset_size, rng_seed=RNG_SEED, verbose=False
    )
    # torch-fidelity's convention: input 1 is generated, input 2 is real.
    prc = prc_features_to_metric(
        gen,
        real,
        prc_neighborhood=PRC_NEIGHBORHOOD,
        prc_batch_size=PRC_BATCH_SIZE,
        save_cpu_ram=True,
        verbose=False,
    )
    return {
        "fid": fid[KEY_METRIC_FID],
        "is_mean": isc[KEY_METRIC_ISC_MEAN],
        "is_std": isc[KEY_METRIC_ISC_STD],
        "kid_mean": kid[KEY_METRIC_KID_MEAN],
        "kid_std": kid[KEY_METRIC_KID_STD],
        "precision": prc[KEY_METRIC_PRECISION],
        "recall": prc[KEY_METRIC_RECALL],
    }


def _fid_between(features_1: np.ndarray, features_2: np.ndarray) -> float:
    stats_1 = fid_features_to_statistics(torch.from_numpy(features_1))
    stats_2 = fid_features_to_statistics(torch.from_numpy(features_2))
    return fid_statistics_to_metric(stats_1, stats_2, verbose=False)[KEY_METRIC_FID]


def class_metrics(
    gen_features: np.ndarray, gen_predicted: np.ndarray, reference: dict[str, np.ndarray], n_classes: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Coverage, KL and intra-class FID: generated images labelled by the classifier, real ones by
    their true labels (the classifier's test accuracy, in metrics/classifier.json, bounds the
    mislabelling on the generated side). Returns the metrics and the real and generated class fractions.
    """
    real_labels = reference["labels"]
    real_hist = np.bincount(real_labels, minlength=n_classes)[:n_classes] / len(real_labels)
    gen_hist = np.bincount(gen_predicted, minlength=n_classes)[:n_classes] / len(gen_predicted)
    covered = (real_hist > 0) & (gen_hist >= COVERAGE_SHARE * real_hist)
    p = (real_hist + KL_EPSILON) / (real_hist + KL_EPSILON).sum()
    q = (gen_hist + KL_EPSILON) / (gen_hist + KL_EPSILON).sum()
    out: dict[str, Any] = {
        "n_classes": n_classes,
        "coverage_classes": int(covered.sum()),
        "coverage_kl": float(np.sum(p * np.log(p / q))),
        "intra_fid_min_samples": MIN_INTRA_SAMPLES,
    }
    intra = []
    for label in range(n_classes):
        gen_k = gen_features[gen_predicted == label]
        real_k = reference["features"][real_labels == label]
        value = None
        if min(len(gen_k), len(real_k)) >= MIN_INTRA_SAMPLES:
            value = _fid_between(gen_k, real_k)
            intra.append(value)
        out[f"intra_fid_{label}"] = value
    out["intra_fid_mean"] = float(np.mean(intra)) if intra else None
    return out, real_hist, gen_hist


def load_samples() -> np.ndarray:
    try:
        with np.load(paths.SAMPLES) as data:
            images = data["images"]
    except FileNotFoundError:
        raise GanpipeError(f"{paths.SAMPLES}: not found; run dvc repro sample") from None
    if images.ndim != 4 or images.dtype != np.uint8:
        raise GanpipeError(
            f"{paths.SAMPLES}: expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}"
        )
    return images


def _finite_or_none(value: Any) -> Any:
    """DVC metrics must be valid JSON: NaN/inf (e.g. IS of too few samples) become null."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _histogram_tsv(real_hist: np.ndarray, gen_hist: np.ndarray) -> str:
    rows = ["label\treal\tgenerated"]
    rows += [
        f"{label}\t{r:.6f}\t{g:.6f}" for label, (r, g) in enumerate(zip(real_hist, gen_hist, strict=True))
    ]
    return "\n".join(rows) + "\n"


def score_samples(params: dict[str, Any]) -> dict[str, Any]:
    """The score stage: every metric of data/samples/samples.npz, written to metrics/scores.json.

    The keys depend only on the settings (score.inception and the number of classes), never on
    the results, so that `dvc metrics diff` always compares the same columns.
    """
    images = load_samples()
    info = load_info()
    meta = load_reference_meta()
    expected_real = min(params["score"]["num_real"], meta["n_train"])
    if meta["num_real"] != expected_real:
        raise GanpipeError(
            f"{paths.REFERENCE_DIR} holds {meta['num_real']} real images, score.num_real asks for "
            f"{expected_real}; run dvc repro reference"
        )
    if images.shape[1] != info["channels"]:
        raise GanpipeError(
            f"{paths.SAMPLES} has {images.shape[1]}-channel images, the data {info['channels']}; "
            "rerun dvc repro"
        )
    num_real = meta["num_real"]
    kid_subset_size = min(KID_MAX_SUBSET_SIZE, len(images), num_real)
    if min(len(images), num_real) <= PRC_NEIGHBORHOOD:
        raise GanpipeError(
            f"precision/recall need more than {PRC_NEIGHBORHOOD} images per side; raise sample.num_samples"
        )
    device = pick_device()
    active = active_extractors(params)
    scores: dict[str, Any] = {
        "num_generated": len(images),
        "num_real": num_real,
        "extractors": ",".join(extractor.name for extractor, _ in active),
        "torch_fidelity_version": torch_fidelity.__version__,
        "kid_subset_size": kid_subset_size,
        "kid_subsets": KID_SUBSETS,
        "prc_neighborhood": PRC_NEIGHBORHOOD,
    }
    for extractor, weights in active:
        reference = load_reference(extractor, weights, meta)
        module = create_extractor(extractor, weights, device)
        generated = extract_features(module, images, params["score"]["batch_size"], device)
        metrics = fidelity_metrics(generated, reference, extractor, kid_subset_size)
        scores.update({extractor.prefix + key: value for key, value in metrics.items()})
        scores[f"{extractor.prefix}resizer"] = describe_resizer(extractor, module, images.shape[-1])
        if extractor.key == "domain":
            predicted = generated[extractor.logits_layer].argmax(dim=1).numpy()
            features = generated[extractor.feature_layer].numpy()
            per_class, real_hist, gen_hist = class_metrics(features, predicted, reference, info["n_classes"])
            scores.update(per_class)
            write_text(paths.CLASS_HISTOGRAM_TSV, _histogram_tsv(real_hist, gen_hist))
    scores = {key: _finite_or_none(value) for key, value in scores.items()}
    write_json(paths.SCORES, scores)
    return scores


_DOMAIN_CACHE: dict[tuple[Any, ...], tuple[torch_fidelity.FeatureExtractorBase, dict[str, np.ndarray]]] = {}


def _stamp(path: Path) -> tuple[str, int]:
    try:
        return str(path.resolve()), os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise GanpipeError(f"{path}: not found; run dvc repro reference") from None


def domain_fid(images: np.ndarray, device: torch.device) -> float:
    """Domain FID of generated uint8 (N, C, H, W) images against the stored reference statistics.

    For FID during training: called every few epochs, so the classifier and the reference
    statistics are loaded once and kept until either file changes (path + mtime). N is the caller's
    (score.train_samples): compare these values only with each other, not with scores.json's `fid`.
    """
    domain = EXTRACTORS["domain"]
    files = (paths.CLASSIFIER_WEIGHTS, reference_path(domain), REFERENCE_META)
    key = (str(device), *(_stamp(path) for path in files))
    # Building the classifier and torch's DataLoader both draw from the global RNG: fork it, so that
    # evaluating during training does not change the training's random stream.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if key not in _DOMAIN_CACHE:
            _DOMAIN_CACHE.clear()
            weights = str(paths.CLASSIFIER_WEIGHTS)
            reference = load_reference(domain, weights, load_reference_meta())
            _DOMAIN_CACHE[key] = (
                create_extractor(domain, weights, device),
                {"mu": reference["mu"], "sigma": reference["sigma"]},
            )
        module, real_stats = _DOMAIN_CACHE[key]
        features = extract_features(module, images, TRAIN_FID_BATCH_SIZE, device, progress=False)
    stats = fid_features_to_statistics(features[domain.feature_layer])
    return float(fid_statistics_to_metric(stats, real_stats, verbose=False)[KEY_METRIC_FID])
