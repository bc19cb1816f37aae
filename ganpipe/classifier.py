"""The domain classifier: a small CNN trained on the real labels.

It is the measuring instrument of the domain metrics (ganpipe.features): its penultimate layer gives
the features for FID, KID and precision/recall, its logits the Inception Score and the class coverage.
Trained on the dataset itself, it sees what matters on MNIST-like images (strokes, stains) where
ImageNet's Inception does not, and it is cheap enough on CPU to score every experiment.

The network is sized for 2 CPU cores: strided stem convolutions bring 64/128/224 px inputs down to
about 28 px, so the trunk costs the same at every size, and global average pooling makes the feature
size independent of the input size.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganpipe import paths
from ganpipe.errors import GanpipeError
from ganpipe.io import load_torch, save_torch, write_json
from ganpipe.stage import progress_disabled

FEATURE_DIM = 128
# Stride-2 stem convolutions per input size: each halves the side, so the trunk sees 28-32 px.
STEM_DOWNSAMPLING = {28: 0, 64: 1, 128: 2, 224: 3}
EVAL_BATCH_SIZE = 500
# The trunk ends at 3-4 px; adaptive pooling to 3×3 fixes the flattened size for every input size.
POOLED_SIDE = 3


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DomainClassifier(nn.Module):
    """CNN on uint8 images (B, C, S, S): `features` gives the penultimate 128-d vector, `forward` logits.

    Inputs are uint8 so that every caller (training, torch-fidelity's extractor, prediction) normalises
    the same way, inside the model.
    """

    def __init__(self, in_channels: int, size: int, n_classes: int) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise GanpipeError(f"classifier: images have {in_channels} channels; expected 1 or 3")
        if size not in STEM_DOWNSAMPLING:
            raise GanpipeError(
                f"classifier: image size {size} not supported; expected one of 28, 64, 128, 224"
            )
        if n_classes < 2:
            raise GanpipeError(f"classifier: the data has {n_classes} class(es); at least 2 are needed")
        self.in_channels, self.size, self.n_classes = in_channels, size, n_classes
        stem: list[nn.Module] = []
        channels = in_channels
        for _ in range(STEM_DOWNSAMPLING[size]):
            stem.append(_conv_block(channels, 16, stride=2))
            channels = 16
        self.body = nn.Sequential(
            *stem,
            _conv_block(channels, 16),
            nn.MaxPool2d(2),
            _conv_block(16, 32),
            nn.MaxPool2d(2),
            _conv_block(32, 64),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(POOLED_SIDE),
            nn.Flatten(),
            nn.Linear(64 * POOLED_SIDE**2, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] to float [-1, 1], the range the GAN generators produce."""
        return images.float().div(127.5).sub(1.0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def config(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "size": self.size, "n_classes": self.n_classes}


def _check_images(images: np.ndarray, what: str) -> None:
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[2] != images.shape[3]:
        raise GanpipeError(f"{what}: expected uint8 images (N, C, S, S), got {images.dtype} {images.shape}")


@torch.no_grad()
def predict(model: DomainClassifier, images: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Predicted class of each uint8 image (N, C, S, S), as int64 (N,)."""
    model.eval()
    out = []
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        batch = torch.from_numpy(images[start : start + EVAL_BATCH_SIZE]).to(device)
        out.append(model(batch).argmax(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def accuracy(
    model: DomainClassifier, images: np.ndarray, labels: np.ndarray, device: torch.device | str
) -> float:
    return float((predict(model, images, device) == labels).mean())


def train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> DomainClassifier:
    """Train a DomainClassifier with Adam; the same seed and data give the same weights on CPU.

    The whole split stays one uint8 tensor and batches are drawn by a seeded permutation, so the
    order of random draws does not depend on anything but `seed`.
    """
    _check_images(train_images, "classifier training data")
    if len(train_labels) != len(train_images) or not np.all((train_labels >= 0) & (train_labels < n_classes)):
        raise GanpipeError(f"classifier: labels must be one per image, in [0, {n_classes}); rerun preprocess")
    torch.manual_seed(seed)
    model = DomainClassifier(train_images.shape[1], train_images.shape[2], n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(train_images) // batch_size)
    images = torch.from_numpy(train_images).to(device)
    labels = torch.from_numpy(train_labels.astype(np.int64)).to(device)
    order_rng = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=epochs * steps_per_epoch, desc="classifier", disable=progress_disabled()) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=order_rng).to(device)
            for start in range(0, len(images), batch_size):
                index = order[start : start + batch_size]
                loss = F.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    return model.eval()


def save_classifier(path: str | os.PathLike[str], model: DomainClassifier) -> None:
    """Tensors and plain values only, so `torch.load(weights_only=True)` reads it back."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"state_dict": state, **model.config()})


def load_classifier(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> DomainClassifier:
    saved = load_torch(path)
    try:
        model = DomainClassifier(saved["in_channels"], saved["size"], saved["n_classes"])
        model.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise GanpipeError(
            f"{path}: not a ganpipe classifier ({type(exc).__name__}); rerun dvc repro classifier"
        ) from None
    return model.to(device).eval()


def load_split(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (N, C, H, W) and labels int64 (N,) of a processed split."""
    try:
        with np.load(path) as data:
            images, labels = data["images"], data["labels"].astype(np.int64).reshape(-1)
    except FileNotFoundError:
        raise GanpipeError(f"{path}: not found; run dvc repro preprocess") from None
    except KeyError as exc:
        raise GanpipeError(f"{path}: missing array {exc}; rerun dvc repro preprocess") from None
    _check_images(images, str(path))
    return images, labels


def pick_device() -> torch.device:
    """Classifier training and feature extraction use the GPU when there is one (on PathMNIST the
    classifier takes minutes on a small CPU). CPU results are deterministic; CUDA ones may differ
    in the last bits between runs."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_info() -> dict[str, Any]:
    """The processed dataset's info.json (name, n_classes, channels, size, counts, label_names)."""
    try:
        return json.loads(paths.PROCESSED_INFO.read_text())
    except FileNotFoundError:
        raise GanpipeError(f"{paths.PROCESSED_INFO}: not found; run dvc repro preprocess") from None


def train_and_evaluate(params: dict[str, Any]) -> dict[str, Any]:
    """The classifier stage: train on the processed train split, write weights and metrics."""
    info = load_info()
    train_images, train_labels = load_split(paths.PROCESSED_TRAIN)
    test_images, test_labels = load_split(paths.PROCESSED_TEST)
    cfg = params["classifier"]
    device = pick_device()
    model = train_classifier(
        train_images,
        train_labels,
        int(info["n_classes"]),
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        seed=params["seed"],
        device=device,
    )
    metrics = {
        "test_accuracy": accuracy(model, test_images, test_labels, device),
        "train_accuracy": accuracy(model, train_images, train_labels, device),
        "epochs": cfg["epochs"],
        "n_train": len(train_images),
        "n_test": len(test_images),
        "n_classes": int(info["n_classes"]),
    }
    save_classifier(paths.CLASSIFIER_WEIGHTS, model)
    write_json(paths.CLASSIFIER_METRICS, metrics)
    return metrics
