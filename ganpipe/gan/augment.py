"""DiffAugment (Zhao et al., NeurIPS 2020): the same differentiable augmentation T on every critic input.

The critic sees D(T(x)) for reals and fakes, in critic and generator steps alike, so a critic on a
small dataset cannot memorise the real images, while the generator still gets gradients through T.
The three operations and their ranges are those of mit-han-lab/data-efficient-gans
(`DiffAugment_pytorch.py`):
- `color`: brightness + U(-0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5);
- `translation`: a shift of up to 1/8 of the side in each direction, zero-padded;
- `cutout`: a zeroed square of half the side at a random position.
Every op is differentiable, double backward included (the gradient penalty differentiates through T).

Why buffers: the random parameters of one batch are drawn in one call, `draw(generator)`, from the
checkpointed training generator into a fixed device tensor, and `__call__` is a pure function of that
tensor. So a resumed run draws exactly what an uninterrupted one does, there is no host sync (integer
offsets come from floors of uniform draws on the device), and on CUDA the augmentation is captured
inside the update's CUDA graph with the draw outside it, as the noise is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganpipe.gan.catalog import AUGMENT_OPS

POLICIES = AUGMENT_OPS  # the names live in ganpipe.gan.catalog (params validation reads them)
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
# Columns of the uniform draw per image: brightness, saturation, contrast, shift x, shift y,
# cutout x, cutout y.
DRAWS = 7


class DiffAugment:
    """T for batches of `batch` images of shape (channels, side, side) on `device`, for `policy`."""

    def __init__(self, policy: list[str], batch: int, side: int, device: torch.device | str) -> None:
        unknown = [op for op in policy if op not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment ops {unknown}; use {', '.join(POLICIES)}")
        self.policy = list(policy)
        self.side = side
        self.uniform = torch.zeros(batch, DRAWS, device=device)
        index = torch.arange(side, device=device)
        self.rows = index.view(1, side, 1)
        self.cols = index.view(1, 1, side)
        self.shift = int(side * TRANSLATION_RATIO + 0.5)
        self.cutout = int(side * CUTOUT_RATIO + 0.5)

    def draw(self, generator: torch.Generator) -> None:
        """New random parameters for the next batch, from `generator` (the checkpointed stream)."""
        if self.policy:
            self.uniform.uniform_(generator=generator)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for op in self.policy:
            images = getattr(self, f"_{op}")(images)
        return images

    def _factor(self, column: int) -> torch.Tensor:
        return self.uniform[:, column].view(-1, 1, 1, 1)

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (self._factor(0) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (self._factor(1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._factor(2) + 0.5) + mean

    def _offsets(self, column: int, count: int) -> torch.Tensor:
        """Integers in [0, count) per image, as a (B, 1, 1) tensor: floor of a uniform draw."""
        return (self.uniform[:, column] * count).floor().clamp(max=count - 1).long().view(-1, 1, 1)

    def _translation(self, x: torch.Tensor) -> torch.Tensor:
        shift = self.shift
        dx = self._offsets(3, 2 * shift + 1) - shift
        dy = self._offsets(4, 2 * shift + 1) - shift
        # Gather from the image padded by one zero pixel: out-of-range reads land on the padding.
        padded = F.pad(x, (1, 1, 1, 1))
        rows = (self.rows + dx + 1).clamp(0, self.side + 1)
        cols = (self.cols + dy + 1).clamp(0, self.side + 1)
        batch = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        size = self.cutout
        # The square's centre: as in the reference, side + 1 positions for an even square.
        cx = self._offsets(5, self.side + (1 - size % 2))
        cy = self._offsets(6, self.side + (1 - size % 2))
        # The reference's square spans offset - size//2 .. offset - size//2 + size - 1, clipped to the
        # image (it clamps the indices, which zeroes the same pixels).
        start_r, start_c = cx - size // 2, cy - size // 2
        inside_rows = (self.rows >= start_r) & (self.rows < start_r + size)
        inside_cols = (self.cols >= start_c) & (self.cols < start_c + size)
        keep = ~(inside_rows & inside_cols)
        return x * keep.unsqueeze(1).to(x.dtype)
