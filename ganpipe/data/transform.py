"""Preprocess stage: the raw npz becomes uint8 (N, C, H, W) arrays at data.image_size and data.channels.

Outputs (ganpipe.pipeline.paths): train.npz, val.npz and test.npz (`images` uint8 (N, C, H, W), `labels`
int64 (N,)), info.json, and a grid of real training images. The raw train and test splits feed
train.npz and test.npz; val.npz is the published val split, or, where the source has none, a fixed
stratified VAL_FRACTION of the raw train split (then left out of train.npz). Every step is
deterministic.

Each split is first put in a canonical order (sorted by a hash of each image and its label), so
nothing downstream depends on how the source file happens to be ordered: a class-sorted file and a
shuffled copy of it give byte-identical processed data, and so identical subsets, classifiers,
GANs and scores.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from tqdm import tqdm

from ganpipe.pipeline import paths
from ganpipe.data.base import MULTI_LABEL
from ganpipe.data.layout import load_split
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.images import save_grid
from ganpipe.pipeline.io import save_npz, write_json
from ganpipe.pipeline.processed import DATASET_SEED
from ganpipe.pipeline.stage import progress_disabled
from ganpipe.pipeline.streams import numpy_rng

RESIZE_CHUNK = 1024  # images resized per torch call: bounds the float32 working memory
LUMINANCE_PER_MILLE = (299, 587, 114)  # ITU-R BT.601 weights of R, G, B
GRID_IMAGES, GRID_ROW = 64, 8
NO_LABEL = "none"  # class name of multi-label images with no positive label
# A val split for sources that publish none: a fixed share of train, the same for every experiment
# seed (the split belongs to the dataset, not to the experiment).
VAL_FRACTION = 0.1
VAL_SPLIT_SEED = 0


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) values in 0..255 -> uint8 (N, C, size, size), bilinear with antialiasing.

    Antialiasing matters when shrinking (224 -> 64): plain bilinear would alias fine texture.
    """
    import torch
    import torch.nn.functional as F

    count, channels = images.shape[:2]
    resized = np.empty((count, channels, size, size), dtype=np.uint8)
    with tqdm(
        total=count, unit="img", desc=f"resize to {size}×{size}", disable=progress_disabled()
    ) as progress:
        for start in range(0, count, RESIZE_CHUNK):
            chunk = torch.from_numpy(np.asarray(images[start : start + RESIZE_CHUNK], dtype=np.float32))
            chunk = F.interpolate(chunk, (size, size), mode="bilinear", align_corners=False, antialias=True)
            resized[start : start + len(chunk)] = chunk.round().clamp(0, 255).to(torch.uint8).numpy()
            progress.update(len(chunk))
    return resized


def luminance(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, 3, H, W) -> uint8 (N, 1, H, W): 0.299 R + 0.587 G + 0.114 B, rounded half up.

    This is the grayscale conversion of the original PathMNIST WGAN; integer arithmetic keeps
    the rounding exact.
    """
    red, green, blue = (images[:, index].astype(np.uint32) for index in range(3))
    weight_r, weight_g, weight_b = LUMINANCE_PER_MILLE
    gray = (weight_r * red + weight_g * green + weight_b * blue + 500) // 1000
    return gray.astype(np.uint8)[:, None]


def prepare_images(images: np.ndarray, channels: int, size: int) -> np.ndarray:
    """MedMNIST images ((N, H, W) or (N, H, W, C)) -> uint8 (N, channels, size, size).

    Colour is reduced before resizing and grayscale is repeated after it, so the resize handles
    as few channels as possible.
    """
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    if channels == 1 and images.shape[1] == 3:
        images = luminance(images)
    if images.shape[-1] != size:
        images = resize(images, size)
    if channels == 3 and images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return np.ascontiguousarray(images)


def flatten_labels(labels: np.ndarray, multi_label: bool) -> np.ndarray:
    """Labels -> int64 (N,), one class per image, as the classifier and class histograms need.

    Single-label (N,) or (N, 1) labels are kept. Multi-label (N, K) 0/1 labels (ChestMNIST) become
    the index of the first positive label, or K when none is positive: ChestMNIST's many
    "no finding" images form their own class instead of being mistaken for label 0.
    """
    if not multi_label:
        return labels.reshape(-1).astype(np.int64)
    positive = labels > 0
    return np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1]).astype(np.int64)


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices that sort a split by a hash of each image's bytes and its label.

    The order is a function of the content alone, so every later step (subsets, the val split, data
    order, reference images) is the same however the source file was ordered. Exact duplicates tie
    and are interchangeable.
    """
    def key(image: np.ndarray, label: np.ndarray) -> int:
        digest = hashlib.blake2b(image.tobytes() + label.tobytes(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    keys = np.fromiter(map(key, images, labels), dtype=np.uint64, count=len(images))
    return np.argsort(keys, kind="stable")


def subset(count: int, limit: int | None, split: str) -> np.ndarray | slice:
    """At most `limit` of `count` indices, drawn from the named stream of `split`.

    The draw uses the dataset seed, not the experiment's: a subset is part of the data, so every seed
    of a `data.limit` experiment trains on the same images and is measured with the same classifier
    and reference. A uniform random subset keeps the class proportions roughly; sorting keeps the
    canonical order.
    """
    if limit is None or count <= limit:
        return slice(None)
    rng = numpy_rng(DATASET_SEED, f"preprocess.subset.{split}")
    return np.sort(rng.permutation(count)[:limit])


def carve_val(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): a fixed stratified VAL_FRACTION of a split that has no val,
    given each image's class (N,).

    Stratified when every class has at least two images; otherwise a plain random split.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(classes))
    counts = np.unique(classes, return_counts=True)[1]
    n_val = max(1, round(VAL_FRACTION * len(classes)))
    stratify = classes if counts.min() >= 2 and n_val >= len(counts) else None
    train_index, val_index = train_test_split(
        indices, test_size=n_val, random_state=VAL_SPLIT_SEED, stratify=stratify
    )
    return np.sort(train_index), np.sort(val_index)


def _read_manifest() -> dict[str, Any]:
    try:
        return json.loads(paths.RAW_MANIFEST.read_text())
    except FileNotFoundError:
        raise run_first(paths.RAW_MANIFEST, "download") from None
    except json.JSONDecodeError:
        raise run_first(paths.RAW_MANIFEST, "download", "not valid JSON") from None


def class_names(manifest: dict[str, Any], multi_label: bool) -> dict[str, str]:
    """str(label) -> name for every processed class; unnamed classes are named by their number."""
    names = manifest["label_names"] or {str(label): str(label) for label in range(manifest["n_classes"])}
    if multi_label:
        names = {**names, str(manifest["n_classes"]): NO_LABEL}
    return names


def _raw_splits(
    raw_file: Any, manifest: dict[str, Any], multi_label: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The raw train, val and test splits, each in canonical order; val carved from train if absent."""
    splits = {}
    for split in ("train", "test", "val"):
        if split == "val" and not manifest["splits"].get("val"):
            continue  # no published val split (or an empty one): carved from train below
        images, labels = load_split(raw_file, split)
        order = canonical_order(images, labels)
        splits[split] = (images[order], labels[order])
    if "val" not in splits:
        images, labels = splits["train"]
        if len(labels) < 2:
            raise GanpipeError(f"{raw_file}: {len(labels)} training image(s); a val split needs at least 2")
        train_index, val_index = carve_val(flatten_labels(labels, multi_label))
        splits["train"] = (images[train_index], labels[train_index])
        splits["val"] = (images[val_index], labels[val_index])
    return splits


def preprocess(params: dict[str, Any]) -> None:
    """Preprocess stage: write the processed train/val/test splits, info.json and the real grid."""
    data = params["data"]
    manifest = _read_manifest()
    raw_file = paths.RAW_DIR / manifest["file"]
    multi_label = manifest["task"] == MULTI_LABEL
    counts: dict[str, int] = {}
    outputs = {"train": paths.PROCESSED_TRAIN, "val": paths.PROCESSED_VAL, "test": paths.PROCESSED_TEST}
    for split, (images, labels) in _raw_splits(raw_file, manifest, multi_label).items():
        keep = subset(len(labels), data["limit"], split)
        images = prepare_images(images[keep], data["channels"], data["image_size"])
        save_npz(outputs[split], images=images, labels=flatten_labels(labels[keep], multi_label))
        counts[split] = len(images)
        if split == "train":
            save_grid(paths.REAL_GRID, images[:GRID_IMAGES], nrow=GRID_ROW)
    names = class_names(manifest, multi_label)
    info = {
        "name": manifest["name"],
        "task": manifest["task"],  # conditional training refuses multi-label data (ganpipe.data.labels)
        "n_classes": len(names),
        "label_names": names,
        "channels": data["channels"],
        "size": data["image_size"],
        "n_train": counts["train"],
        "n_val": counts["val"],
        "n_test": counts["test"],
        "val_split": "as published" if manifest["splits"].get("val") else (
            f"carved: stratified {VAL_FRACTION:.0%} of train, "
            f"sklearn.model_selection.train_test_split(random_state={VAL_SPLIT_SEED})"
        ),
        "order": "canonical: each split sorted by blake2b(image bytes + label bytes)",
    }
    write_json(paths.PROCESSED_INFO, info)
