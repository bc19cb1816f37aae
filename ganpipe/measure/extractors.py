"""The table of feature extractors that `score.extractors` may name.

Plain data without torch: params validation, which every stage runs, reads the names from here.
Keeping the table out of ganpipe/measure/features.py keeps torch-fidelity, timm and the classifier out of
every stage's import closure (and so out of its dvc.yaml code deps): a scoring change must not re-run
preprocess or training. ganpipe/measure/features.py registers the `ganpipe-*` classes and does the work.

Adding one of torch-fidelity's registered extractors is one `Extractor(...)` entry below; an
architecture ganpipe builds itself (like DINOv2 from a local file) also needs its class in features.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DOMAIN = "domain"


@dataclass(frozen=True)
class Extractor:
    """How ganpipe uses one feature extractor."""

    key: str  # its name in score.extractors / score.weights; reference file data/reference/<key>.npz
    name: str  # torch-fidelity registry name (the ganpipe-* ones are registered by ganpipe.measure.features)
    feature_layer: str  # for FID, KID, precision/recall
    logits_layer: str | None  # class logits for the Inception Score; None: no IS keys
    weights_url: str | None  # None: the pipeline makes the weights (the domain classifier)
    weights_file: str | None  # file name under $TORCH_HOME/hub/checkpoints/, as torch.hub names it
    sha256_prefix: str | None  # torch.hub's hash_prefix check of a download; None where unpublished
    resizer: str | None  # what torch-fidelity's forward does to the image size; None: size-dependent
    input_range: str  # the pixel scaling the network sees, recorded with the scores
    timm_arch: str | None = None  # ganpipe's local DINOv2: the timm architecture of the official file

    @property
    def prefix(self) -> str:
        """Prefix of its keys in metrics/scores.json: none for the domain extractor (`fid`, ...)."""
        return "" if self.key == DOMAIN else self.key.replace("-", "_") + "_"


_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{0}/{0}_pretrain.pth"
# torch-fidelity's DINOv2 forward: TF1-compatible bilinear resize to 224, then ImageNet mean/std.
_DINOV2_RESIZER = "tf1x-bilinear-to-224"
_DINOV2_RANGE = "uint8 0-255, resized, then (x - 255*mean) / (255*std) with ImageNet mean/std"


def _dinov2(size: str, model: str, timm_arch: str) -> Extractor:
    return Extractor(
        key=f"dinov2-vit-{size}-14",
        name=f"ganpipe-dinov2-vit-{size}-14",
        feature_layer="dinov2",  # the CLS token after the final norm, as torch-fidelity's
        logits_layer=None,
        weights_url=_DINOV2_URL.format(model),
        weights_file=f"{model}_pretrain.pth",
        sha256_prefix=None,  # Meta publishes no hash in the name
        resizer=_DINOV2_RESIZER,
        input_range=_DINOV2_RANGE,
        timm_arch=timm_arch,
    )


EXTRACTORS: dict[str, Extractor] = {
    extractor.key: extractor
    for extractor in (
        Extractor(
            key=DOMAIN,
            name="ganpipe-domain",
            feature_layer="features",
            logits_layer="logits",
            weights_url=None,
            weights_file=None,
            sha256_prefix=None,
            resizer=None,
            input_range="uint8 0-255, then x / 127.5 - 1 to [-1, 1]",
        ),
        Extractor(
            key="inception",
            name="inception-v3-compat",
            feature_layer="2048",
            logits_layer="logits_unbiased",
            # torch-fidelity's URL_INCEPTION_V3 (a test checks they agree).
            weights_url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            weights_file="weights-inception-2015-12-05-6726825d.pth",
            sha256_prefix="6726825d",  # torch.hub convention: the hex digits after the last '-'
            resizer="tf1x-bilinear-to-299",
            input_range="uint8 0-255, resized, then (x - 128) / 128 to [-1, 1)",
        ),
        _dinov2("s", "dinov2_vits14", "vit_small_patch14_dinov2"),
        _dinov2("b", "dinov2_vitb14", "vit_base_patch14_dinov2"),
    )
}


def weighted_extractors(score_params: dict[str, Any]) -> list[str]:
    """The keys of score.extractors whose weights are files to find or download: all but the domain
    extractor, whose weights the classifier stage trains."""
    return [key for key in score_params["extractors"] if key != DOMAIN]
