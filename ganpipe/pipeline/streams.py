"""Named random streams: every random draw in ganpipe comes from a generator derived from
(seed, stream name, and the epoch where one applies).

Ad-hoc offsets (`seed + 1`, `seed + 3 + epoch`, ...) let streams collide: the evaluation noise of one
epoch was the sampling noise of another seed. Here each stream's seed is a hash of its whole key
(numpy's SeedSequence over the seed, a digest of the name and the epoch), so no two keys share a
stream. Names must be listed in STREAMS: a typo fails loudly instead of opening a new stream, and the
collision test covers every stream that exists.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a torch stream is made: download, preprocess and plots
    import torch  # draw only from numpy streams, and skip its ~2 s import

# Every stream in the project. Add a name here to draw from a new stream.
STREAMS = (
    "preprocess.subset.train",  # data.limit subset of the train split
    "preprocess.subset.val",  # data.limit subset of the val split
    "preprocess.subset.test",  # data.limit subset of the test split
    "classifier.weights",  # domain classifier: initial weights (global torch RNG)
    "classifier.order",  # domain classifier: batch order per epoch
    "classifier.augment",  # domain classifier: random shifts of the training batches, per epoch
    "classifier.dropout",  # domain classifier: dropout masks (global torch RNG, seeded after init)
    "reference.subset",  # real images of the scoring reference
    "reference.floor",  # the disjoint real set of the noise floor
    "reference.heldout",  # real images of the held-out reference (the val split)
    "train_reference.subset",  # real images of the FID-during-training reference
    "train.weights",  # GAN initial weights and dropout (global torch, numpy and python RNGs)
    "train.noise",  # GAN training noise and penalty mixing weights (checkpointed)
    "train.order",  # GAN data order, per epoch
    "train.rank",  # data-parallel training: each rank's global RNGs (dropout), per rank
    "train.fixed_noise",  # the 16 fixed-noise samples of the epoch-progression grid
    "train.eval_noise",  # FID-during-training samples, per epoch
    "train.ema_statistics",  # noise that re-estimates the EMA generator's batch norms, per epoch
    "sample.noise",  # the scored samples
    "sample.labels",  # conditioning labels of the scored samples (conditional models)
    "train.eval_labels",  # conditioning labels of the FID-during-training samples, per epoch
    "export.noise",  # the exported synthetic dataset's images
    "export.labels",  # the exported synthetic dataset's labels
    "plots.real_grid",  # the real images beside the final samples
    "utility.subset",  # utility arms: low-data and synthetic subsets, per run
    "utility.seed",  # utility arms: the classifier seed of each run
    "privacy.train",  # privacy audit: the training images it compares with
    "privacy.heldout",  # privacy audit: the held-out (val) images and the disjoint null set
)

_MASK_63 = (1 << 63) - 1


def _name_words(name: str) -> list[int]:
    digest = hashlib.sha256(name.encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def stream_seed(seed: int, name: str, epoch: int | None = None) -> int:
    """A 63-bit seed for stream `name` of experiment seed `seed` (and `epoch`, for per-epoch streams)."""
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; add it to ganpipe.pipeline.streams.STREAMS")
    if seed < 0 or (epoch is not None and epoch < 0):
        raise ValueError(f"stream seeds need seed >= 0 and epoch >= 0, got seed={seed}, epoch={epoch}")
    # The epoch slot is 0 for stream-wide draws and epoch + 1 otherwise, so epoch 0 != no epoch.
    entropy = [seed, *_name_words(name), 0 if epoch is None else epoch + 1]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint64)
    return int(state[0]) & _MASK_63


def torch_generator(
    seed: int, name: str, epoch: int | None = None, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A torch.Generator on `device` for one stream."""
    import torch

    return torch.Generator(device).manual_seed(stream_seed(seed, name, epoch))


def numpy_rng(seed: int, name: str, epoch: int | None = None) -> np.random.Generator:
    """A numpy Generator for one stream."""
    return np.random.default_rng(stream_seed(seed, name, epoch))


def seed_globals(seed: int, name: str) -> None:
    """Seed torch's, numpy's and python's global RNGs from one stream, for code that draws from them
    (weight initialisation, dropout, torch's DataLoader)."""
    import torch

    value = stream_seed(seed, name)
    torch.manual_seed(value)
    np.random.seed(value & 0xFFFF_FFFF)
    random.seed(value)
