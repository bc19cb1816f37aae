"""Preprocess stage: the raw npz becomes uint8 (N, C, H, W) arrays at data.size and data.channels.

Outputs (ganpipe.paths): train.npz and test.npz (`images` uint8 (N, C, H, W), `labels` int64 (N,)),
info.json, and a grid of real training images. The raw train split feeds train.npz and the raw
test split feeds test.npz; a published val split is not used. Every step is deterministic.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from tqdm import tqdm

from ganpipe import paths
from ganpipe.data.base import MULTI_LABEL
from ganpipe.data.layout import load_split
from ganpipe.errors import GanpipeError
from ganpipe.images import save_grid
from ganpipe.io import save_npz, write_json
from ganpipe.stage import progress_disabled

RESIZE_CHUNK = 1024  # images resized per torch call: bounds the float32 working memory
LUMINANCE_PER_MILLE = (299, 587, 114)  # ITU-R BT.601 weights of R, G, B
GRID_IMAGES, GRID_ROW = 64, 8
NO_LABEL = "none"  # class name of multi-label images with no positive label


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


def subset(count: int, limit: int | None, seed: int, stream: int) -> np.ndarray | slice:
    """At most `limit` of `count` indices, drawn by a permutation seeded by (seed, stream).

    A uniform random subset keeps the class proportions roughly; sorting keeps file order.
    """
    if limit is None or count <= limit:
        return slice(None)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.permutation(count)[:limit])


def _read_manifest() -> dict[str, Any]:
    try:
        return json.loads(paths.RAW_MANIFEST.read_text())
    except FileNotFoundError:
        raise GanpipeError(
            f"{paths.RAW_MANIFEST}: not found; run the download stage first (dvc repro)"
        ) from None
    except json.JSONDecodeError:
        raise GanpipeError(f"{paths.RAW_MANIFEST}: not valid JSON; rerun the download stage") from None


def class_names(manifest: dict[str, Any], multi_label: bool) -> dict[str, str]:
    """str(label) -> name for every processed class; unnamed classes are named by their number."""
    names = manifest["label_names"] or {str(label): str(label) for label in range(manifest["n_classes"])}
    if multi_label:
        names = {**names, str(manifest["n_classes"]): NO_LABEL}
    return names


def preprocess(params: dict[str, Any]) -> None:
    """Preprocess stage: write paths.PROCESSED_TRAIN/TEST/INFO and paths.REAL_GRID from data/raw."""
    data, seed = params["data"], params["seed"]
    manifest = _read_manifest()
    raw_file = paths.RAW_DIR / manifest["file"]
    multi_label = manifest["task"] == MULTI_LABEL
    counts: dict[str, int] = {}
    outputs = (("train", paths.PROCESSED_TRAIN), ("test", paths.PROCESSED_TEST))
    for stream, (split, output) in enumerate(outputs):
        images, labels = load_split(raw_file, split)
        keep = subset(len(labels), data["limit"], seed, stream)
        images = prepare_images(images[keep], data["channels"], data["size"])
        save_npz(output, images=images, labels=flatten_labels(labels[keep], multi_label))
        counts[split] = len(images)
        if split == "train":
            save_grid(paths.REAL_GRID, images[:GRID_IMAGES], nrow=GRID_ROW)
    names = class_names(manifest, multi_label)
    info = {
        "name": manifest["name"],
        "n_classes": len(names),
        "label_names": names,
        "channels": data["channels"],
        "size": data["size"],
        "n_train": counts["train"],
        "n_test": counts["test"],
    }
    write_json(paths.PROCESSED_INFO, info)
