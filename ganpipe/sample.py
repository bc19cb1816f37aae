"""Draw a fixed-seed set of generated images for scoring, from the final (or EMA) generator."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ganpipe import paths
from ganpipe.device import resolve_device
from ganpipe.images import save_grid
from ganpipe.io import load_torch, save_npz
from ganpipe.models import generator_from_checkpoint, to_uint8
from ganpipe.stage import progress_disabled
from ganpipe.streams import torch_generator

GRID_COUNT = 64


def load_sampling_generator(device: torch.device) -> torch.nn.Module:
    """The EMA generator when training kept one, else the final generator."""
    path = paths.GENERATOR_EMA if paths.GENERATOR_EMA.exists() else paths.GENERATOR
    return generator_from_checkpoint(load_torch(path)).to(device)


@torch.no_grad()
def generate(
    generator: torch.nn.Module, count: int, batch_size: int, seed: int, device: torch.device
) -> np.ndarray:
    """`count` uint8 images (N, C, H, W); the noise depends only on `seed`, not on the batch size."""
    noise = torch.randn(count, generator.config["nz"], generator=torch_generator(seed, "sample.noise"))
    batches = range(0, count, batch_size)
    chunks = [
        to_uint8(generator(noise[start : start + batch_size].to(device))).cpu()
        for start in tqdm(batches, desc="sample", unit="batch", disable=progress_disabled())
    ]
    return torch.cat(chunks).numpy()


def sample(params: dict[str, Any]) -> None:
    cfg = params["sample"]
    device = resolve_device()  # sampling is a measurement: the GPU when there is one (ganpipe.device)
    generator = load_sampling_generator(device)
    images = generate(generator, cfg["num_samples"], cfg["batch_size"], params["seed"], device)
    save_npz(paths.SAMPLES, images=images)
    save_grid(paths.SAMPLE_GRID, images[:GRID_COUNT], nrow=8)
