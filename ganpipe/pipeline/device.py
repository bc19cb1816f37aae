"""The one device policy of ganpipe.

Training follows `train.device` (auto, cpu or cuda). The measuring stages (classifier, reference,
score) and sampling call `resolve_device("auto")`: they use the GPU when there is one, because their
results are measurements that must not depend on where the GAN happened to train, and on PathMNIST
the classifier alone takes minutes on a small CPU. CPU results are bit-identical between runs; CUDA
results may differ in the last bits.

When several experiments share a machine with several GPUs, the stage holds a lease on one
(`ganpipe.gan.ddp.gpu_lease`), which names it in GANPIPE_CUDA_DEVICE: "cuda" then means that
GPU, so parallel queue workers never pile onto cuda:0.
"""

from __future__ import annotations

import os

import torch

from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.params import DEVICES

LEASE_ENV = "GANPIPE_CUDA_DEVICE"  # set by ganpipe.gan.ddp.gpu_lease: the leased GPU's torch index


def _cuda() -> torch.device:
    leased = os.environ.get(LEASE_ENV)
    return torch.device("cuda", int(leased.split(",")[0])) if leased else torch.device("cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU; `cuda` without a GPU is refused in one line."""
    if name not in DEVICES:
        raise ParamsError(
            f"params.yaml: train.device = {name!r} is not allowed; expected one of {', '.join(DEVICES)}"
        )
    if name == "auto":
        return _cuda() if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params.yaml: train.device = 'cuda' but no CUDA device is available; use auto or cpu"
        )
    return _cuda() if name == "cuda" else torch.device(name)
