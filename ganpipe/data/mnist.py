"""MNIST through torchvision, and any folder in torchvision's MNIST idx layout.

A folder is `<folder>/raw/`, `<folder>/MNIST/raw/` or `<folder>/` holding
`{train,t10k}-images-idx3-ubyte` and `{train,t10k}-labels-idx1-ubyte`, each optionally gzipped.
When only one of the two splits is there (e.g. just the t10k files), a deterministic stratified
train/test split of it is made and the manifest says so.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganpipe.data.base import PUBLISHED_SPLIT, DatasetSource, RawData, offline_error
from ganpipe.data.layout import DERIVED_SPLIT, Arrays, derive_train_test, inspect_npz, write_npz
from ganpipe.data.remote import describe_network_error, network_timeout
from ganpipe.pipeline.errors import GanpipeError

IDX_PREFIXES = {"train": "train", "test": "t10k"}
IDX_UNSIGNED_BYTE = 0x08
# md5 of the uncompressed MNIST files as published by LeCun et al. Checking the uncompressed
# bytes accepts a re-gzipped copy of the same data (torchvision's md5s cover its .gz files only).
MNIST_MD5S = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
DIGIT_NAMES = {str(digit): str(digit) for digit in range(10)}


@dataclass(frozen=True)
class IdxData:
    splits: dict[str, Arrays]
    split: str  # PUBLISHED_SPLIT, or how it was derived
    md5s: dict[str, str]  # idx file name (uncompressed) -> md5 of its uncompressed bytes


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """An unsigned-byte idx array and the md5 of its uncompressed bytes."""
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise GanpipeError(f"{path}: cannot be read ({exc}); the file may be truncated or corrupt") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != IDX_UNSIGNED_BYTE:
        raise GanpipeError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(data[4:header_end], dtype=">u4"))
    array = np.frombuffer(data, dtype=np.uint8, offset=min(header_end, len(data)))
    if len(shape) != ndim or array.size != int(np.prod(shape)):
        raise GanpipeError(f"{path}: holds {array.size} values but its header says {shape}; it is truncated")
    return array.reshape(shape), hashlib.md5(data).hexdigest()


def _idx_folder(folder: Path) -> Path:
    for candidate in (folder / "raw", folder / "MNIST" / "raw", folder):
        if candidate.is_dir() and any(candidate.glob("*-idx?-ubyte*")):
            return candidate
    raise GanpipeError(
        f"{folder}: no MNIST idx files (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz], ...) "
        f"in {folder / 'raw'} or {folder}"
    )


def _find(folder: Path, stem: str) -> Path | None:
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def read_idx_folder(folder: Path, known_md5s: dict[str, str] | None) -> IdxData:
    """Read the splits in an idx folder; with `known_md5s`, every file must match its md5."""
    folder = _idx_folder(folder)
    splits: dict[str, Arrays] = {}
    md5s: dict[str, str] = {}
    for split, prefix in IDX_PREFIXES.items():
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        found = [_find(folder, stem) for stem in stems]
        if found == [None, None]:
            continue
        if None in found:
            missing = stems[found.index(None)]
            raise GanpipeError(f"{folder}: has {split} files but not {missing}[.gz]")
        (images, images_md5), (labels, labels_md5) = (read_idx(path) for path in found)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise GanpipeError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} differ")
        md5s.update(zip(stems, (images_md5, labels_md5), strict=True))
        splits[split] = (images, labels)
    if known_md5s is not None:
        for stem, md5 in md5s.items():
            if known_md5s.get(stem) != md5:
                raise GanpipeError(
                    f"{folder}: {stem} (uncompressed md5 {md5}) is not the published MNIST file; "
                    "for other data in this layout (e.g. Fashion-MNIST) set data.name=local"
                )
    if not splits:
        raise GanpipeError(f"{folder}: no complete pair of train-/t10k- images and labels idx files")
    if len(splits) == 2:
        return IdxData(splits, PUBLISHED_SPLIT, md5s)
    ((only, (images, labels)),) = splits.items()
    split = f"{DERIVED_SPLIT} of the {IDX_PREFIXES[only]} files only"
    return IdxData(derive_train_test(images, labels), split, md5s)


def import_idx_folder(folder: Path, raw_dir: Path, name: str, origin: str, is_mnist: bool) -> RawData:
    """Convert an idx folder to `<name>.npz` in MedMNIST layout inside `raw_dir`.

    `is_mnist`: the folder claims to hold MNIST itself, so every file must match MNIST_MD5S and
    the labels get the digit names; otherwise it is arbitrary data in the same layout.
    """
    idx = read_idx_folder(folder, MNIST_MD5S if is_mnist else None)
    file = f"{name}.npz"
    write_npz(raw_dir / file, idx.splits)
    return RawData(
        file=file,
        origin=origin,
        layout=inspect_npz(raw_dir / file),
        verified_md5s=idx.md5s if is_mnist else {},
        label_names=DIGIT_NAMES if is_mnist else None,
        split=idx.split,
    )


class MNISTSource(DatasetSource):
    """MNIST (60,000 train / 10,000 test digits) via torchvision.datasets.MNIST's mirrors."""

    def fetch(self, size: int, raw_dir: Path) -> RawData:
        from torchvision.datasets import MNIST

        origin = "torchvision.datasets.MNIST (" + ", ".join(MNIST.mirrors) + ")"
        with tempfile.TemporaryDirectory(prefix=".mnist-", dir=raw_dir) as download_dir:
            try:
                with network_timeout():
                    MNIST(download_dir, train=True, download=True)
            except (RuntimeError, OSError) as exc:
                reason = describe_network_error(exc)
                local_copy = "a folder holding the MNIST idx files (train-images-idx3-ubyte.gz, ...)"
                raise offline_error("mnist via torchvision", reason, local_copy) from None
            return import_idx_folder(Path(download_dir), raw_dir, self.name, origin, is_mnist=True)

    def import_local(self, source: Path, size: int, raw_dir: Path) -> RawData:
        if not source.is_dir():
            raise GanpipeError(
                f"data.source={source} is not a folder; data.name={self.name} expects MNIST idx files "
                "(for an npz, set data.name=local)"
            )
        return import_idx_folder(source, raw_dir, self.name, str(source), is_mnist=True)
