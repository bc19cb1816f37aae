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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from ganpipe.measure.features import (
    EXTRACTORS,
    Extractor,
    create_extractor,
    describe_resizer,
    extract_features,
    resolved_weights,
)
from ganpipe.measure.protocol import HELDOUT_SPLIT, protocol_record
from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.io import file_md5, save_npz, write_json, write_text
from ganpipe.pipeline.processed import DATASET_SEED, check_images, read_info, read_split, stratified_subset
from ganpipe.pipeline.streams import numpy_rng

REFERENCE_META = paths.REFERENCE_DIR / "reference.json"
# The held-out reference: domain features of the split the GAN never sees (ganpipe.measure.protocol).
HELDOUT_REFERENCE = paths.REFERENCE_DIR / "domain_heldout.npz"
TRAIN_REFERENCE = paths.TRAIN_REFERENCE_DIR / "domain.npz"
TRAIN_REFERENCE_META = paths.TRAIN_REFERENCE_DIR / "reference.json"
SUBSET_RULE = "per class in proportion to the train split (largest remainder)"

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
    """(extractor, weights path) per extractor of score.extractors, in its order; the domain one
    (always there, params validation sees to it) uses the classifier, the others their resolved files."""
    weights = {"domain": str(paths.CLASSIFIER_WEIGHTS), **resolved_weights(params["score"])}
    return [(EXTRACTORS[key], weights[key]) for key in params["score"]["extractors"]]


def reference_path(extractor: Extractor) -> Path:
    return paths.REFERENCE_DIR / f"{extractor.key}.npz"


def reference_subsets(labels: np.ndarray, num_real: int, num_generated: int) -> dict[str, Any]:
    """Indices of the reference images and of the noise floor's two disjoint real sets.

    The reference is a stratified random subset (stream "reference.subset", the dataset seed). The
    noise floor compares two disjoint real sets at the score's own N: the reference itself against
    `num_generated` other training images, when the split has that many left over; otherwise two
    disjoint stratified halves of the split (then at a smaller N, recorded with the numbers).
    """
    reference = stratified_subset(labels, num_real, numpy_rng(DATASET_SEED, "reference.subset"))
    floor_rng = numpy_rng(DATASET_SEED, "reference.floor")
    rest = np.setdiff1d(np.arange(len(labels)), reference)
    if len(rest) >= num_generated:
        rule = "the reference vs other training images"
        floor_real = reference
        floor_other = rest[stratified_subset(labels[rest], num_generated, floor_rng)]
    else:
        rule = "two disjoint stratified halves of the train split (too few images for the score's N)"
        half = len(labels) // 2
        floor_real = stratified_subset(labels, half, floor_rng)
        rest = np.setdiff1d(np.arange(len(labels)), floor_real)
        floor_other = rest[stratified_subset(labels[rest], half, floor_rng)]
    return {"reference": reference, "floor_real": floor_real, "floor_other": floor_other, "floor_rule": rule}


def _floor_metrics(real: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """FID and KID between two disjoint real sets: what a perfect generator would score."""
    kid = kid_features_to_metric(
        other,
        real,
        kid_subsets=KID_SUBSETS,
        kid_subset_size=min(KID_MAX_SUBSET_SIZE, len(real), len(other)),
        rng_seed=RNG_SEED,
        verbose=False,
    )
    fid = fid_between(other.numpy(), real.numpy())
    return {"fid_noise_floor": fid, "kid_noise_floor": kid[KEY_METRIC_KID_MEAN]}


def compute_reference(params: dict[str, Any]) -> dict[str, Any]:
    """The reference stage: features of a stratified random subset of min(score.num_real, n_train)
    training images per extractor, and the real-vs-real noise floor at the score's N.

    Writes <key>.npz (features, mu, sigma; the domain one also the true labels), the domain features
    of the held-out split (HELDOUT_REFERENCE) and reference.json (N, how the subset was drawn, noise
    floors, the held-out entry, extractors, weights md5, resizer, torch-fidelity version).
    """
    images, labels = read_split(paths.PROCESSED_TRAIN)
    n_train = len(images)
    num_real = min(params["score"]["num_real"], n_train)
    subsets = reference_subsets(labels, num_real, params["sample"]["num_samples"])
    reference = subsets["reference"]
    device = resolve_device()
    meta: dict[str, Any] = {
        "num_real": num_real,
        "n_train": n_train,
        "source": str(paths.PROCESSED_TRAIN),
        "subset": f"stratified random: {SUBSET_RULE}, stream 'reference.subset', seed {DATASET_SEED}",
        "class_counts": np.bincount(labels[reference], minlength=int(labels.max(initial=0)) + 1).tolist(),
        "noise_floor": {
            "num_real": len(subsets["floor_real"]),
            "num_generated": len(subsets["floor_other"]),
            "rule": subsets["floor_rule"],
        },
        "torch_fidelity_version": torch_fidelity.__version__,
        "extractors": {},
    }
    floor_needed = np.union1d(subsets["floor_real"], subsets["floor_other"])
    needed = np.union1d(reference, floor_needed)
    for extractor, weights in active_extractors(params):
        module = create_extractor(extractor, weights, device)
        feats = extract_features(module, images[needed], params["score"]["batch_size"], device)
        all_features = feats[extractor.feature_layer]

        def rows(indices: np.ndarray, features: torch.Tensor = all_features) -> torch.Tensor:
            return features[torch.from_numpy(np.searchsorted(needed, indices))]

        features = rows(reference)
        stats = fid_features_to_statistics(features)
        arrays = {"features": features.numpy(), "mu": stats["mu"], "sigma": stats["sigma"]}
        if extractor.key == "domain":
            arrays["labels"] = labels[reference]
        save_npz(reference_path(extractor), **arrays)
        floor = _floor_metrics(rows(subsets["floor_real"]), rows(subsets["floor_other"]))
        if extractor.key == "domain":
            meta["heldout"] = _heldout_reference(params, module, device, rows(subsets["floor_other"]))
        meta["extractors"][extractor.key] = {
            "name": extractor.name,
            "feature_layer": extractor.feature_layer,
            "dim": int(features.shape[1]),
            "weights": str(weights),
            "weights_md5": file_md5(weights),
            "resizer": describe_resizer(extractor, module, images.shape[-1]),
            "input_range": extractor.input_range,
            **{key: float(value) for key, value in floor.items()},
        }
    for extractor in EXTRACTORS.values():  # a previous run's extractor that is now switched off
        if extractor.key not in meta["extractors"]:
            reference_path(extractor).unlink(missing_ok=True)
    write_json(REFERENCE_META, meta)
    return meta


def _heldout_reference(
    params: dict[str, Any], module: torch.nn.Module, device: torch.device, train_sample: torch.Tensor
) -> dict[str, Any]:
    """Domain features of min(score.num_real, n_val) images of the held-out split (stratified, stream
    "reference.heldout"), written to HELDOUT_REFERENCE; its entry of reference.json.

    Its noise floor is what a perfect generator would score: `train_sample`, training images at the
    score's N (the train noise floor's second set), against the held-out reference.
    """
    images, labels = read_split(paths.PROCESSED_VAL)
    num_real = min(params["score"]["num_real"], len(images))
    chosen = stratified_subset(labels, num_real, numpy_rng(DATASET_SEED, "reference.heldout"))
    domain = EXTRACTORS["domain"]
    features = extract_features(module, images[chosen], params["score"]["batch_size"], device)
    features = features[domain.feature_layer]
    stats = fid_features_to_statistics(features)
    save_npz(HELDOUT_REFERENCE, features=features.numpy(), mu=stats["mu"], sigma=stats["sigma"])
    return {
        "split": HELDOUT_SPLIT,
        "num_real": num_real,
        "n_split": len(images),
        "subset": f"stratified random: {SUBSET_RULE}, stream 'reference.heldout', seed {DATASET_SEED}",
        "fid_noise_floor": fid_between(train_sample.numpy(), features.numpy()),
        "noise_floor_num_generated": len(train_sample),
    }


def compute_train_reference(params: dict[str, Any]) -> dict[str, Any]:
    """The train_reference stage: domain statistics of score.train_samples real images (stratified,
    stream "train_reference.subset"), the yardstick of FID during training. It has its own small
    reference so that changing the scoring reference (score.num_real, extractors) never retrains.
    """
    images, labels = read_split(paths.PROCESSED_TRAIN)
    count = min(params["score"]["train_samples"], len(images))
    chosen = stratified_subset(labels, count, numpy_rng(DATASET_SEED, "train_reference.subset"))
    domain, weights = EXTRACTORS["domain"], str(paths.CLASSIFIER_WEIGHTS)
    device = resolve_device()
    module = create_extractor(domain, weights, device)
    features = extract_features(module, images[chosen], params["score"]["batch_size"], device)
    stats = fid_features_to_statistics(features[domain.feature_layer])
    save_npz(TRAIN_REFERENCE, mu=stats["mu"], sigma=stats["sigma"])
    meta = {
        "num_real": count,
        "n_train": len(images),
        "subset": f"stratified random: {SUBSET_RULE}, stream 'train_reference.subset', seed {DATASET_SEED}",
        "extractor": domain.name,
        "weights_md5": file_md5(weights),
    }
    write_json(TRAIN_REFERENCE_META, meta)
    return meta


def load_reference_meta() -> dict[str, Any]:
    try:
        return json.loads(REFERENCE_META.read_text())
    except FileNotFoundError:
        raise run_first(REFERENCE_META, "reference") from None


def load_reference(extractor: Extractor, weights: str, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The stored real-side arrays, refused when they were made with other weights."""
    entry = meta["extractors"].get(extractor.key)
    if entry is None:
        raise run_first(paths.REFERENCE_DIR, "reference", f"has no {extractor.name} statistics")
    if entry["weights_md5"] != file_md5(weights):
        raise run_first(
            paths.REFERENCE_DIR, "reference", f"{extractor.name} statistics were made with other weights"
        )
    with np.load(reference_path(extractor)) as data:
        return dict(data)


def fidelity_metrics(
    generated: dict[str, torch.Tensor],
    reference: dict[str, np.ndarray],
    extractor: Extractor,
    kid_subset_size: int,
) -> dict[str, float]:
    """FID (against the stored mu/sigma), KID, precision/recall and, where the extractor has class
    logits (domain, Inception), IS, by torch-fidelity."""
    gen = generated[extractor.feature_layer]
    real = torch.from_numpy(reference["features"])
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(gen), {"mu": reference["mu"], "sigma": reference["sigma"]}, verbose=False
    )
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
    out = {
        "fid": fid[KEY_METRIC_FID],
        "kid_mean": kid[KEY_METRIC_KID_MEAN],
        "kid_std": kid[KEY_METRIC_KID_STD],
        "precision": prc[KEY_METRIC_PRECISION],
        "recall": prc[KEY_METRIC_RECALL],
    }
    if extractor.logits_layer is not None:
        isc = isc_features_to_metric(generated[extractor.logits_layer], ISC_SPLITS, True, RNG_SEED)
        out.update(is_mean=isc[KEY_METRIC_ISC_MEAN], is_std=isc[KEY_METRIC_ISC_STD])
    return out


def fid_between(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """FID between two sets of features (rows): torch-fidelity's statistics and distance."""
    stats_1 = fid_features_to_statistics(torch.from_numpy(features_1))
    stats_2 = fid_features_to_statistics(torch.from_numpy(features_2))
    return fid_statistics_to_metric(stats_1, stats_2, verbose=False)[KEY_METRIC_FID]


def class_metrics(
    gen_features: np.ndarray,
    gen_predicted: np.ndarray,
    reference: dict[str, np.ndarray],
    n_classes: int,
    gen_conditioning: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Coverage, KL, label accuracy and per-class FID / precision / recall.

    Real images are labelled by their true labels. Coverage and KL label the generated images by the
    classifier (its test accuracy, in metrics/classifier.json, bounds the mislabelling). The per-class
    metrics split the generated images by their conditioning labels when there are some
    (`gen_conditioning`, a conditional model: intra-FID as in the conditional-GAN literature), else
    by the classifier's (`class_labels` says which). `label_accuracy` is the classifier's accuracy
    on generated images against their conditioning labels (StudioGAN's GAN-test); null without them.
    Returns the metrics and the real and generated class fractions.
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
        "class_labels": "predicted" if gen_conditioning is None else "conditioning",
        "label_accuracy": None,
    }
    gen_labels = gen_predicted
    if gen_conditioning is not None:
        gen_labels = gen_conditioning
        out["label_accuracy"] = float(np.mean(gen_predicted == gen_conditioning))
    per_class: dict[str, list[float]] = {"intra_fid": [], "precision": [], "recall": []}
    for label in range(n_classes):
        gen_k = gen_features[gen_labels == label]
        real_k = reference["features"][real_labels == label]
        values: dict[str, float | None] = dict.fromkeys(per_class)
        if min(len(gen_k), len(real_k)) >= MIN_INTRA_SAMPLES:
            values["intra_fid"] = fid_between(gen_k, real_k)
            prc = prc_features_to_metric(
                torch.from_numpy(gen_k),
                torch.from_numpy(real_k),
                prc_neighborhood=PRC_NEIGHBORHOOD,
                prc_batch_size=PRC_BATCH_SIZE,
                save_cpu_ram=True,
                verbose=False,
            )
            values["precision"], values["recall"] = prc[KEY_METRIC_PRECISION], prc[KEY_METRIC_RECALL]
        for name, value in values.items():
            out[f"{name}_{label}"] = value
            if value is not None:
                per_class[name].append(value)
    for name, collected in per_class.items():
        out[f"{name}_mean" if name == "intra_fid" else f"class_{name}_mean"] = (
            float(np.mean(collected)) if collected else None
        )
    return out, real_hist, gen_hist


def heldout_metrics(generated: torch.Tensor, meta: dict[str, Any]) -> dict[str, Any]:
    """The held-out domain FID of the generated domain features (N, D) against the held-out
    reference, with its N and noise floor (see `_heldout_reference`)."""
    entry = meta.get("heldout")
    if entry is None:
        raise run_first(paths.REFERENCE_DIR, "reference", "has no held-out statistics")
    with np.load(HELDOUT_REFERENCE) as data:
        real = {"mu": data["mu"], "sigma": data["sigma"]}
    fid = fid_statistics_to_metric(fid_features_to_statistics(generated), real, verbose=False)
    return {
        "heldout_fid": fid[KEY_METRIC_FID],
        "heldout_split": entry["split"],
        "heldout_num_real": entry["num_real"],
        "heldout_fid_noise_floor": entry["fid_noise_floor"],
    }


def load_samples() -> np.ndarray:
    try:
        with np.load(paths.SAMPLES) as data:
            images = data["images"]
    except FileNotFoundError:
        raise run_first(paths.SAMPLES, "sample") from None
    check_images(images, str(paths.SAMPLES))
    return images


def load_sample_labels(count: int) -> np.ndarray | None:
    """The conditioning labels (N,) of a conditional generator's samples; None for an unconditional one."""
    with np.load(paths.SAMPLES) as data:
        labels = data["labels"].astype(np.int64) if "labels" in data.files else None
    if labels is not None and labels.shape != (count,):
        raise run_first(paths.SAMPLES, "sample", f"holds {count} images but labels of shape {labels.shape}")
    return labels


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


@dataclass(frozen=True)
class DomainSamples:
    """What a score function gets: the generated images and the real reference on the domain
    classifier's features (the entries of ganpipe.measure.metrics with a `score`)."""

    generated: np.ndarray  # (N, F) features of the generated images
    real: np.ndarray  # (M, F) features of the real reference images (score.num_real of the train split)
    real_labels: np.ndarray  # (M,) their labels
    predicted: np.ndarray  # (N,) the classifier's class for each generated image
    conditioning: np.ndarray | None  # (N,) a conditional model's labels for them, else None
    n_classes: int


class ScoredMetric(Protocol):
    """What score_samples reads of a registry entry (ganpipe.measure.metrics.Metric): its key in
    scores.json and its function. The registry is not imported here: only the score stage, which
    hands it in, depends on it, not every stage that reads the reference."""

    key: str
    score: Callable[[DomainSamples], float | None] | None


def score_samples(params: dict[str, Any], extra: Sequence[ScoredMetric] = ()) -> dict[str, Any]:
    """The score stage: every metric of data/samples/samples.npz, written to metrics/scores.json.

    `extra`: the registry's metrics with a score function (ganpipe.measure.metrics.scored_metrics(),
    which stages/score.py passes), computed on the domain features after the built-in keys.

    The keys depend only on the settings (score.extractors and the number of classes), never on
    the results, so that `dvc metrics diff` always compares the same columns.
    """
    images = load_samples()
    info = read_info()
    meta = load_reference_meta()
    expected_real = min(params["score"]["num_real"], meta["n_train"])
    if meta["num_real"] != expected_real:
        raise run_first(
            paths.REFERENCE_DIR,
            "reference",
            f"holds {meta['num_real']} real images, score.num_real asks for {expected_real}",
        )
    if images.shape[1:] != (info["channels"], info["size"], info["size"]):
        raise run_first(
            paths.SAMPLES,
            "sample",
            f"holds images of shape {images.shape[1:]}, the data's are "
            f"{(info['channels'], info['size'], info['size'])}",
        )
    num_real = meta["num_real"]
    kid_subset_size = min(KID_MAX_SUBSET_SIZE, len(images), num_real)
    if min(len(images), num_real) <= PRC_NEIGHBORHOOD:
        raise GanpipeError(
            f"precision/recall need more than {PRC_NEIGHBORHOOD} images per side; raise sample.num_samples"
        )
    device = resolve_device()
    active = active_extractors(params)
    scores: dict[str, Any] = {
        "num_generated": len(images),
        "num_real": num_real,
        "extractors": ",".join(extractor.name for extractor, _ in active),
        "torch_fidelity_version": torch_fidelity.__version__,
        "kid_subset_size": kid_subset_size,
        "kid_subsets": KID_SUBSETS,
        "prc_neighborhood": PRC_NEIGHBORHOOD,
        # The real-vs-real noise floor: differences below it are sampling noise (see reference.json).
        "noise_floor_num_real": meta["noise_floor"]["num_real"],
        "noise_floor_num_generated": meta["noise_floor"]["num_generated"],
        **protocol_record(params),
    }
    for extractor, weights in active:
        reference = load_reference(extractor, weights, meta)
        module = create_extractor(extractor, weights, device)
        generated = extract_features(module, images, params["score"]["batch_size"], device)
        metrics = fidelity_metrics(generated, reference, extractor, kid_subset_size)
        scores.update({extractor.prefix + key: value for key, value in metrics.items()})
        entry = meta["extractors"][extractor.key]
        for key in ("fid_noise_floor", "kid_noise_floor"):
            scores[extractor.prefix + key] = entry[key]
        scores[f"{extractor.prefix}resizer"] = describe_resizer(extractor, module, images.shape[-1])
        scores[f"{extractor.prefix}input_range"] = extractor.input_range
        if extractor.key == "domain":
            predicted = generated[extractor.logits_layer].argmax(dim=1).numpy()
            features = generated[extractor.feature_layer].numpy()
            conditioning = load_sample_labels(len(images))
            per_class, real_hist, gen_hist = class_metrics(
                features, predicted, reference, info["n_classes"], conditioning
            )
            scores.update(per_class)
            scores.update(heldout_metrics(generated[extractor.feature_layer], meta))
            write_text(paths.CLASS_HISTOGRAM_TSV, _histogram_tsv(real_hist, gen_hist))
            # The registry's own metrics (ganpipe.measure.metrics), after the built-in keys.
            real, real_labels = reference["features"], reference["labels"]
            samples = DomainSamples(features, real, real_labels, predicted, conditioning, info["n_classes"])
            scores.update({metric.key: metric.score(samples) for metric in extra if metric.score})
    scores = {key: _finite_or_none(value) for key, value in scores.items()}
    write_json(paths.SCORES, scores)
    return scores


_DOMAIN_CACHE: dict[tuple[Any, ...], tuple[torch_fidelity.FeatureExtractorBase, dict[str, np.ndarray]]] = {}


def _stamp(path: Path) -> tuple[str, int]:
    try:
        return str(path.resolve()), os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise run_first(path, "train_reference") from None


def domain_fid(images: np.ndarray, device: torch.device) -> float:
    """Domain FID of generated uint8 (N, C, H, W) images against the FID-during-training reference.

    For FID during training: called every few epochs, so the classifier and the reference
    statistics are loaded once and kept until either file changes (path + mtime). N is the caller's
    and the reference's (score.train_samples): compare these values only with each other, not with
    scores.json's `fid`.
    """
    domain = EXTRACTORS["domain"]
    files = (paths.CLASSIFIER_WEIGHTS, TRAIN_REFERENCE, TRAIN_REFERENCE_META)
    key = (str(device), *(_stamp(path) for path in files))
    # Building the classifier and torch's DataLoader both draw from the global RNG: fork it, so that
    # evaluating during training does not change the training's random stream.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if key not in _DOMAIN_CACHE:
            _DOMAIN_CACHE.clear()
            weights = str(paths.CLASSIFIER_WEIGHTS)
            if json.loads(TRAIN_REFERENCE_META.read_text())["weights_md5"] != file_md5(weights):
                raise run_first(paths.TRAIN_REFERENCE_DIR, "train_reference", "made with other weights")
            with np.load(TRAIN_REFERENCE) as reference:
                real_stats = {"mu": reference["mu"], "sigma": reference["sigma"]}
            _DOMAIN_CACHE[key] = (create_extractor(domain, weights, device), real_stats)
        module, real_stats = _DOMAIN_CACHE[key]
        features = extract_features(module, images, TRAIN_FID_BATCH_SIZE, device, progress=False)
    stats = fid_features_to_statistics(features[domain.feature_layer])
    return float(fid_statistics_to_metric(stats, real_stats, verbose=False)[KEY_METRIC_FID])
