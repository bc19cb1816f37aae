"""The domain classifier: a small CNN trained on the real labels.

It is the measuring instrument of the domain metrics (ganpipe.measure.features): its penultimate layer gives
the features for FID, KID and precision/recall, its logits the Inception Score and the class coverage.
Trained on the dataset itself, it sees what matters on MNIST-like images (strokes, stains) where
ImageNet's Inception does not, and it is cheap enough on CPU to score every experiment.

The network is sized for 2 CPU cores: strided stem convolutions bring 64/128/224 px inputs down to
about 28 px, so the trunk costs the same at every size, and global average pooling makes the feature
size independent of the input size.

An instrument that overfits measures badly (a held-back chest X-ray set: train accuracy 0.98, test
0.79 before this training recipe), so training is regularised and selected on the validation split:
- random shifts of up to 1/14 of the side (2 px at 28 px), applied on the device to uint8 batches,
  with the edge pixels repeated; no flips or rotations, which change a digit's class (6/9) and an
  X-ray's laterality. Shift invariance is also harmless for the metrics: a GAN's failures are not
  small translations;
- AdamW with decoupled weight decay, dropout before the head, a one-cycle learning-rate schedule;
- the weights of the epoch with the best validation accuracy are kept (ties: lower validation loss).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import load_torch, save_torch, write_json
from ganpipe.pipeline.processed import DATASET_SEED, check_images, read_info, read_split
from ganpipe.pipeline.stage import progress_disabled
from ganpipe.pipeline.streams import seed_globals, torch_generator

FEATURE_DIM = 128
# Stride-2 stem convolutions per input size: each halves the side, so the trunk sees 28-32 px.
STEM_DOWNSAMPLING = {28: 0, 64: 1, 128: 2, 224: 3}
EVAL_BATCH_SIZE = 500
# The trunk ends at 3-4 px; adaptive pooling to 3×3 fixes the flattened size for every input size.
POOLED_SIDE = 3
# Largest random shift, as a fraction of the image side: 2 px at 28 px, the usual MNIST augmentation.
SHIFT_FRACTION = 1 / 14
# Small sets repeat passes within an epoch up to this many optimizer steps (see train_classifier).
MIN_STEPS_PER_EPOCH = 20
# Channels of the trunk's three stages (each a 3×3 convolution, batch norm, ReLU and 2×2 max pool).
WIDTHS = (16, 32, 64)


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DomainClassifier(nn.Module):
    """CNN on uint8 images (B, C, S, S): `features` gives the penultimate 128-d vector, `forward` logits.

    Inputs are uint8 so that every caller (training, torch-fidelity's extractor, prediction) normalises
    the same way, inside the model. Dropout sits between `features` and `head` in `forward` only, so
    `head(features(x))` (what ganpipe.measure.features computes) equals `forward(x)` in eval mode.
    """

    def __init__(self, in_channels: int, size: int, n_classes: int, dropout: float = 0.0) -> None:
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
        trunk: list[nn.Module] = []
        for width in WIDTHS:
            trunk += [_conv_block(channels, width), nn.MaxPool2d(2)]
            channels = width
        self.body = nn.Sequential(
            *stem,
            *trunk,
            nn.AdaptiveAvgPool2d(POOLED_SIDE),
            nn.Flatten(),
            nn.Linear(channels * POOLED_SIDE**2, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] to float [-1, 1], the range the GAN generators produce."""
        return images.float().div(127.5).sub(1.0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))

    def config(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "size": self.size, "n_classes": self.n_classes}


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each uint8 image (B, C, S, S) by its own random offset in [-max_shift, max_shift]² pixels.

    The offsets are drawn on the CPU from `generator` (so CPU and CUDA runs draw the same ones) and
    applied as one gather on the images' device. Pixels shifted in repeat the edge: MNIST's border is
    black anyway, and on medical crops a black band would be an artefact no real image has.
    """
    count, channels, side = images.shape[0], images.shape[1], images.shape[-1]
    offsets = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator).to(images.device)
    base = torch.arange(side, device=images.device)
    rows = (base[None, :] + offsets[:, :1]).clamp_(0, side - 1)  # (B, S)
    cols = (base[None, :] + offsets[:, 1:]).clamp_(0, side - 1)
    batch = torch.arange(count, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    return images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@torch.no_grad()
def predict_logits(
    model: DomainClassifier, images: np.ndarray, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Logits of uint8 images (N, C, S, S) as a float32 CPU tensor (N, n_classes)."""
    model.eval()
    out = [
        model(torch.from_numpy(images[start : start + EVAL_BATCH_SIZE]).to(device)).float().cpu()
        for start in range(0, len(images), EVAL_BATCH_SIZE)
    ]
    return torch.cat(out) if out else torch.zeros(0, model.n_classes)


def predict(model: DomainClassifier, images: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
    """Predicted class of each uint8 image (N, C, S, S), as int64 (N,)."""
    return predict_logits(model, images, device).argmax(dim=1).numpy().astype(np.int64)


def accuracy(
    model: DomainClassifier, images: np.ndarray, labels: np.ndarray, device: torch.device | str
) -> float:
    return float((predict(model, images, device) == labels).mean())


def _check_labels(labels: np.ndarray, images: np.ndarray, n_classes: int, what: str) -> None:
    if len(labels) != len(images) or not np.all((labels >= 0) & (labels < n_classes)):
        raise GanpipeError(
            f"classifier: {what} labels must be one per image, in [0, {n_classes}); "
            "rerun `dvc repro preprocess`"
        )


@dataclass
class TrainingResult:
    """A trained classifier and how it was selected."""

    model: DomainClassifier  # the weights of `best_epoch`, in eval mode
    best_epoch: int  # 1-based; the last epoch when there is no validation split
    val_accuracy: float | None  # of the kept weights; None without a validation split
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val_accuracy, val_loss


def train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    *,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    dropout: float = 0.0,
    label_smoothing: float = 0.0,
    augment: bool = False,
    device: torch.device | str = "cpu",
) -> TrainingResult:
    """Train a DomainClassifier; the same seed and data give bit-identical weights on CPU.

    The whole split stays one uint8 tensor on the device. An epoch is one pass over it, or several
    on sets too small for MIN_STEPS_PER_EPOCH steps per pass. Every random draw comes from a named
    stream: initial weights ("classifier.weights"), dropout ("classifier.dropout", the global RNG
    re-seeded after initialisation so that the architecture's draw count does not shift it), batch
    order and shifts per epoch ("classifier.order", "classifier.augment"). With a validation split,
    the weights of the epoch with the best validation accuracy are kept: accuracy is what the
    classifier's labels (class coverage, intra-class FID) need, and ties, frequent on small splits,
    go to the lower validation loss.
    """
    check_images(train_images, "classifier training data")
    _check_labels(train_labels, train_images, n_classes, "training")
    if (val_images is None) != (val_labels is None):
        raise GanpipeError("classifier: give both validation images and labels, or neither")
    if val_images is not None and val_labels is not None:
        check_images(val_images, "classifier validation data")
        _check_labels(val_labels, val_images, n_classes, "validation")
        if val_images.shape[1:] != train_images.shape[1:]:
            raise GanpipeError(
                f"classifier: validation images {val_images.shape[1:]} differ from training images "
                f"{train_images.shape[1:]}; rerun `dvc repro preprocess`"
            )
    device = torch.device(device)
    seed_globals(seed, "classifier.weights")
    model = DomainClassifier(train_images.shape[1], train_images.shape[2], n_classes, dropout).to(device)
    seed_globals(seed, "classifier.dropout")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # An epoch is one pass, or more on small sets: at least MIN_STEPS_PER_EPOCH steps, so that 100
    # images still get a few hundred updates (one pass of a 128 batch is one step).
    passes = max(1, -(-MIN_STEPS_PER_EPOCH * batch_size // len(train_images)))
    steps_per_epoch = -(-passes * len(train_images) // batch_size)
    # One cycle: warm up from lr / 25 over the first 20% of the steps, then cosine-anneal to almost
    # zero (lr / 2.5e5). The annealed last epochs settle, so the best val epoch is usually a late
    # one; the warm-up keeps the peak learning rate from wrecking the freshly initialised network.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    images = torch.from_numpy(train_images).to(device)
    labels = torch.from_numpy(train_labels.astype(np.int64)).to(device)
    max_shift = max(1, round(train_images.shape[-1] * SHIFT_FRACTION))
    best: tuple[float, float] | None = None  # (val accuracy, -val loss) of the kept weights
    best_state: dict[str, torch.Tensor] = {}
    result = TrainingResult(model, epochs, None)
    with tqdm(total=epochs * steps_per_epoch, desc="classifier", disable=progress_disabled()) as bar:
        for epoch in range(epochs):
            model.train()
            order_rng = torch_generator(seed, "classifier.order", epoch)
            order = torch.cat([torch.randperm(len(images), generator=order_rng) for _ in range(passes)])
            order = order.to(device)
            shifts = torch_generator(seed, "classifier.augment", epoch)
            total_loss = torch.zeros((), device=device)
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch = images[index]
                if augment:
                    batch = random_shift(batch, max_shift, shifts)
                loss = F.cross_entropy(model(batch), labels[index], label_smoothing=label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += loss.detach() * len(index)
                bar.update()
            row = {"epoch": epoch + 1, "loss": float(total_loss) / len(order)}
            if val_images is not None and val_labels is not None:
                logits = predict_logits(model, val_images, device)
                target = torch.from_numpy(val_labels.astype(np.int64))
                row["val_accuracy"] = float((logits.argmax(dim=1) == target).double().mean())
                row["val_loss"] = float(F.cross_entropy(logits, target))
                score = (row["val_accuracy"], -row["val_loss"])
                if best is None or score > best:
                    best = score
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    result.best_epoch, result.val_accuracy = epoch + 1, row["val_accuracy"]
            result.history.append(row)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{row['loss']:.3f}",
                val=f"{row.get('val_accuracy', math.nan):.4f}",
                refresh=False,
            )
            if progress_disabled():
                extra = f" val_accuracy={row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
                print(f"classifier epoch {epoch + 1}: loss={row['loss']:.4f}{extra}", flush=True)
    if best_state:
        model.load_state_dict(best_state)
    model.eval()
    return result


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
            f"{path}: not a ganpipe classifier ({type(exc).__name__}); rerun `dvc repro classifier`"
        ) from None
    return model.to(device).eval()


def evaluate(
    model: DomainClassifier, images: np.ndarray, labels: np.ndarray, device: torch.device | str = "cpu"
) -> dict[str, float | None]:
    """Accuracy, balanced accuracy and macro one-vs-rest ROC AUC of uint8 images against labels.

    Balanced accuracy and AUC matter on imbalanced medical sets (PneumoniaMNIST is 3:1), where
    accuracy alone rewards predicting the majority class. Balanced accuracy is the mean recall over
    the classes present in `labels` (sklearn's definition). The AUC averages the classes that have both
    positives and negatives in `labels` (sklearn's one-vs-rest macro AUC when all do); None if none do.
    """
    from sklearn.metrics import roc_auc_score

    if len(images) == 0:
        return {"accuracy": None, "balanced_accuracy": None, "auc": None}
    probs = predict_logits(model, images, device).softmax(dim=1).double().numpy()
    predicted = probs.argmax(axis=1)
    aucs = [
        roc_auc_score(labels == k, probs[:, k])
        for k in range(model.n_classes)
        if 0 < int((labels == k).sum()) < len(labels)
    ]
    recalls = [(predicted[labels == k] == k).mean() for k in np.unique(labels)]
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc": float(np.mean(aucs)) if aucs else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def train_and_evaluate(params: dict[str, Any]) -> dict[str, Any]:
    """The classifier stage: train on the processed train split, select on val, report on test."""
    info = read_info()
    train_images, train_labels = read_split(paths.PROCESSED_TRAIN)
    val_images, val_labels = read_split(paths.PROCESSED_VAL)
    has_val = len(val_images) > 0  # a tiny data.limit can leave the val split empty
    test_images, test_labels = read_split(paths.PROCESSED_TEST)
    cfg = params["classifier"]
    n_classes = int(info["n_classes"])
    device = resolve_device("auto")
    start = time.perf_counter()
    result = train_classifier(
        train_images,
        train_labels,
        n_classes,
        val_images=val_images if has_val else None,
        val_labels=val_labels if has_val else None,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        dropout=cfg["dropout"],
        label_smoothing=cfg["label_smoothing"],
        augment=cfg["augment"],
        # The measuring instrument is the same for every experiment on the data, whatever its seed.
        seed=DATASET_SEED,
        device=device,
    )
    train_seconds = time.perf_counter() - start
    model = result.model
    test = evaluate(model, test_images, test_labels, device)
    metrics = {
        "test_accuracy": _round(test["accuracy"]),
        "test_balanced_accuracy": _round(test["balanced_accuracy"]),
        "test_auc": _round(test["auc"]),
        "val_accuracy": _round(result.val_accuracy),
        "train_accuracy": _round(accuracy(model, train_images, train_labels, device)),
        "epochs": cfg["epochs"],
        "best_epoch": result.best_epoch,
        "n_train": len(train_images),
        "n_val": len(val_images),
        "n_test": len(test_images),
        "n_classes": n_classes,
        "train_time_s": round(train_seconds, 1),
    }
    save_classifier(paths.CLASSIFIER_WEIGHTS, model)
    write_json(paths.CLASSIFIER_METRICS, metrics)
    return metrics
