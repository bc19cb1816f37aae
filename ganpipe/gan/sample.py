"""Draw a fixed-seed set of generated images for scoring, from the final (or EMA) generator.

A conditional generator also gets labels (`sample.labels`: the training split's class frequencies,
or balanced), drawn from their own stream and saved beside the images as `labels`. Samples of an
unconditional generator carry no labels: what the classifier says about them is the score stage's
`predicted` labels, never stored as if they were conditioning labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ganpipe.data.labels import class_prior, draw_labels, label_distribution
from ganpipe.gan.models import generator_from_checkpoint, to_uint8
from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.images import save_grid
from ganpipe.pipeline.io import load_torch, save_npz
from ganpipe.pipeline.processed import read_labels
from ganpipe.pipeline.stage import progress_disabled
from ganpipe.pipeline.streams import torch_generator

GRID_COUNT = 64


def load_sampling_generator(device: torch.device) -> torch.nn.Module:
    """The EMA generator when training kept one, else the final generator."""
    path = paths.GENERATOR_EMA if paths.GENERATOR_EMA.exists() else paths.GENERATOR
    return generator_from_checkpoint(load_torch(path)).to(device)


@torch.no_grad()
def generate(
    generator: torch.nn.Module,
    count: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    labels: torch.Tensor | None = None,
    stream: str = "sample.noise",
) -> np.ndarray:
    """`count` uint8 images (N, C, H, W); the noise depends only on (`seed`, `stream`), not on the
    batch size. `labels` (count,) condition a conditional generator."""
    noise = torch.randn(count, generator.config["nz"], generator=torch_generator(seed, stream))
    batches = range(0, count, batch_size)
    chunks = []
    for start in tqdm(batches, desc="sample", unit="batch", disable=progress_disabled()):
        z = noise[start : start + batch_size].to(device)
        if labels is None:
            chunks.append(to_uint8(generator(z)).cpu())
        else:
            chunks.append(to_uint8(generator(z, labels[start : start + batch_size].to(device))).cpu())
    return torch.cat(chunks).numpy()


def conditioning_labels(
    generator: torch.nn.Module, mode: str, count: int, seed: int, stream: str = "sample.labels"
) -> torch.Tensor | None:
    """`count` labels for a conditional generator (None for an unconditional one): from the training
    split's class frequencies (`prior`) or balanced over its classes (`uniform`)."""
    if generator.config.get("conditional", "none") == "none":
        return None
    prior = class_prior(read_labels(paths.PROCESSED_TRAIN), generator.config["n_classes"])
    return draw_labels(label_distribution(mode, prior), count, torch_generator(seed, stream))


def sample(params: dict[str, Any]) -> None:
    cfg = params["sample"]
    device = (
        resolve_device()
    )  # sampling is a measurement: the GPU when there is one (ganpipe.pipeline.device)
    generator = load_sampling_generator(device)
    labels = conditioning_labels(generator, cfg["labels"], cfg["num_samples"], params["seed"])
    images = generate(generator, cfg["num_samples"], cfg["batch_size"], params["seed"], device, labels)
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels.numpy()}
    save_npz(paths.SAMPLES, **arrays)
    save_grid(paths.SAMPLE_GRID, images[:GRID_COUNT], nrow=8)
