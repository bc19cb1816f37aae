"""Datasets: a registry of sources (`data.name`), the download stage and the preprocess stage.

Built-in names: every 2D MedMNIST flag (pathmnist, chestmnist, ...), `mnist` (torchvision),
`digits` (scikit-learn, offline) and `local` (data.source). A new source is a DatasetSource
subclass and one `register_dataset` call, as torch-fidelity registers feature extractors.
"""

from ganpipe.data.base import DATASETS, LOCAL, DatasetSource, RawData, download, register_dataset
from ganpipe.data.digits import DigitsSource
from ganpipe.data.local import LocalSource
from ganpipe.data.medmnist2d import MedMNISTSource, flags_2d
from ganpipe.data.mnist import MNISTSource
from ganpipe.data.transform import preprocess

__all__ = [
    "DATASETS",
    "LOCAL",
    "DatasetSource",
    "DigitsSource",
    "LocalSource",
    "MNISTSource",
    "MedMNISTSource",
    "RawData",
    "download",
    "preprocess",
    "register_dataset",
]

for _flag, _info in flags_2d().items():
    register_dataset(_flag, MedMNISTSource, info=_info)
register_dataset("mnist", MNISTSource)
register_dataset("digits", DigitsSource)
register_dataset(LOCAL, LocalSource)
