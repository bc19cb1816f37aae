"""Arbitrary local data (`data.name: local`): a MedMNIST-layout .npz file or an MNIST idx folder.

Nothing is known about such data beyond its layout, so no md5 is checked and class names are the
label numbers unless `data.label_names` gives them; the file is validated before it is taken in.
"""

from __future__ import annotations

from pathlib import Path

from ganpipe.data.base import DatasetSource, RawData, copy_file
from ganpipe.data.layout import inspect_npz
from ganpipe.data.mnist import import_idx_folder
from ganpipe.pipeline.errors import GanpipeError


class LocalSource(DatasetSource):
    """Data the user supplies through data.source."""

    def fetch(self, size: int, raw_dir: Path) -> RawData:
        raise GanpipeError(
            f"data.name={self.name} needs data.source: a MedMNIST-layout .npz file or an MNIST idx folder"
        )

    def import_local(self, source: Path, size: int, raw_dir: Path) -> RawData:
        if source.is_dir():
            return import_idx_folder(source, raw_dir, self.name, str(source), is_mnist=False)
        layout = inspect_npz(source)  # refuse a bad file under its own name, before copying it
        file = f"{self.name}.npz"
        copy_file(source, raw_dir / file)
        return RawData(file=file, origin=str(source), layout=layout, verified_md5s={})
