"""The 2D MedMNIST datasets, fetched from the URLs and checked against the MD5s the medmnist
package publishes (its INFO table), at every size it offers (28, 64, 128, 224).

The downloaded npz is kept byte for byte, so its md5 in the manifest is the published one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ganpipe.data.base import DatasetSource, RawData, copy_file
from ganpipe.data.layout import inspect_npz
from ganpipe.data.remote import fetch_url
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import file_md5


def _medmnist_info() -> dict[str, dict[str, Any]]:
    """medmnist.INFO, read from medmnist/info.py without importing the medmnist package.

    Every stage validates data.name against this table, and `import medmnist` also imports torch
    and sklearn.metrics (several seconds on a small CPU); info.py itself needs only the stdlib.
    """
    if "medmnist" in sys.modules:
        return sys.modules["medmnist"].INFO
    package = importlib.util.find_spec("medmnist")
    if package is None or not package.submodule_search_locations:
        raise GanpipeError("the medmnist package is not installed; pip install -r requirements.txt")
    info_file = Path(package.submodule_search_locations[0]) / "info.py"
    spec = importlib.util.spec_from_file_location("_ganpipe_medmnist_info", info_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.INFO


def flags_2d() -> dict[str, dict[str, Any]]:
    """medmnist.INFO entries of the 2D datasets (3D ones hold volumes, not images)."""
    return {flag: info for flag, info in _medmnist_info().items() if not info["python_class"].endswith("3D")}


class MedMNISTSource(DatasetSource):
    """A dataset described by a medmnist.INFO-style entry: url/MD5 (28 px), url_64/MD5_64, ...,
    task and label names. Registering another entry serves any npz published the same way."""

    def __init__(self, name: str, info: dict[str, Any]) -> None:
        super().__init__(name)
        self.info = info

    def _published(self, size: int) -> tuple[str, str, str]:
        """(url, md5, file name) of the published file at `size`."""
        suffix = "" if size == 28 else f"_{size}"
        if f"url{suffix}" not in self.info:
            raise GanpipeError(f"{self.name} is not published at data.image_size={size}; use another size")
        url = self.info[f"url{suffix}"]
        return url, self.info[f"MD5{suffix}"], Path(urlparse(url).path).name

    def _raw_data(self, file: str, origin: str, md5: str, raw_dir: Path) -> RawData:
        return RawData(
            file=file,
            origin=origin,
            layout=inspect_npz(raw_dir / file),
            verified_md5s={file: md5},
            task=self.info["task"],
            label_names=dict(self.info["label"]),
        )

    def fetch(self, size: int, raw_dir: Path) -> RawData:
        url, md5, file = self._published(size)
        destination = raw_dir / file
        # A verified copy from an earlier run is reused: these files are up to several GB.
        if not (destination.exists() and file_md5(destination) == md5):
            local_copy = f"a copy of {file} (md5 {md5}) or any MedMNIST-layout .npz with data.name=local"
            fetch_url(url, destination, md5, f"{self.name} (size {size})", local_copy)
        return self._raw_data(file, url, md5, raw_dir)

    def import_local(self, source: Path, size: int, raw_dir: Path) -> RawData:
        _url, md5, file = self._published(size)
        if source.is_dir():
            raise GanpipeError(f"data.source={source} is a folder; data.name={self.name} expects {file}")
        actual = file_md5(source)
        if actual != md5:
            raise GanpipeError(
                f"data.source={source} has md5 {actual}, but {self.name} at data.image_size={size} is "
                f"{file} with md5 {md5}; point data.source at that file, fix data.image_size, or set "
                "data.name=local to use the file as arbitrary data"
            )
        copy_file(source, raw_dir / file)
        return self._raw_data(file, str(source), md5, raw_dir)
