"""The pixel copy search (ganpipe.measure.copies): each transform a copier would use, undone; the fast
correlation against a brute-force one; the descriptor's invariances."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from planted import brighter, flipped, shifted, textures

from ganpipe.measure.copies import CopySearch, _correlations, descriptors, working_images
from ganpipe.pipeline.errors import GanpipeError

FLIPS = ("horizontal", "vertical")


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return textures(2_000, seed=0)[0]


def low_contrast(images: np.ndarray) -> np.ndarray:
    """Half the contrast around mid-grey: a change of both contrast and brightness."""
    return (images.astype(np.float64) * 0.5 + 64).round().astype(np.uint8)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exact": lambda images: images,
    "shift (0, 1)": lambda images: shifted(images, 0, 1),
    "shift (-1, 0)": lambda images: shifted(images, -1, 0),
    "shift (2, -2)": lambda images: shifted(images, 2, -2),
    "shift (-2, 2)": lambda images: shifted(images, -2, 2),
    "horizontal flip": flipped,
    "vertical flip": lambda images: np.ascontiguousarray(images[:, :, ::-1]),
    "both flips, shifted 1 px": lambda images: shifted(np.ascontiguousarray(images[:, :, ::-1, ::-1]), 1, 1),
    "10% brighter": brighter,
    "half the contrast": low_contrast,
}


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_each_copier_transform_is_undone(train: np.ndarray, transform: str) -> None:
    search = CopySearch(train, 2, FLIPS)
    picked = np.arange(0, 2_000, 20)  # 100 training images
    found = search.nearest(TRANSFORMS[transform](train[picked]))
    unrelated = search.nearest(textures(100, seed=1)[0]).distances
    matched = found.indices == picked
    assert matched.mean() >= 0.97, f"{transform}: {matched.mean():.2f} of the copies found"
    # A copy under a real shift or rounding is not at 0, but far below any unrelated image.
    assert np.median(found.distances[matched]) < 0.1 * np.median(unrelated)
    assert found.distances[matched].max() < unrelated.min()


def test_flips_are_undone_only_when_asked(train: np.ndarray) -> None:
    copies = flipped(train[:100])
    without = CopySearch(train, 2, ()).nearest(copies).distances
    with_flips = CopySearch(train, 2, ("horizontal",)).nearest(copies).distances
    assert np.median(with_flips) < 0.1 * np.median(without)


def brute_force(x: torch.Tensor, crops: torch.Tensor, max_shift: int) -> np.ndarray:
    """Every shifted crop of every flip, standardised one by one, against every crop."""
    images, crops = x.double().numpy(), crops.double().numpy()
    side = x.shape[-1] - 2 * max_shift
    out = np.full(crops.shape[:2], -1.0)
    for i, image in enumerate(images):
        for variant in (image, image[:, :, ::-1], image[:, ::-1, :], image[:, ::-1, ::-1]):
            for dy in range(2 * max_shift + 1):
                for dx in range(2 * max_shift + 1):
                    crop = variant[:, dy : dy + side, dx : dx + side].ravel()
                    crop = crop - crop.mean()
                    out[i] = np.maximum(out[i], crops[i] @ (crop / np.linalg.norm(crop)))
    return out


def test_the_correlation_equals_a_brute_force_search(train: np.ndarray) -> None:
    search = CopySearch(train[:50], 2, FLIPS)
    x = working_images(np.concatenate([textures(3, seed=2)[0], shifted(train[:3], 1, -2)]))
    crops = search.train_crops[torch.arange(50)[None].repeat(len(x), 1)]
    fast = _correlations(x, crops, 2, FLIPS).numpy()
    np.testing.assert_allclose(fast, brute_force(x, crops, 2), atol=1e-5)
    assert (fast[3:, :3].diagonal() > 0.9).all()  # the shifted copies against their originals


def test_the_descriptor_ignores_flips_brightness_and_contrast(train: np.ndarray) -> None:
    x = working_images(train[:50])
    reference = descriptors(x)
    for changed in (x.flip(3), x.flip(2), x.flip(2).flip(3), 0.5 * x + 40.0):
        torch.testing.assert_close(descriptors(changed), reference, atol=1e-3, rtol=1e-3)
    assert (descriptors(working_images(textures(50, seed=3)[0])) - reference).abs().max() > 0.1


def test_a_blank_sample_copies_nothing(train: np.ndarray) -> None:
    blank = np.full((2, 3, 28, 28), 200, np.uint8)
    distances = CopySearch(np.concatenate([train[:20], blank[:1]]), 2, FLIPS).nearest(blank).distances
    np.testing.assert_allclose(distances, np.sqrt(2.0))  # correlation 0 with every image, blank or not


def test_large_images_are_pooled_and_a_shift_that_leaves_nothing_is_refused() -> None:
    images = np.zeros((2, 1, 128, 128), np.uint8)
    assert working_images(images).shape == (2, 1, 32, 32)
    with pytest.raises(GanpipeError, match=r"privacy\.copy_shift = 14 .*lower it"):
        CopySearch(np.zeros((2, 1, 28, 28), np.uint8), 14, FLIPS)
