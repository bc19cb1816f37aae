"""Image grids: uint8 N×C×H×W arrays to one PNG."""

from __future__ import annotations

import os

import numpy as np

from ganpipe.pipeline.processed import check_images


def make_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, C, H, W) into one (H', W', C) array, `nrow` images per row."""
    check_images(images, "images to tile")
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    grid = np.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value, np.uint8)
    for index, image in enumerate(images):
        row, col = divmod(index, ncol)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return grid.transpose(1, 2, 0)


def save_grid(path: str | os.PathLike[str], images: np.ndarray, nrow: int = 8) -> None:
    """Write a grid of uint8 (N, C, H, W) images as a PNG, atomically."""
    from PIL import Image

    from ganpipe.pipeline.io import atomic_open

    grid = make_grid(images, nrow=nrow)
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    with atomic_open(path, "wb") as handle:
        picture.save(handle, format="PNG")
