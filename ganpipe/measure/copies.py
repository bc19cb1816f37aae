"""The copy search: each image's distance to its nearest training image up to what a copier would do
to it: a shift of up to `max_shift` pixels, the flips in `flips`, and any change of brightness or
contrast.

Pixels, not features: a feature extractor is invariant to whatever it was trained to ignore and to
nothing else (the domain classifier sees a one-pixel shift of a digit as a new image). Two steps:

1. Candidates. Every image gets a descriptor that those changes move little or not at all: the
   magnitude of the 2-D Fourier transform of its standardised luminance (standardising: blind to
   brightness and contrast), faded to 0 at the border by a Hann window first (the magnitude ignores
   a circular shift; the window keeps the new pixels a real shift brings in at the border from
   moving it much), summed with its mirror image across one frequency axis (the same for an image
   and its horizontal or vertical flip), at the `DESCRIPTOR_FREQUENCIES` lowest frequencies. The
   `CANDIDATES` training images nearest in that space are the candidates: the whole training split
   is searched, in chunks.
2. Distance. For each candidate, the Pearson correlation of the two images' central crops (the
   border of `max_shift` pixels cut off), maximised over every shift and flip of the query; the copy
   distance is sqrt(2 - 2 * correlation), 0 for a copy under any of those changes and about 1.4 for
   unrelated images. Standardising each crop makes it blind to brightness and contrast.

Images larger than `WORKING_SIDE` pixels are average-pooled to it first, and the shift is in those
working pixels: `max_shift` 2 undoes 2 px at 28 px, 8 px at 128 px (pooled by 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganpipe.pipeline.errors import GanpipeError

FLIPS = ("horizontal", "vertical")
DESCRIPTOR_FREQUENCIES = 8  # frequencies 0..7 along each axis: 63 numbers (the constant term is 0)
# Nearest training images in descriptor space, re-ranked by the exact search. On 30k PathMNIST-shaped
# textures, a copy shifted by (2, -2) px is among the 8 nearest for 95%, the 32 nearest for 98%.
CANDIDATES = 32
WORKING_SIDE = 32  # larger images are average-pooled to at most this many pixels a side
CHUNK_ELEMENTS = 1 << 24  # elements of one block of descriptor distances or correlations
MIN_SPREAD = 1e-3  # a crop whose pixels spread less (root sum of squares, grey levels) is constant


def working_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) as float32, average-pooled by the largest integer factor that brings the side
    to at most WORKING_SIDE and divides it (MedMNIST's 64, 128, 224: to 32)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    side = x.shape[-1]
    factor = next(f for f in range(-(-side // WORKING_SIDE), side + 1) if side % f == 0)
    return torch.nn.functional.avg_pool2d(x, factor) if factor > 1 else x


def _standardised(x: torch.Tensor) -> torch.Tensor:
    """Rows of zero mean and unit norm (a constant row stays 0), so a dot product is a correlation."""
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _dft_rows(side: int, frequencies: list[int]) -> torch.Tensor:
    """The rows of the `side`-point DFT matrix at `frequencies`: (len(frequencies), side) complex64."""
    angle = -2.0 * np.pi * np.outer(frequencies, np.arange(side)) / side
    return torch.from_numpy(np.exp(1j * angle).astype(np.complex64))


def descriptors(x: torch.Tensor) -> torch.Tensor:
    """The shift-, flip- and intensity-invariant descriptor of working images (N, C, H, W): (N, 63)."""
    luminance = x.mean(dim=1)
    height, width = luminance.shape[1:]
    window = (
        torch.hann_window(height + 2, periodic=False)[1:-1, None]
        * torch.hann_window(width + 2, periodic=False)[None, 1:-1]
    )
    flat = _standardised(luminance.flatten(1)).view_as(luminance) * window
    # Only the lowest frequencies are kept, so two small DFT matrix products beat a full FFT: rows at
    # u = 0..7 and -7..-1, columns at v = 0..7.
    low = list(range(DESCRIPTOR_FREQUENCIES))
    rows = _dft_rows(height, low + [height - u for u in low[1:]])
    columns = _dft_rows(width, low)
    magnitude = torch.einsum("uy,nyx,vx->nuv", rows, flat.to(torch.complex64), columns).abs()
    # |F(-u, v)| is |F(u, v)| of the flipped image (either flip, the image being real); the sum is the
    # same for an image and its flips. Row 0 pairs with itself.
    opposite = torch.cat([magnitude[:, :1], magnitude[:, DESCRIPTOR_FREQUENCIES:]], dim=1)
    symmetric = magnitude[:, :DESCRIPTOR_FREQUENCIES] + opposite
    return symmetric.flatten(1)[:, 1:].sqrt()  # the square root keeps the largest from drowning the rest


def candidates(queries: torch.Tensor, reference: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (Nq, count) of the `count` reference descriptors nearest each query descriptor."""
    count = min(count, len(reference))
    norms = (reference * reference).sum(dim=1)
    rows = max(1, CHUNK_ELEMENTS // len(reference))
    out = []
    for start in range(0, len(queries), rows):
        block = queries[start : start + rows]
        squared = norms[None, :] - 2.0 * block @ reference.T  # |q|^2 is the same along a row
        out.append(torch.topk(squared, count, dim=1, largest=False).indices)
    return torch.cat(out)


def _central(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The standardised, flattened crop of x (N, C, H, W) without its border of max_shift pixels."""
    height, width = x.shape[2] - 2 * max_shift, x.shape[3] - 2 * max_shift
    return _standardised(x[:, :, max_shift : max_shift + height, max_shift : max_shift + width].flatten(1))


def _flips(x: torch.Tensor, flips: tuple[str, ...]) -> list[torch.Tensor]:
    """x and each of its flips (both flips: 4 images)."""
    images = [x]
    if "horizontal" in flips:
        images.append(torch.flip(x, dims=[3]))
    if "vertical" in flips:
        images += [torch.flip(image, dims=[2]) for image in list(images)]
    return images


def _correlations(
    x: torch.Tensor, crops: torch.Tensor, max_shift: int, flips: tuple[str, ...]
) -> torch.Tensor:
    """For each image of x (n, C, H, W) and each of its candidates' central crops (n, K, D),
    standardised, the largest Pearson correlation over every crop of the image shifted by up to
    max_shift pixels and of its flips: (n, K).

    The crops' zero mean makes the numerator a plain dot product with the image's raw crop (its mean
    drops out): a cross-correlation, one grouped convolution per flip with each image's candidates as
    its filters (44 times faster than im2col and a batched product on the CPU); each crop's own spread
    comes from box sums of x and x^2, in float64 (no cancellation at 255^2 D).
    """
    count, channels = x.shape[:2]
    height, width = x.shape[2] - 2 * max_shift, x.shape[3] - 2 * max_shift
    size = channels * height * width
    filters = crops.reshape(count * crops.shape[1], channels, height, width)
    wide = x.double()
    sums = torch.nn.functional.avg_pool2d(wide, (height, width), stride=1).sum(dim=1) * (height * width)
    squares = torch.nn.functional.avg_pool2d(wide * wide, (height, width), stride=1).sum(dim=1)
    # (n, 1, shifts, shifts); a flip of the image flips this map of its crops' spreads the same way.
    spread = (squares * (height * width) - sums * sums / size).clamp_min(0.0).sqrt().float()[:, None]
    best = torch.full(crops.shape[:2], -1.0)
    for image, image_spread in zip(_flips(x, flips), _flips(spread, flips), strict=True):
        numerator = torch.nn.functional.conv2d(image.reshape(1, -1, *x.shape[2:]), filters, groups=count)
        norms = image_spread.flatten(1)[:, None, :]  # (n, 1, positions)
        # A constant crop (a blank sample) correlates with nothing: 0, not rounding error over 0.
        numerator = numerator.view(count, crops.shape[1], -1)
        correlation = torch.where(norms > MIN_SPREAD, numerator / norms.clamp_min(MIN_SPREAD), 0.0)
        best = torch.maximum(best, correlation.amax(dim=2))
    return best


@dataclass(frozen=True)
class CopyMatches:
    """Each query's copy distance to its nearest training image (N,), and that image's index."""

    distances: np.ndarray
    indices: np.ndarray


class CopySearch:
    """The training side of the copy search, computed once: the central crop and the descriptor of
    every training image."""

    def __init__(self, train: np.ndarray, max_shift: int, flips: tuple[str, ...]) -> None:
        self.max_shift, self.flips = max_shift, flips
        working = working_images(train)
        if min(working.shape[2:]) <= 2 * max_shift:
            raise GanpipeError(
                f"params.yaml: privacy.copy_shift = {max_shift} leaves nothing of {tuple(working.shape[2:])} "
                "working images; lower it"
            )
        self.train_crops = _central(working, max_shift)
        self.train_descriptors = descriptors(working)

    def nearest(self, images: np.ndarray) -> CopyMatches:
        """The copy distance of every image to its nearest training image."""
        x = working_images(images)
        found = candidates(descriptors(x), self.train_descriptors, CANDIDATES)
        best = torch.empty(len(x))
        best_index = torch.empty(len(x), dtype=torch.int64)
        positions = (2 * self.max_shift + 1) ** 2
        rows = max(1, CHUNK_ELEMENTS // (positions * self.train_crops.shape[1]))
        for start in range(0, len(x), rows):
            stop = min(start + rows, len(x))
            chosen = found[start:stop]
            correlation = _correlations(x[start:stop], self.train_crops[chosen], self.max_shift, self.flips)
            value, position = correlation.max(dim=1)
            best[start:stop] = value
            best_index[start:stop] = chosen.gather(1, position[:, None])[:, 0]
        distances = torch.sqrt((2.0 - 2.0 * best.double()).clamp_min(0.0))
        return CopyMatches(distances.numpy(), best_index.numpy())
