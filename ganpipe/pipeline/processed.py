"""The one reader of data/processed (the preprocess stage's output) and the one uint8 image check.

Every stage that needs real images or labels reads them here, so the file layout, the checks and the
"run the preprocess stage first" message live in one place.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, run_first

PREPROCESS = "preprocess"


def check_images(images: np.ndarray, what: str) -> None:
    """Refuse anything but uint8 square images (N, C, S, S) with C 1 or 3, naming `what`."""
    if (
        not isinstance(images, np.ndarray)
        or images.ndim != 4
        or images.dtype != np.uint8
        or images.shape[1] not in (1, 3)
        or images.shape[2] != images.shape[3]
    ):
        shape = getattr(images, "shape", None)
        raise GanpipeError(
            f"{what}: expected uint8 images (N, 1 or 3, S, S), got {getattr(images, 'dtype', type(images))} "
            f"{shape}; rerun the stage that writes it"
        )


def _read(path: str | os.PathLike[str], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `keys` of a processed split; each npz member is read on its own."""
    try:
        with np.load(path) as data:
            return {key: data[key] for key in keys}
    except FileNotFoundError:
        raise run_first(path, PREPROCESS) from None
    except KeyError as exc:
        raise run_first(path, PREPROCESS, f"missing array {exc}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise run_first(path, PREPROCESS, "not a readable .npz") from None


def read_split(path: str | os.PathLike[str] = paths.PROCESSED_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (N, C, S, S) and labels int64 (N,) of a processed split."""
    arrays = _read(path, ("images", "labels"))
    images, labels = arrays["images"], arrays["labels"].astype(np.int64).reshape(-1)
    check_images(images, str(path))
    if len(labels) != len(images):
        raise run_first(path, PREPROCESS, f"{len(images)} images but {len(labels)} labels")
    return images, labels


def read_labels(path: str | os.PathLike[str] = paths.PROCESSED_TRAIN) -> np.ndarray:
    """Only the int64 labels (N,) of a processed split: the class prior of a 224 px split costs no
    image I/O."""
    return _read(path, ("labels",))["labels"].astype(np.int64).reshape(-1)


def read_info() -> dict[str, Any]:
    """The processed dataset's info.json (name, n_classes, channels, image_size, counts, label_names)."""
    try:
        return json.loads(paths.PROCESSED_INFO.read_text())
    except FileNotFoundError:
        raise run_first(paths.PROCESSED_INFO, PREPROCESS) from None
    except json.JSONDecodeError:
        raise run_first(paths.PROCESSED_INFO, PREPROCESS, "not valid JSON") from None


# Real subsets (the scoring reference, its noise floor, the FID-during-training reference) belong to
# the dataset, not to one experiment: they are drawn with this seed, so every experiment on the same
# data is measured against the same real images.
DATASET_SEED = 0


def class_quotas(labels: np.ndarray, count: int) -> np.ndarray:
    """Images per class for a subset of `count` with the class proportions of `labels`.

    Largest-remainder rounding: each class gets floor(share) or floor(share) + 1, so the subset's
    histogram is within one image per class of the split's, and the quotas sum to `count`.
    """
    classes = np.bincount(labels)
    exact = classes * (count / len(labels))
    quotas = np.floor(exact).astype(np.int64)
    remainder = count - int(quotas.sum())
    order = np.lexsort((np.arange(len(classes)), -(exact - quotas)))  # largest fraction first
    quotas[order[:remainder]] += 1
    return np.minimum(quotas, classes)


def stratified_subset(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `count` images drawn at random within each class, in proportion to the class
    sizes. The rule for every subset of real images, so that a class-sorted source cannot give a
    one-class reference."""
    count = min(count, len(labels))
    chosen = []
    for label, quota in enumerate(class_quotas(labels, count)):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.choice(members, size=int(quota), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
