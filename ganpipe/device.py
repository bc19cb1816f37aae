"""The one device policy of ganpipe.

Training follows `train.device` (auto, cpu or cuda). The measuring stages (classifier, reference,
score) and sampling call `resolve_device("auto")`: they use the GPU when there is one, because their
results are measurements that must not depend on where the GAN happened to train, and on PathMNIST
the classifier alone takes minutes on a small CPU. CPU results are bit-identical between runs; CUDA
results may differ in the last bits.
"""

from __future__ import annotations

import torch

from ganpipe.errors import ParamsError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU; `cuda` without a GPU is refused in one line."""
    if name not in DEVICES:
        raise ParamsError(
            f"params.yaml: train.device = {name!r} is not allowed; expected one of {', '.join(DEVICES)}"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params.yaml: train.device = 'cuda' but no CUDA device is available; use auto or cpu"
        )
    return torch.device(name)
