"""Class labels for conditional GANs: the class prior, label draws, and which data can be conditioned on.

Training draws the generator's labels from the training split's class frequencies (the prior), so a
conditional generator sees classes as often as the critic sees them in real batches. Sampling and the
export draw from the prior or from a balanced distribution (`sample.labels`, `export.labels`).

Multi-label data (ChestMNIST) is refused for conditional training: preprocess maps each image to its
first positive label or an extra "none" class, which is a fine histogram key but no class to
generate — "first positive finding" conditions on the order of MedMNIST's label columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganpipe.data.base import MULTI_LABEL
from ganpipe.pipeline.errors import ParamsError

NO_CONDITIONING = "none"
LABEL_MODES = ("prior", "uniform")


def is_conditional(model_cfg: dict[str, Any]) -> bool:
    """Whether a `models.<m>` entry trains a class-conditional GAN."""
    return model_cfg.get("conditional", NO_CONDITIONING) != NO_CONDITIONING


def class_prior(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """float64 class frequencies (n_classes,) of int labels (N,)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]
    return torch.from_numpy(counts / max(int(counts.sum()), 1))


def label_distribution(mode: str, prior: torch.Tensor) -> torch.Tensor:
    """The distribution labels are drawn from: the prior, or uniform over the classes that the
    training split has (a class without a training image cannot have been learnt)."""
    if mode == "prior":
        return prior
    if mode == "uniform":
        present = (prior > 0).to(prior.dtype)
        return present / present.sum()
    raise ValueError(f"label mode must be one of {', '.join(LABEL_MODES)}, got {mode!r}")


def draw_labels(probs: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` int64 labels drawn with replacement from `probs` (on the generator's device)."""
    return torch.multinomial(probs.float(), count, replacement=True, generator=generator)


def check_conditional_data(params: dict[str, Any], info: dict[str, Any]) -> None:
    """Refuse conditional training where the labels are no classes to condition on."""
    model = params["model"]
    mode = params["models"][model].get("conditional", NO_CONDITIONING)
    if mode == NO_CONDITIONING:
        return
    if info.get("task") == MULTI_LABEL:
        raise ParamsError(
            f"params.yaml: models.{model}.conditional = {mode!r} needs single-label data, but "
            f"{info.get('name')} is multi-label ({MULTI_LABEL}); set models.{model}.conditional=none"
        )
    if info["n_classes"] < 2:
        raise ParamsError(
            f"params.yaml: models.{model}.conditional = {mode!r} needs at least 2 classes, "
            f"{info.get('name')} has {info['n_classes']}; set models.{model}.conditional=none"
        )
