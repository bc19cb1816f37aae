"""The export stage: a labelled synthetic dataset from a conditional generator.

It writes data/export/synthetic.npz in MedMNIST layout (train/val/test images at the dataset's size
and channels, each with the label the generator was conditioned on), so that the synthetic set goes
back into the pipeline as `data.name=local`, `data.source=<a copy of it>`; manifest.json records what
made it (the experiment's params, the model, seed, counts, source dataset and class names); with
`export.png` also one PNG per image under png/<split>/<label>_<class name>/.

The manifest also records the privacy audit's verdict (metrics/privacy.json, the privacy stage);
with `export.require_private` a flagged audit stops the export before anything is written. The
audit measured the scored samples (stream sample.noise) of the same generator, not these images.

Unconditional models export nothing but the manifest, with the reason: their images have no
labels of their own, and labelling them with the domain classifier would make a dataset whose
labels are the instrument's guesses, whose errors then look like the generator's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import numpy as np

from ganpipe.data.layout import write_npz
from ganpipe.gan.sample import conditioning_labels, generate, load_sampling_generator
from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.io import file_md5, write_json
from ganpipe.pipeline.params import model_config
from ganpipe.pipeline.processed import read_info

SPLIT_KEYS = (("train", "num_train"), ("val", "num_val"), ("test", "num_test"))
UNCONDITIONAL_REASON = (
    "the model is unconditional (models.{model}.conditional = none): its images have no labels, and "
    "classifier-predicted labels would make the instrument's errors part of the dataset; train with "
    "models.{model}.conditional = projection or acgan to export"
)


def to_layout(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 -> MedMNIST's (N, H, W) for grayscale or (N, H, W, 3) for RGB."""
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def class_folder(label: int, name: str) -> str:
    """A folder name per class: the label first (unique, sorted), then the name made path-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return f"{label}_{safe}" if safe and safe != str(label) else str(label)


def write_pngs(splits: dict[str, tuple[np.ndarray, np.ndarray]], label_names: dict[str, str]) -> None:
    """One PNG per image, png/<split>/<label>_<name>/00001.png, numbered within each class.

    Written into a temporary folder that replaces png/ at the end, so an interrupted export never
    leaves a partial folder.
    """
    from PIL import Image

    target = paths.EXPORT_PNG
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split, (images, labels) in splits.items():
        counters: dict[int, int] = {}
        for image, label in zip(images, labels.tolist(), strict=True):
            folder = partial / split / class_folder(label, label_names.get(str(label), str(label)))
            if label not in counters:
                folder.mkdir(parents=True, exist_ok=True)
            counters[label] = counters.get(label, 0) + 1
            picture = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(picture).save(folder / f"{counters[label]:05d}.png")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def privacy_verdict(require_private: bool) -> dict[str, Any]:
    """The privacy audit's verdict for the manifest; raises when `require_private` and it flags copying.

    Without metrics/privacy.json (an export run outside the pipeline) the manifest says so, unless
    the export must be private, which then needs the audit.
    """
    try:
        audit = json.loads(paths.PRIVACY_METRICS.read_text())
    except FileNotFoundError:
        if require_private:
            raise run_first(
                paths.PRIVACY_METRICS, "privacy", "not found (export.require_private needs it)"
            ) from None
        return {"audited": False, "reason": f"{paths.PRIVACY_METRICS} not found"}
    verdict = audit["verdict"]
    if require_private and verdict["flagged"]:
        raise GanpipeError(
            f"export refused: the privacy audit flags copying ({'; '.join(verdict['reasons'])}); see "
            f"{paths.PRIVACY_METRICS} and docs/privacy.md, or set export.require_private: false"
        )
    return {"audited": True, "source": str(paths.PRIVACY_METRICS), **verdict}


def export(params: dict[str, Any]) -> dict[str, Any]:
    """Write the synthetic dataset (or, for an unconditional model, the reason for none); return the
    manifest."""
    cfg, export_cfg, seed = model_config(params), params["export"], params["seed"]
    privacy = privacy_verdict(export_cfg["require_private"])
    info = read_info()
    device = resolve_device()
    generator = load_sampling_generator(device)
    manifest: dict[str, Any] = {
        "source_dataset": {
            key: info.get(key) for key in ("name", "task", "n_classes", "label_names", "channels", "size")
        },
        "model": params["model"],
        "model_params": cfg,
        "arch": params["arch"],
        "train": params["train"],
        "data": params["data"],
        "seed": seed,
        "generator": "ema" if paths.GENERATOR_EMA.exists() else "final",
        "streams": {"noise": "export.noise", "labels": "export.labels"},
        "privacy": privacy,
    }
    for stale in (paths.EXPORT_NPZ, paths.EXPORT_PNG):  # outputs of an earlier export (outside DVC)
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    counts = {split: export_cfg[key] for split, key in SPLIT_KEYS if export_cfg[key] > 0}
    total = sum(counts.values())
    labels = conditioning_labels(generator, export_cfg["labels"], total, seed, stream="export.labels")
    if labels is None:
        manifest.update(exported=False, reason=UNCONDITIONAL_REASON.format(model=params["model"]))
        write_json(paths.EXPORT_MANIFEST, manifest)
        return manifest

    batch_size = params["sample"]["batch_size"]
    images = generate(generator, total, batch_size, seed, device, labels, stream="export.noise")
    labels_np = labels.numpy()
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    start = 0
    for split, count in counts.items():  # consecutive slices of one draw: train, val, test
        splits[split] = (images[start : start + count], labels_np[start : start + count])
        start += count
    write_npz(paths.EXPORT_NPZ, {split: (to_layout(x), y) for split, (x, y) in splits.items()})
    n_classes = info["n_classes"]
    manifest.update(
        exported=True,
        file=paths.EXPORT_NPZ.name,
        md5=file_md5(paths.EXPORT_NPZ),
        layout="MedMNIST npz: <split>_images uint8 (N, H, W) or (N, H, W, 3), <split>_labels int64 (N, 1)",
        labels=export_cfg["labels"],
        label_source="conditioning: each image was generated for its label",
        num_images=counts,
        class_counts={
            split: np.bincount(y, minlength=n_classes)[:n_classes].tolist()
            for split, (_, y) in splits.items()
        },
        png=export_cfg["png"],
        usage=(
            "copy synthetic.npz out of data/export (the next run overwrites it), then "
            "dvc exp run -S data.name=local -S data.source=<the copy> "
            f"-S data.channels={info['channels']} -S data.image_size={info['size']}"
        ),
    )
    if export_cfg["png"]:
        write_pngs(splits, info.get("label_names", {}))
    write_json(paths.EXPORT_MANIFEST, manifest)
    return manifest
