"""Feature extractors for the metrics, plugged into torch-fidelity.

The table of extractors (`score.extractors` names) is ganpipe/measure/extractors.py. Every extractor is a
torch-fidelity `FeatureExtractorBase` class, so every metric is computed by torch-fidelity's own code
on its features:

- `ganpipe-domain`: the domain classifier (ganpipe.measure.classifier), registered here. Its penultimate
  layer (`features`) feeds FID, KID and precision/recall; its `logits` feed the Inception Score.
- `inception-v3-compat`: torch-fidelity's standard InceptionV3 (`2048`, `logits_unbiased`), the one
  comparable with published numbers.
- `ganpipe-dinov2-vit-*-14`: torch-fidelity's DINOv2 extractor built from the official checkpoint
  file (torch-fidelity 0.4 can only fetch it through torch.hub from GitHub), registered here.

Weights other than the classifier come from the network, so `resolve_weights` finds them up front
(the download stage) and fails in one line when they cannot be had.

torch-fidelity feeds extractors uint8 3×H×W batches; `ImageArrayDataset` turns ganpipe's uint8
(N, C, H, W) arrays into that (grayscale repeated to 3 channels), and the domain extractor turns
them back into the classifier's channels and size.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ganpipe.measure.classifier import load_classifier
from ganpipe.measure.extractors import DOMAIN, EXTRACTORS, Extractor, weighted_extractors
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.processed import check_images
from ganpipe.pipeline.stage import progress_disabled

__all__ = ["EXTRACTORS", "Extractor"]  # re-exported: the scoring code takes the table from here

DOWNLOAD_TIMEOUT_S = 15.0
DINOV2_PATCH = 14
# The official DINOv2 hub models interpolate their 37×37 (518 px) position embedding to the input's
# grid with bicubic, no antialias, and a scale factor of (grid + 0.1) / 37 (dinov2 hub/backbones.py:
# interpolate_antialias=False, interpolate_offset=0.1; the offset is a historical kludge).
DINOV2_INTERPOLATE_OFFSET = 0.1


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


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The official DINOv2 position embedding (1, 1 + M², D) resampled to a grid×grid input, exactly as
    dinov2's `interpolate_pos_encoding` does it at every forward (see DINOv2_INTERPOLATE_OFFSET).

    timm's own resampling differs (antialiased, by output size), so ganpipe resamples once here and
    builds the timm model at the input size, where timm then uses this embedding unchanged.
    """
    cls, patches = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    side, dim = math.isqrt(patches.shape[1]), patches.shape[2]
    vassert(side * side == patches.shape[1], f"position embedding of {patches.shape[1]} is not a square grid")
    scale = float(grid + DINOV2_INTERPOLATE_OFFSET) / side
    patches = F.interpolate(
        patches.reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(scale, scale),
        mode="bicubic",
        antialias=False,
    )
    vassert(patches.shape[-2:] == (grid, grid), f"resampled position embedding is {tuple(patches.shape)}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat((cls, patches), dim=1).to(pos_embed.dtype)


def build_dinov2(timm_arch: str, weights_path: str | os.PathLike[str], size: int) -> torch.nn.Module:
    """A DINOv2 backbone for size×size inputs from an official checkpoint (dinov2_vits14_pretrain.pth, ...).

    timm's architecture with `num_classes=0`: the output is the CLS token after the final norm, the
    official model's `x_norm_clstoken`. `checkpoint_filter_fn` drops the official `mask_token`; the
    518 px position embedding is resampled the official way. Built on the meta device (random
    initialisation of a ViT costs seconds) and loaded strictly, so a file of another architecture fails.
    """
    import timm  # lazily: only the DINOv2 extractors need it
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    with torch.device("meta"):
        model = timm.create_model(timm_arch, pretrained=False, img_size=size, num_classes=0)
    if "pos_embed" in state:
        state["pos_embed"] = dinov2_pos_embed(state["pos_embed"], size // DINOV2_PATCH)
    model.load_state_dict(checkpoint_filter_fn(state, model), strict=True, assign=True)
    return model


class FeatureExtractorDinoV2Local(FeatureExtractorDinoV2):
    """torch-fidelity's `dinov2-vit-*-14` with the backbone built locally from a weights file.

    torch-fidelity 0.4's class raises NotImplementedError when given `feature_extractor_weights_path`
    and otherwise calls torch.hub.load("facebookresearch/dinov2"), which needs GitHub. This subclass
    replaces only the constructor: `forward` is torch-fidelity's own (float32, TF1-compatible bilinear
    resize to 224, ImageNet mean/std on 0-255, the backbone's CLS-token output), so features match
    torch-fidelity's `dinov2-vit-s-14` given the same weights. Checked offline against a
    re-implementation of the official forward (tests/test_extractors.py); not checked against the
    real hub model and the real weights, which cannot be reached from here.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        feature_extractor_internal_dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        torch_fidelity.FeatureExtractorBase.__init__(self, name, features_list)  # not the hub download
        vassert(feature_extractor_weights_path is not None, f"{name} needs feature_extractor_weights_path")
        vassert(feature_extractor_internal_dtype in ("float32", None), f"{name} computes in float32 only")
        self.feature_extractor_internal_dtype = torch.float32
        extractor = next(e for e in EXTRACTORS.values() if e.name == name)
        self.model = build_dinov2(extractor.timm_arch, feature_extractor_weights_path, self.INPUT_IMAGE_SIZE)
        self.requires_grad_(False)
        self.eval()


def _register() -> None:
    """Register ganpipe's classes under their table names (once per process)."""
    for extractor in EXTRACTORS.values():
        if extractor.key == DOMAIN:
            cls: type[torch_fidelity.FeatureExtractorBase] = FeatureExtractorDomain
        elif extractor.timm_arch:
            cls = FeatureExtractorDinoV2Local
        else:
            continue  # one of torch-fidelity's own, registered by torch-fidelity
        if extractor.name not in FEATURE_EXTRACTORS_REGISTRY:
            torch_fidelity.register_feature_extractor(extractor.name, cls)


_register()


def describe_resizer(extractor: Extractor, module: torch.nn.Module, image_size: int) -> str:
    """The resize an extractor applies to `image_size` inputs, recorded with every score (it changes them)."""
    if extractor.resizer is not None:
        return extractor.resizer
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
    """Instantiate through torch-fidelity's registry, with the layers ganpipe needs."""
    layers = [extractor.feature_layer] + ([extractor.logits_layer] if extractor.logits_layer else [])
    module = create_feature_extractor(
        extractor.name,
        layers,
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


def weights_cache_path(extractor: Extractor) -> Path:
    """Where torch.hub downloads put the weights: $TORCH_HOME/hub/checkpoints/<file>."""
    vassert(extractor.weights_file is not None, f"{extractor.key} has no downloadable weights")
    return Path(torch.hub.get_dir()) / "checkpoints" / extractor.weights_file


def _weights_hint(extractor: Extractor) -> str:
    return (
        f"download {extractor.weights_url} and place it at {weights_cache_path(extractor)} or set "
        f"score.weights.{extractor.key} to its path, or remove {extractor.key} from score.extractors"
    )


def check_weights_file(extractor: Extractor, path: Path) -> None:
    """Refuse anything but weights the extractor loads, before any stage uses them.

    The weights_only load refuses pickled code first (some torch-fidelity extractors unpickle the
    file fully); then the extractor is built from the file on the CPU, as the stages will build it.
    """
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        create_extractor(extractor, path, torch.device("cpu"))
    except Exception as exc:  # missing file, not a torch file, pickled code, other architecture
        raise GanpipeError(
            f"{path}: not usable as {extractor.key} weights ({_one_line(exc)}); {_weights_hint(extractor)}"
        ) from None


def ensure_weights(extractor: Extractor, local: str | None) -> str:
    """Path of an extractor's weights file; fails fast, in one line, when it cannot be had.

    Order: `local` (score.weights.<key>), then torch's cache ($TORCH_HOME/hub/checkpoints/), then
    the download with a short timeout, so that a machine without network stops in seconds.
    """
    if local:
        check_weights_file(extractor, Path(local))
        return str(local)
    target = weights_cache_path(extractor)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            torch.hub.download_url_to_file(
                extractor.weights_url,
                str(target),
                hash_prefix=extractor.sha256_prefix,
                progress=not progress_disabled(),
            )
        except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "no usable download"
            reason = _one_line(exc)
            raise GanpipeError(
                f"{extractor.key} weights could not be downloaded ({reason}); {_weights_hint(extractor)}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
    check_weights_file(extractor, target)
    return str(target)


def resolve_weights(score_params: dict[str, Any]) -> dict[str, str]:
    """{key: weights path} of every extractor in score.extractors but the domain one (whose weights
    are the classifier stage's output), each checked, downloaded where needed. The download stage's
    work: missing weights stop the pipeline before training.
    """
    local = score_params["weights"]
    return {key: ensure_weights(EXTRACTORS[key], local.get(key)) for key in weighted_extractors(score_params)}


def resolved_weights(score_params: dict[str, Any]) -> dict[str, str]:
    """The files `resolve_weights` found, looked up in the same order without network or checks: what
    the reference and score stages use (the reference records their md5, the score compares it)."""
    out = {}
    for key in weighted_extractors(score_params):
        local = score_params["weights"].get(key)
        path = Path(local) if local else weights_cache_path(EXTRACTORS[key])
        if not path.is_file():
            raise run_first(path, "download", f"no {key} weights")
        out[key] = str(path)
    return out
