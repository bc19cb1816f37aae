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

from ganpipe import paths
from ganpipe.errors import GanpipeError, run_first

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


def read_split(path: str | os.PathLike[str] = paths.PROCESSED_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (N, C, S, S) and labels int64 (N,) of a processed split."""
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"].astype(np.int64).reshape(-1)
    except FileNotFoundError:
        raise run_first(path, PREPROCESS) from None
    except KeyError as exc:
        raise run_first(path, PREPROCESS, f"missing array {exc}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise run_first(path, PREPROCESS, "not a readable .npz") from None
    check_images(images, str(path))
    if len(labels) != len(images):
        raise run_first(path, PREPROCESS, f"{len(images)} images but {len(labels)} labels")
    return images, labels


def read_info() -> dict[str, Any]:
    """The processed dataset's info.json (name, n_classes, channels, image_size, counts, label_names)."""
    try:
        return json.loads(paths.PROCESSED_INFO.read_text())
    except FileNotFoundError:
        raise run_first(paths.PROCESSED_INFO, PREPROCESS) from None
    except json.JSONDecodeError:
        raise run_first(paths.PROCESSED_INFO, PREPROCESS, "not valid JSON") from None
