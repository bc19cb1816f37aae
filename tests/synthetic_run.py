"""Synthetic outputs of the train, sample, preprocess and score stages, in their file formats.

The plot tests draw from these instead of training a GAN: the figures depend only on the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ganpipe.gan.train import FID_COLUMNS
from ganpipe.pipeline import paths
from ganpipe.pipeline.io import save_npz

LABEL_NAMES = {
    "0": "adipose",
    "1": "background",
    "2": "debris",
    "3": "lymphocytes",
    "4": "mucus",
    "5": "smooth muscle",
    "6": "normal colon mucosa",
    "7": "cancer-associated stroma",
    "8": "colorectal adenocarcinoma epithelium",
}


def blobs(count: int, channels: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (count, channels, size, size) images of soft random blobs: structure a viewer can see."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    centers = rng.uniform(0.2, 0.8, size=(count, channels, 2, 1, 1))
    widths = rng.uniform(0.05, 0.2, size=(count, channels, 1, 1))
    distance = (xx - centers[:, :, 0]) ** 2 + (yy - centers[:, :, 1]) ** 2
    return (255 * np.exp(-distance / widths)).astype(np.uint8)


def write_losses(root: Path, steps: int = 1500, steps_per_epoch: int = 300, n_critic: int = 5) -> None:
    """losses.tsv as the train stage writes it: one row per generator update, gp empty for no penalty."""
    rng = np.random.default_rng(0)
    step = np.arange(n_critic, steps + 1, n_critic)
    progress = step / steps
    wasserstein = 2.5 * np.exp(-4 * progress) + 0.3 + rng.normal(0, 0.15, len(step))
    loss_g = -0.5 + 0.8 * progress + rng.normal(0, 0.2, len(step))
    loss_d = -wasserstein + rng.normal(0, 0.05, len(step))
    lines = ["step\tepoch\tloss_g\tloss_d\twasserstein\tgp"]
    lines += [
        f"{s}\t{s / steps_per_epoch:.4g}\t{g:.6g}\t{d:.6g}\t{w:.6g}\t"
        for s, g, d, w in zip(step, loss_g, loss_d, wasserstein, strict=True)
    ]
    path = root / paths.LOSSES_TSV
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_fid(root: Path, epochs: int) -> None:
    """fid.tsv with one row per epoch, or the bare header (FID during training off) when epochs is 0."""
    # The trained weights' FID trails the sampling (EMA) generator's by 2, so both lines show.
    rows = [
        f"{e}\t{e * 300}\t{e * 30.0}\t{120 / e + 15:.4f}\t{120 / e + 17:.4f}" for e in range(1, epochs + 1)
    ]
    (root / paths.FID_TSV).write_text("\n".join(["\t".join(FID_COLUMNS), *rows]) + "\n")


def write_dcr_histogram(root: Path) -> None:
    """The privacy stage's DCR histogram: fractions per distance bin, generated vs held-out."""
    centres = np.linspace(0.5, 9.5, 10)
    generated = np.array([0.02, 0.05, 0.1, 0.2, 0.25, 0.18, 0.1, 0.06, 0.03, 0.01])
    heldout = np.array([0.01, 0.04, 0.1, 0.21, 0.26, 0.19, 0.1, 0.05, 0.03, 0.01])
    rows = [f"{c:.2f}\t{g:.4f}\t{h:.4f}" for c, g, h in zip(centres, generated, heldout, strict=True)]
    path = root / paths.DCR_HISTOGRAM_TSV
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["dcr\tgenerated\theldout", *rows]) + "\n")


def write_class_histogram(root: Path) -> None:
    real = np.full(len(LABEL_NAMES), 1 / len(LABEL_NAMES))
    generated = np.array([0.2, 0.05, 0.1, 0.15, 0.0, 0.1, 0.1, 0.1, 0.2])
    rows = [f"{label}\t{r:.4f}\t{g:.4f}" for label, r, g in zip(LABEL_NAMES, real, generated, strict=True)]
    path = root / paths.CLASS_HISTOGRAM_TSV
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["label\treal\tgenerated", *rows]) + "\n")


def write_images(root: Path, channels: int, size: int = 28, epochs: int = 12) -> None:
    """epoch_samples.npz, samples.npz, train.npz and info.json; epoch samples sharpen with the epoch."""
    rng = np.random.default_rng(1)
    final = blobs(16, channels, size, rng)
    noise = rng.integers(0, 256, size=final.shape)
    weights = np.linspace(0.0, 1.0, epochs)[:, None, None, None, None]
    progression = (weights * final + (1 - weights) * noise).astype(np.uint8)
    save_npz(root / paths.EPOCH_SAMPLES, images=progression, epochs=np.arange(1, epochs + 1, dtype=np.int64))
    save_npz(root / paths.SAMPLES, images=blobs(100, channels, size, rng))
    save_npz(
        root / paths.PROCESSED_TRAIN,
        images=blobs(200, channels, size, rng),
        labels=rng.integers(0, len(LABEL_NAMES), 200).astype(np.int64),
    )
    info = {"n_classes": len(LABEL_NAMES), "label_names": LABEL_NAMES}
    (root / paths.PROCESSED_INFO).write_text(json.dumps(info))


def write_run(root: Path, channels: int = 3, fid_epochs: int = 5, class_histogram: bool = True) -> None:
    """Every file the plots stage reads, under `root` (the repository root of a test)."""
    write_losses(root)
    write_fid(root, fid_epochs)
    if class_histogram:
        write_class_histogram(root)
    write_images(root, channels)
