"""The `data` section of params.yaml: the data layer's own keys and their checks, as plain data.

ganpipe.config assembles it with the other layers' schemas into `load_params()`; like them it
imports no torch.
"""

from __future__ import annotations

from typing import Any

from ganpipe import data as registry
from ganpipe.data import LOCAL
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.params import Schema, allowing, choice, fail, integer, optional, readable_path, string

SIZES = (28, 64, 128, 224)


def _label_names(key: str, value: Any) -> None:
    """A list of distinct non-empty names, or a mapping of the labels 0..n-1 to them."""
    names = list(value.values()) if isinstance(value, dict) else value
    labels_ok = not isinstance(value, dict) or set(value) == set(range(len(value)))
    names_ok = isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
    if not (labels_ok and names_ok and len(set(names)) == len(names)):
        fail(key, value, label_names.allowed)


label_names = allowing(
    "a list of distinct class names, one per label, or a mapping {0: name, 1: name, ...}", _label_names
)


def _check_data(params: dict[str, Any]) -> None:
    data, datasets = params["data"], registry.DATASETS  # read at each check: sources may be added
    if data["name"] not in datasets:
        fail("data.name", data["name"], "one of " + ", ".join(sorted(datasets)))
    if data["label_names"] is not None and data["name"] != LOCAL:
        raise ParamsError(
            f"params.yaml: data.label_names names the classes of data.name = {LOCAL!r} only; "
            f"{data['name']} publishes its own names: set data.label_names to null"
        )
    if data["name"] == LOCAL and data["source"] is None:
        raise ParamsError(
            "params.yaml: data.name = 'local' needs data.source: set it to a MedMNIST-layout .npz "
            "file or a torchvision MNIST idx folder"
        )


DATA = Schema(
    sections={
        "data": {
            "name": string,  # checked against the dataset registry by _check_data
            "source": optional(readable_path),
            "image_size": choice(*SIZES),
            "channels": choice(1, 3),
            "limit": optional(integer(16)),
            "label_names": optional(label_names),  # local sources only, checked below and at download
        },
    },
    checks=(_check_data,),
    allowed={"data.name": "one of " + ", ".join(sorted(registry.DATASETS))},
)
