"""The MedMNIST npz layout: the one on-disk format every source is converted to.

An npz holds `train_images`, `train_labels`, `test_images`, `test_labels` and optionally
`val_images`, `val_labels`. Images are uint8, (N, H, W) for grayscale or (N, H, W, C) with C 1 or
3, square. Labels are integers, (N,) or (N, 1), or (N, K) 0/1 columns for multi-label data.

`inspect_npz` checks a file against this layout without loading the images (only the array
headers and the zip CRCs), so a 224 px download is validated in constant memory, and a truncated
or corrupt file is refused with one line naming it.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import file_md5, save_npz

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
LAYOUT_HINT = (
    "expected a MedMNIST-layout .npz: train_images/test_images uint8 (N, H, W) or (N, H, W, C), "
    "train_labels/test_labels integers (N,) or (N, K), optional val_*"
)
# How sources without a published test split get one; recorded in the manifest.
DERIVED_SPLIT_SEED = 0
DERIVED_TEST_FRACTION = 0.2
DERIVED_SPLIT = (
    f"derived: stratified {1 - DERIVED_TEST_FRACTION:.0%}/{DERIVED_TEST_FRACTION:.0%} train/test split, "
    f"sklearn.model_selection.train_test_split(random_state={DERIVED_SPLIT_SEED})"
)

Arrays = tuple[np.ndarray, np.ndarray]  # (images, labels) of one split


@dataclass(frozen=True)
class NpzLayout:
    """What `inspect_npz` found in a valid file."""

    md5: str
    splits: dict[str, int]  # split -> number of images, in SPLITS order
    size: int  # image side (images are square)
    channels: int
    label_width: int  # 1 for one label per image, K for K binary labels
    max_label: int


def _refuse(path: Path, problem: str) -> GanpipeError:
    return GanpipeError(f"{path}: {problem}; {LAYOUT_HINT}")


def _read_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, _fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    return shape, dtype


def _read_array(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    with archive.open(member) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def _check_images(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int, int]:
    """Return (count, side, channels) of a valid image array header."""
    if dtype != np.uint8:
        raise _refuse(path, f"{key} has dtype {dtype}, not uint8")
    if len(shape) == 3:
        shape = (*shape, 1)
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise _refuse(path, f"{key} has shape {shape}, not (N, H, W) or (N, H, W, C) with C 1 or 3")
    count, height, width, channels = shape
    if height != width or height < 1:
        raise _refuse(path, f"{key} holds {height}×{width} images; only square images are supported")
    return count, height, channels


def _check_labels(path: Path, key: str, labels: np.ndarray, count: int) -> int:
    """Return the label width (columns) of a valid label array."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise _refuse(path, f"{key} has dtype {labels.dtype}, not an integer type")
    if labels.ndim not in (1, 2) or labels.shape[0] != count or labels.shape[1:] == (0,):
        expected = f"({count},) or ({count}, K)"
        raise _refuse(path, f"{key} has shape {labels.shape}; its {count} images need {expected}")
    if labels.size and labels.min() < 0:
        raise _refuse(path, f"{key} holds negative labels")
    width = 1 if labels.ndim == 1 else labels.shape[1]
    if width > 1 and labels.size and labels.max() > 1:
        raise _refuse(path, f"{key} has {width} label columns that are not all 0/1")
    return width


def _inspect_archive(path: Path, archive: zipfile.ZipFile) -> NpzLayout:
    corrupt = archive.testzip()
    if corrupt is not None:
        raise _refuse(path, f"member {corrupt} is corrupt (CRC mismatch)")
    members = set(archive.namelist())
    present = [s for s in SPLITS if f"{s}_images.npy" in members or f"{s}_labels.npy" in members]
    missing = [
        f"{split}_{part}"
        for split in sorted(set(present) | set(REQUIRED_SPLITS), key=SPLITS.index)
        for part in ("images", "labels")
        if f"{split}_{part}.npy" not in members
    ]
    if missing:
        raise _refuse(path, f"missing arrays {', '.join(missing)}")
    counts, shapes, widths, max_label = {}, set(), set(), 0
    for split in present:
        header = _read_header(archive, f"{split}_images.npy")
        count, side, channels = _check_images(path, f"{split}_images", *header)
        if count == 0 and split in REQUIRED_SPLITS:
            raise _refuse(path, f"{split}_images is empty")
        labels = _read_array(archive, f"{split}_labels.npy")
        widths.add(_check_labels(path, f"{split}_labels", labels, count))
        counts[split], max_label = count, max(max_label, int(labels.max(initial=0)))
        shapes.add((side, channels))
    if len(shapes) > 1 or len(widths) > 1:
        raise _refuse(
            path, f"splits disagree on (side, channels) {sorted(shapes)} or label columns {sorted(widths)}"
        )
    (side, channels), (width,) = shapes.pop(), widths
    return NpzLayout(file_md5(path), counts, side, channels, width, max_label)


def inspect_npz(path: Path) -> NpzLayout:
    """Validate `path` against the MedMNIST layout; raise one GanpipeError line if it is not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _inspect_archive(path, archive)
    except FileNotFoundError:
        raise GanpipeError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(path, f"cannot be read as .npz, it may be truncated or corrupt ({reason})") from None


def load_split(path: Path, split: str) -> Arrays:
    """Load one split's (images, labels) from a file that `inspect_npz` accepted."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[f"{split}_images"], archive[f"{split}_labels"]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise _refuse(path, f"cannot read split {split!r} ({exc}); rerun the download stage") from None


def write_npz(path: Path, splits: dict[str, Arrays]) -> None:
    """Write splits in MedMNIST layout, labels as int64 (N, 1) like MedMNIST's (N, 1) columns."""
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.ascontiguousarray(images, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    save_npz(path, **arrays)


def derive_train_test(images: np.ndarray, labels: np.ndarray) -> dict[str, Arrays]:
    """Split one labelled set into train/test deterministically, keeping class proportions.

    Used for data published without a split of the size we need (scikit-learn's digits, an MNIST
    folder holding only the t10k files). The manifest records DERIVED_SPLIT.
    """
    from sklearn.model_selection import train_test_split

    try:
        train_images, test_images, train_labels, test_labels = train_test_split(
            images, labels, test_size=DERIVED_TEST_FRACTION, random_state=DERIVED_SPLIT_SEED, stratify=labels
        )
    except ValueError as exc:  # e.g. a class with a single image cannot be stratified
        raise GanpipeError(f"cannot split {len(labels)} images into train/test: {exc}") from None
    return {"train": (train_images, train_labels), "test": (test_images, test_labels)}
