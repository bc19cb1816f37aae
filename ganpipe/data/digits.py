"""scikit-learn's bundled 8×8 digits, upscaled to 28×28: real labelled data with no network.

1,797 images is small enough for CPU demos and tests; it is the offline fallback every download
error names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganpipe.data.base import DatasetSource, RawData
from ganpipe.data.layout import DERIVED_SPLIT, derive_train_test, inspect_npz, write_npz
from ganpipe.data.mnist import DIGIT_NAMES
from ganpipe.data.transform import resize

DIGITS_SIZE = 28  # MNIST's side, so digits stand in for MNIST-like data at the default size
DIGITS_MAX_VALUE = 16  # load_digits counts 0..16 set pixels per 4×4 block


class DigitsSource(DatasetSource):
    """sklearn.datasets.load_digits, scaled to 0..255 and resized with antialiasing."""

    def fetch(self, size: int, raw_dir: Path) -> RawData:
        import sklearn
        from sklearn.datasets import load_digits

        digits = load_digits()
        intensities = digits.images[:, None] * (255 / DIGITS_MAX_VALUE)  # (N, 1, 8, 8) in 0..255
        images = resize(intensities, DIGITS_SIZE)[:, 0]
        labels = digits.target.astype(np.int64)
        file = f"{self.name}.npz"
        write_npz(raw_dir / file, derive_train_test(images, labels))
        return RawData(
            file=file,
            origin=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
            layout=inspect_npz(raw_dir / file),
            verified_md5s={},
            label_names=DIGIT_NAMES,
            split=DERIVED_SPLIT,
        )
