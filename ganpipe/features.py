"""Feature extractors for the metrics, plugged into torch-fidelity.

Two extractors, both torch-fidelity `FeatureExtractorBase` classes so that every metric is computed
by torch-fidelity's own code on their features:

- `ganpipe-domain`: the domain classifier (ganpipe.classifier), registered here. Its penultimate
  layer (`features`) feeds FID, KID and precision/recall; its `logits` feed the Inception Score.
- `inception-v3-compat`: torch-fidelity's standard InceptionV3 (`2048`, `logits_unbiased`), the one
  comparable with published numbers. Its weights come from GitHub, so `ensure_inception_weights`
  resolves them up front and fails in one line when they cannot be had.

torch-fidelity feeds extractors uint8 3×H×W batches; `ImageArrayDataset` turns ganpipe's uint8
(N, C, H, W) arrays into that (grayscale repeated to 3 channels), and the domain extractor turns
them back into the classifier's channels and size.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ganpipe.classifier import load_classifier
from ganpipe.errors import GanpipeError
from ganpipe.processed import check_images
from ganpipe.stage import progress_disabled

DOMAIN = "ganpipe-domain"
INCEPTION = "inception-v3-compat"

INCEPTION_URL = URL_INCEPTION_V3
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]
# torch.hub convention: the hex digits after the last '-' of the file name start its SHA-256.
INCEPTION_SHA256_PREFIX = INCEPTION_FILE.rsplit("-", 1)[-1].split(".")[0]
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Extractor:
    """How ganpipe uses one torch-fidelity extractor."""

    key: str  # reference file stem (data/reference/<key>.npz)
    name: str  # torch-fidelity registry name
    feature_layer: str  # for FID, KID, precision/recall
    logits_layer: str  # for the Inception Score
    prefix: str  # prefix of its keys in metrics/scores.json


EXTRACTORS = {
    "domain": Extractor("domain", DOMAIN, "features", "logits", ""),
    "inception": Extractor("inception", INCEPTION, "2048", "logits_unbiased", "inception_"),
}
# torch-fidelity resizes every input to 299×299 with its TF1-compatible bilinear interpolation.
INCEPTION_RESIZER = "tf1x-bilinear-to-299"


class FeatureExtractorDomain(torch_fidelity.FeatureExtractorBase):
    """torch-fidelity extractor around the domain classifier stored at `feature_extractor_weights_path`."""

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, features_list)
        vassert(feature_extractor_weights_path is not None, f"{name} needs feature_extractor_weights_path")
        self.classifier = load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros((1, 3, 28, 28), dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vassert(
            torch.is_tensor(x) and x.dtype == torch.uint8,
            "Expecting image as torch.Tensor with dtype=torch.uint8",
        )
        vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
        images = x.float()
        if self.classifier.in_channels == 1:
            # Grayscale reached torch-fidelity repeated to 3 channels: their mean is the original.
            images = images.mean(dim=1, keepdim=True)
        size = self.classifier.size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        features = self.classifier.features(images)
        out = {"features": features, "logits": self.classifier.head(features)}
        return tuple(out[name] for name in self.features_list)


if DOMAIN not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(DOMAIN, FeatureExtractorDomain)


def describe_resizer(extractor: Extractor, module: torch.nn.Module, image_size: int) -> str:
    """The resize an extractor applies to `image_size` inputs, recorded with every score (it changes them)."""
    if extractor.name == INCEPTION:
        return INCEPTION_RESIZER
    if image_size == module.classifier.size:
        return "none"
    return f"bilinear-antialias-{image_size}-to-{module.classifier.size}"


class ImageArrayDataset(Dataset):
    """uint8 (N, C, H, W) array as the Dataset torch-fidelity wants: bare uint8 3×H×W tensors."""

    def __init__(self, images: np.ndarray) -> None:
        check_images(images, "images to score")
        self.images = torch.from_numpy(np.ascontiguousarray(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def create_extractor(
    extractor: Extractor, weights_path: str | os.PathLike[str], device: torch.device
) -> torch_fidelity.FeatureExtractorBase:
    """Instantiate through torch-fidelity's registry, with both layers ganpipe needs."""
    module = create_feature_extractor(
        extractor.name,
        [extractor.feature_layer, extractor.logits_layer],
        cuda=False,
        feature_extractor_weights_path=str(weights_path),
        verbose=False,
    )
    return module.to(device)


def extract_features(
    module: torch_fidelity.FeatureExtractorBase,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """torch-fidelity's feature extraction of uint8 images; {layer name: (N, D) float32 CPU tensor}."""
    return get_featuresdict_from_dataset(
        ImageArrayDataset(images),
        module,
        batch_size,
        device.type == "cuda",
        True,  # save_cpu_ram: no DataLoader worker processes for an in-memory array
        progress and not progress_disabled(),
    )


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as a short single line (torch's state-dict errors list hundreds of keys)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_inception_file(path: Path, hint: str) -> None:
    """Refuse anything but torch-fidelity's inception-v3-compat state dict, before any stage uses it.

    The weights_only load refuses pickled code first: torch-fidelity itself unpickles the file fully.
    """
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=str(path))
    except Exception as exc:  # missing file, not a torch file, pickled code, other architecture
        raise GanpipeError(f"{path}: not usable as Inception weights ({_one_line(exc)}); {hint}") from None


def inception_cache_path() -> Path:
    """Where torch-fidelity's own download puts the weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def ensure_inception_weights(score_params: dict[str, Any]) -> str | None:
    """Path of the Inception weights when `score.inception` is on, else None; fails fast when unavailable.

    Called by the download stage so that a machine without network stops in the first seconds, not
    after training. Order: `score.inception_weights` (a local file), then torch-fidelity's cache,
    then torch-fidelity's download URL with a short timeout.
    """
    if not score_params.get("inception"):
        return None
    local = score_params.get("inception_weights")
    hint = (
        f"download {INCEPTION_URL} and place it at {inception_cache_path()} or set score.inception_weights "
        f"to its path, or set score.inception=false"
    )
    if local:
        _check_inception_file(Path(local), hint)
        return str(local)
    target = inception_cache_path()
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            torch.hub.download_url_to_file(
                INCEPTION_URL,
                str(target),
                hash_prefix=INCEPTION_SHA256_PREFIX,
                progress=not progress_disabled(),
            )
        except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "no usable download"
            raise GanpipeError(
                f"Inception weights could not be downloaded ({_one_line(exc)}); {hint}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    _check_inception_file(target, hint)
    return str(target)


