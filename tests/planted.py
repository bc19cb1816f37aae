"""PathMNIST-shaped images (3 x 28 x 28 uint8, 9 classes) for the privacy audit's planted copies and its
speed benchmark, and the copies a copier would make of them.

PathMNIST itself (about 90k training patches) cannot be downloaded here, and the shared MNIST set has
10k images, so the images are synthetic: smooth random colour textures, each drawn independently, whose
class sets the colour mix and the grain. Independent draws matter: the audit's null (held-out images
treated as samples) is then exactly what an honest generator would give. They are not tissue, and the
figures they give are about the audit's detectors, not about PathMNIST.
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES = 9
SIDE = 28


def textures(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images (N, 3, 28, 28) uint8 and their labels (N,) int64, from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    noise = torch.randn(count, 3, SIDE, SIDE, generator=generator)
    frequency = torch.fft.fftfreq(SIDE)
    radius = (frequency[:, None] ** 2 + frequency[None, :] ** 2).sqrt()
    # The class sets the grain (the low-pass cut-off) and, below, the colour mix.
    cutoff = (0.06 + 0.03 * (labels % 3).float() + 0.02 * torch.rand(count, generator=generator))[
        :, None, None
    ]
    low_pass = torch.exp(-((radius[None] / cutoff) ** 2))[:, None]
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * low_pass).real
    smooth = smooth / smooth.flatten(1).std(dim=1)[:, None, None, None]
    mixes = torch.eye(3) + 0.6 * torch.randn(CLASSES, 3, 3, generator=torch.Generator().manual_seed(CLASSES))
    coloured = torch.einsum("nij,njhw->nihw", mixes[labels], smooth)
    base = 110.0 + 15.0 * (labels // 3).float()[:, None, None, None]
    images = (base + 30.0 * coloured).clamp(0, 255).round().to(torch.uint8)
    return images.numpy(), labels.numpy().astype(np.int64)


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Each image moved by (dy, dx) pixels, the uncovered border filled from the image's own edge (what
    an image editor's translate does, unlike np.roll's wrap-around)."""
    pad = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    height, width = images.shape[2:]
    return np.ascontiguousarray(padded[:, :, pad - dy : pad - dy + height, pad - dx : pad - dx + width])


def flipped(images: np.ndarray) -> np.ndarray:
    """Each image mirrored left to right."""
    return np.ascontiguousarray(images[..., ::-1])


def brighter(images: np.ndarray, factor: float = 1.1) -> np.ndarray:
    """Each image's intensities times `factor` (+10% brightness by default), clipped to 255."""
    return (images.astype(np.float64) * factor).clip(0, 255).round().astype(np.uint8)
