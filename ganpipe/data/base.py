"""The dataset contract, the registry of names, and the download step that drives them.

A dataset source knows how to bring one family of data into the raw folder as a single npz in
MedMNIST layout: `fetch` obtains it (network or bundled), `import_local` takes a local copy named
by `data.source` and checks it is what the name claims. Everything after that (the manifest, the
preprocess stage) reads only the npz and the manifest, so a new source is one subclass plus one
`register_dataset` call.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ganpipe.pipeline import paths
from ganpipe.data.layout import NpzLayout
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import atomic_path, write_json

LOCAL = "local"
# MedMNIST's task string for ChestMNIST-style data: several binary labels per image.
MULTI_LABEL = "multi-label, binary-class"
SINGLE_LABEL = "multi-class"
PUBLISHED_SPLIT = "as published"
OFFLINE_ALTERNATIVES = "or use data.name=digits (scikit-learn's bundled digits, no network needed)"


@dataclass(frozen=True)
class RawData:
    """What a source put into the raw folder; `download` turns it into manifest.json."""

    file: str  # name of the MedMNIST-layout npz inside the raw folder
    origin: str  # where the bytes came from: a URL, a library loader, or the data.source path
    layout: NpzLayout  # the validated shapes and counts of `file`
    verified_md5s: dict[str, str]  # input file -> md5 that matched a published checksum
    task: str | None = None  # MedMNIST's task string; None: inferred from the label columns
    label_names: dict[str, str] | None = None  # str(label) -> name, when the dataset publishes them
    split: str = PUBLISHED_SPLIT  # how train/test were obtained


class DatasetSource(ABC):
    """One dataset family, registered under `name` (a valid `data.name`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def fetch(self, size: int, raw_dir: Path) -> RawData:
        """Obtain the dataset at image side `size` (if the source offers sizes) into `raw_dir`."""

    def import_local(self, source: Path, size: int, raw_dir: Path) -> RawData:
        """Take `source` (data.source) into `raw_dir` after checking it really is this dataset.

        Sources without a published file have nothing to check a local copy against, so they
        refuse: claiming a name the data cannot be verified to have would mislabel the results.
        """
        raise GanpipeError(
            f"data.name={self.name} has no published file to check data.source={source} against; "
            f"set data.name={LOCAL} to use that data as is, or data.source=null"
        )


DATASETS: dict[str, DatasetSource] = {}


def register_dataset(name: str, source_class: type[DatasetSource], **options: Any) -> None:
    """Make `name` a valid `data.name`, served by `source_class(name, **options)`."""
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = source_class(name, **options)


def offline_error(what: str, reason: str, local_copy: str) -> GanpipeError:
    """The one-line error for every failed download, naming the ways to continue offline."""
    return GanpipeError(
        f"could not download {what}: {reason}. To work offline, set data.source to {local_copy}, "
        f"{OFFLINE_ALTERNATIVES}"
    )


def copy_file(source: Path, destination: Path) -> None:
    """Copy `source` byte for byte; `destination` appears only when the copy is complete."""
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def n_classes(raw: RawData) -> int:
    """Classes in the raw labels: published names win; else one per label column or label value."""
    if raw.label_names is not None:
        return len(raw.label_names)
    if raw.layout.label_width > 1:
        return raw.layout.label_width
    return raw.layout.max_label + 1


def named_classes(label_names: list[str] | dict[int, str], raw: RawData, source: str) -> dict[str, str]:
    """data.label_names (a list, or a mapping of labels 0..n-1; params validation checked its form)
    as str(label) -> name, refused in one line unless it names every class `source` holds."""
    names = dict(enumerate(label_names)) if isinstance(label_names, list) else label_names
    found = n_classes(raw)
    if len(names) != found:
        raise ParamsError(
            f"params.yaml: data.label_names has {len(names)} names, but {source} holds {found} classes "
            f"(labels 0..{found - 1}); give one name per label"
        )
    return {str(label): names[label] for label in sorted(names)}


def _remove_stale_files(raw_dir: Path, keep: set[str]) -> None:
    """Drop files an earlier run left for another dataset, so raw/ holds exactly one dataset."""
    for entry in raw_dir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def download(data_params: dict[str, Any]) -> None:
    """Download stage: put the dataset `data.name` (or the local `data.source`) into data/raw.

    Writes the npz and manifest.json (docs/getting-started.md, "Data", describes its keys). A failed
    download or a file that is not what it claims ends in one GanpipeError line.
    """
    name, size, local_source = data_params["name"], data_params["image_size"], data_params["source"]
    source = DATASETS[name]
    raw_dir = paths.RAW_DIR
    raw_dir.mkdir(parents=True, exist_ok=True)
    if local_source is None:
        raw = source.fetch(size, raw_dir)
    else:
        raw = source.import_local(Path(local_source), size, raw_dir)
    if data_params["label_names"] is not None:  # a local source (params validation sees to it)
        raw = replace(raw, label_names=named_classes(data_params["label_names"], raw, local_source))
    manifest = {
        "name": name,
        "source": local_source,
        "origin": raw.origin,
        "file": raw.file,
        "md5": raw.layout.md5,
        "verified_md5s": raw.verified_md5s,
        "task": raw.task or (MULTI_LABEL if raw.layout.label_width > 1 else SINGLE_LABEL),
        "size": raw.layout.size,
        "channels": raw.layout.channels,
        "splits": raw.layout.splits,
        "split": raw.split,
        "n_classes": n_classes(raw),
        "label_names": raw.label_names,
    }
    _remove_stale_files(raw_dir, keep={raw.file, paths.RAW_MANIFEST.name})
    write_json(paths.RAW_MANIFEST, manifest)
