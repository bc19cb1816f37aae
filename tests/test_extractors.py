"""score.extractors: the list of feature extractors, their weights, and ganpipe's offline DINOv2.

No test touches the network: downloads go through a proxy on a closed local port, and every weights
file is random, of the right architecture. The DINOv2 numbers are checked against torch-fidelity's
own `dinov2-vit-s-14` extractor, whose torch.hub model is replaced by a transcription of the official
DINOv2 forward (facebookresearch/dinov2, models/vision_transformer.py, hub defaults).
"""

from __future__ import annotations

import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO, tiny_params
from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ganpipe.config import validate
from ganpipe.measure import score
from ganpipe.measure.classifier import DomainClassifier, save_classifier
from ganpipe.measure.features import (
    EXTRACTORS,
    FeatureExtractorDinoV2Local,
    check_weights_file,
    create_extractor,
    resolve_weights,
    resolved_weights,
    weights_cache_path,
)
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import save_npz, write_json

DOWNLOADABLE = [key for key, extractor in EXTRACTORS.items() if extractor.weights_url]
# (embed dim, depth, heads) of the official checkpoints in the table.
DINOV2_SHAPES = {"dinov2-vit-s-14": (384, 12, 6), "dinov2-vit-b-14": (768, 12, 12)}
CPU = torch.device("cpu")


def official_dinov2_state(dim: int, depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the key layout of Meta's dinov2_vit*14_pretrain.pth (block_chunks=0, 518 px,
    so a 37×37 position grid, and the `mask_token` the checkpoints carry), written out by hand rather
    than taken from timm, so that the loader's key conversion is really tested."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.05, offset: float = 0.0) -> torch.Tensor:
        return offset + scale * torch.randn(*shape, generator=gen)

    state = {
        "cls_token": rand(1, 1, dim, scale=1.0),
        "pos_embed": rand(1, 1 + 37 * 37, dim, scale=1.0),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": rand(dim, 3, 14, 14, scale=0.02),
        "patch_embed.proj.bias": rand(dim, scale=0.02),
        "norm.weight": rand(dim, scale=0.1, offset=1.0),
        "norm.bias": rand(dim, scale=0.1),
    }
    for i in range(depth):
        block = f"blocks.{i}."
        state.update(
            {
                block + "norm1.weight": rand(dim, scale=0.1, offset=1.0),
                block + "norm1.bias": rand(dim, scale=0.1),
                block + "attn.qkv.weight": rand(3 * dim, dim),
                block + "attn.qkv.bias": rand(3 * dim, scale=0.02),
                block + "attn.proj.weight": rand(dim, dim),
                block + "attn.proj.bias": rand(dim, scale=0.02),
                block + "ls1.gamma": rand(dim, scale=0.3, offset=0.5),
                block + "norm2.weight": rand(dim, scale=0.1, offset=1.0),
                block + "norm2.bias": rand(dim, scale=0.1),
                block + "mlp.fc1.weight": rand(4 * dim, dim),
                block + "mlp.fc1.bias": rand(4 * dim, scale=0.02),
                block + "mlp.fc2.weight": rand(dim, 4 * dim),
                block + "mlp.fc2.bias": rand(dim, scale=0.02),
                block + "ls2.gamma": rand(dim, scale=0.3, offset=0.5),
            }
        )
    return state


class OfficialDinoV2(torch.nn.Module):
    """DinoVisionTransformer.forward of facebookresearch/dinov2 as its hub models run it, transcribed:
    patch conv, CLS token, the position embedding resampled bicubically with interpolate_offset=0.1
    and no antialias, pre-norm blocks with layer scale (LayerNorm eps 1e-6, plain softmax attention,
    GELU MLP), final norm, CLS token out."""

    def __init__(self, state: dict[str, torch.Tensor], heads: int) -> None:
        super().__init__()
        self.state = {key: value.clone() for key, value in state.items()}
        self.heads = heads
        self.depth = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("blocks."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, batch, (w, h) = self.state, x.shape[0], x.shape[-2:]
        x = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14)
        x = torch.cat((s["cls_token"].expand(batch, -1, -1), x.flatten(2).transpose(1, 2)), dim=1)
        pos, dim = s["pos_embed"].float(), x.shape[-1]
        side = int(math.sqrt(pos.shape[1] - 1))
        grid = F.interpolate(
            pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
            scale_factor=((w // 14 + 0.1) / side, (h // 14 + 0.1) / side),
            mode="bicubic",
            antialias=False,
        )
        x = x + torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)
        for i in range(self.depth):
            b = f"blocks.{i}."
            y = F.layer_norm(x, (dim,), s[b + "norm1.weight"], s[b + "norm1.bias"], eps=1e-6)
            qkv = F.linear(y, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
            qkv = qkv.reshape(batch, -1, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * (dim // self.heads) ** -0.5, qkv[1], qkv[2]
            y = ((q @ k.transpose(-2, -1)).softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, -1, dim)
            x = x + s[b + "ls1.gamma"] * F.linear(y, s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
            y = F.layer_norm(x, (dim,), s[b + "norm2.weight"], s[b + "norm2.bias"], eps=1e-6)
            y = F.gelu(F.linear(y, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"]))
            x = x + s[b + "ls2.gamma"] * F.linear(y, s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])
        return F.layer_norm(x, (dim,), s["norm.weight"], s["norm.bias"], eps=1e-6)[:, 0]


@pytest.fixture(scope="module")
def dinov2_s_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = official_dinov2_state(*DINOV2_SHAPES["dinov2-vit-s-14"][:2])
    path = tmp_path_factory.mktemp("dinov2") / EXTRACTORS["dinov2-vit-s-14"].weights_file
    torch.save(state, path)
    return path, state


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache, and every download through a proxy on a closed local port: the failure of
    a machine without network, with no real request even where there is one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # urllib builds its default opener (and reads the proxy variables) once per process.
    monkeypatch.setattr(urllib.request, "_opener", None)
    return tmp_path / "torch"


# --- params ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"score__extractors": "domain"}, ("score.extractors = 'domain'", "a list of names")),
        (
            {"score__extractors": ["domain", "dinov3"]},
            ("unknown extractor 'dinov3'", "domain, inception, dinov2-vit-s-14, dinov2-vit-b-14"),
        ),
        ({"score__extractors": ["domain", "inception", "inception"]}, ("each extractor once",)),
        ({"score__extractors": ["dinov2-vit-s-14"]}, ("lacks 'domain'", "FID during training")),
        ({"score__weights": {"domain": "x.pt"}}, ("score.weights.domain", "classifier stage")),
        ({"score__weights": {"dinov3": None}}, ("unknown key 'score.weights.dinov3'", "dinov2-vit-s-14")),
        (
            {"score__weights": {"dinov2-vit-s-14": "nope.pth"}},
            ("score.weights.dinov2-vit-s-14", "no such file"),
        ),
        ({"score__weights": ["nope.pth"]}, ("score.weights = ['nope.pth']", "mapping")),
    ],
)
def test_bad_extractor_params_refused_in_one_line(
    overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ParamsError) as error:
        validate(tiny_params(**overrides))
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_extractor_params_accepted(tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    validate(tiny_params(score__extractors=["domain", "inception", "dinov2-vit-s-14"], score__weights={}))
    local = {"inception": str(weights)}
    validate(tiny_params(score__extractors=["inception", "domain"], score__weights=local))
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["score"]
    assert defaults["extractors"] == ["domain"]
    # Every downloadable extractor has its key in params.yaml, so `dvc exp run -S` can set it.
    assert sorted(defaults["weights"]) == sorted(DOWNLOADABLE)


def test_the_table() -> None:
    assert next(iter(EXTRACTORS)) == "domain" and EXTRACTORS["domain"].prefix == ""
    assert EXTRACTORS["dinov2-vit-s-14"].prefix == "dinov2_vit_s_14_"
    assert len({extractor.prefix for extractor in EXTRACTORS.values()}) == len(EXTRACTORS)
    assert EXTRACTORS["inception"].weights_url == URL_INCEPTION_V3
    for key, extractor in EXTRACTORS.items():
        assert extractor.name in FEATURE_EXTRACTORS_REGISTRY, key
        assert extractor.input_range
        if extractor.weights_url:
            assert extractor.weights_url.endswith("/" + extractor.weights_file) and extractor.resizer
        assert (extractor.logits_layer is not None) == (key in ("domain", "inception"))


# --- weights ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", DOWNLOADABLE)
def test_missing_weights_fail_fast_offline_with_the_fix(key: str, offline: Path) -> None:
    extractor = EXTRACTORS[key]
    start = time.monotonic()
    with pytest.raises(GanpipeError) as error:
        resolve_weights({"extractors": ["domain", key], "weights": {key: None}})
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{key} weights could not be downloaded")
    cache = weights_cache_path(extractor)
    assert cache.parent.is_relative_to(offline)
    fixes = (extractor.weights_url, str(cache), f"score.weights.{key}", f"remove {key} from score.extractors")
    for hint in fixes:
        assert hint in message
    assert not any(cache.parent.glob("*"))  # no partial download left behind


def test_weights_order_local_then_cache(offline: Path, dinov2_s_weights: tuple[Path, Any]) -> None:
    """The local-path param wins; else a file in torch's cache is used without any download. The
    reference and score stages find the same file, and never download it themselves."""
    path, _ = dinov2_s_weights
    key = "dinov2-vit-s-14"
    local = {"extractors": ["domain", key], "weights": {key: str(path)}}
    assert resolve_weights(local) == resolved_weights(local) == {key: str(path)}
    cached = {"extractors": [key, "domain"], "weights": {}}
    with pytest.raises(GanpipeError, match="run `dvc repro download` first"):
        resolved_weights(cached)
    cache = weights_cache_path(EXTRACTORS[key])
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    assert resolve_weights(cached) == resolved_weights(cached) == {key: str(cache)}


@pytest.mark.parametrize("key", list(DINOV2_SHAPES))
def test_official_dinov2_checkpoint_layout_loads(key: str, tmp_path: Path) -> None:
    """Meta's key layout (mask_token included) loads strictly into ganpipe's DINOv2; a file missing a
    key or of another size is refused in one line."""
    dim, depth, _ = DINOV2_SHAPES[key]
    extractor = EXTRACTORS[key]
    state = official_dinov2_state(dim, depth)
    path = tmp_path / extractor.weights_file
    torch.save(state, path)
    module = create_extractor(extractor, path, CPU)
    assert isinstance(module, FeatureExtractorDinoV2Local)
    loaded = module.model.state_dict()
    assert "mask_token" not in loaded and loaded["pos_embed"].shape == (1, 1 + 16 * 16, dim)
    for name in ("cls_token", "blocks.0.attn.qkv.weight", f"blocks.{depth - 1}.ls2.gamma", "norm.bias"):
        assert torch.equal(loaded[name], state[name]), name
    del state["norm.weight"]
    torch.save(state, path)
    other = tmp_path / "other.pth"
    torch.save(official_dinov2_state(dim // 2, depth), other)
    for bad in (path, other):
        with pytest.raises(GanpipeError, match=f"not usable as {key} weights") as error:
            check_weights_file(extractor, bad)
        assert "\n" not in str(error.value)


def test_dinov2_matches_torch_fidelity_given_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, dinov2_s_weights: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    """torch-fidelity's own dinov2-vit-s-14 (its preprocessing, with the official model in place of
    the torch.hub download) and ganpipe's extractor give the same features, at the real 224 px."""
    path, state = dinov2_s_weights

    def hub_load(repo: str, model: str) -> torch.nn.Module:
        assert (repo, model) == ("facebookresearch/dinov2", "dinov2_vits14")
        return OfficialDinoV2(state, heads=DINOV2_SHAPES["dinov2-vit-s-14"][2])

    monkeypatch.setattr(torch.hub, "load", hub_load)
    theirs = FeatureExtractorDinoV2("dinov2-vit-s-14", ["dinov2"])
    ours = create_extractor(EXTRACTORS["dinov2-vit-s-14"], path, CPU)
    rng = np.random.RandomState(0)
    # Grayscale reaches the extractors repeated to 3 channels.
    gray = np.repeat(rng.randint(0, 256, (1, 1, 28, 28), dtype=np.uint8), 3, axis=1)
    rgb = rng.randint(0, 256, (1, 3, 28, 28), dtype=np.uint8)
    images = torch.from_numpy(np.concatenate([gray, rgb]))
    with torch.no_grad():
        expected, actual = theirs(images)[0], ours(images)[0]
    assert actual.shape == (2, 384) and expected.std() > 0.1
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


# --- end to end -------------------------------------------------------------------------------------


def test_domain_and_dinov2_scores_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: Path, dinov2_s_weights: tuple[Path, Any]
) -> None:
    """score.extractors [domain, dinov2-vit-s-14]: the download stage's resolution, the reference and
    the score give prefixed, finite keys that depend only on the settings. DINOv2 runs at 56 px here
    (a 4×4 patch grid: the same code at 1/16 of the cost; 224 px is tested above)."""
    monkeypatch.setattr(FeatureExtractorDinoV2Local, "INPUT_IMAGE_SIZE", 56)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "1")
    rng = np.random.RandomState(0)
    n_train, n_classes = 24, 4
    images = rng.randint(0, 256, (n_train + 16, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train + 16) % n_classes
    save_npz(paths.PROCESSED_TRAIN, images=images[:n_train], labels=labels[:n_train])
    # val: the held-out reference the score stage also measures against.
    save_npz(paths.PROCESSED_VAL, images=images[n_train : n_train + 8], labels=labels[n_train : n_train + 8])
    save_npz(paths.PROCESSED_TEST, images=images[n_train + 8 :], labels=labels[n_train + 8 :])
    info = {"name": "noise", "n_classes": n_classes, "channels": 1, "size": 28, "n_train": n_train}
    names = [str(k) for k in range(n_classes)]
    write_json(paths.PROCESSED_INFO, {**info, "n_val": 8, "n_test": 8, "label_names": names})
    torch.manual_seed(0)
    save_classifier(paths.CLASSIFIER_WEIGHTS, DomainClassifier(1, 28, n_classes))
    path, _ = dinov2_s_weights
    params = tiny_params(
        score__num_real=16,
        sample__num_samples=16,
        score__extractors=["domain", "dinov2-vit-s-14"],
        score__weights={"dinov2-vit-s-14": str(path)},
    )
    validate(params)
    assert resolve_weights(params["score"]) == {"dinov2-vit-s-14": str(path)}

    meta = score.compute_reference(params)
    entry = meta["extractors"]["dinov2-vit-s-14"]
    assert (entry["name"], entry["dim"]) == ("ganpipe-dinov2-vit-s-14", 384)
    assert entry["resizer"] == "tf1x-bilinear-to-224"
    assert entry["input_range"] == EXTRACTORS["dinov2-vit-s-14"].input_range
    assert math.isfinite(entry["fid_noise_floor"]) and math.isfinite(entry["kid_noise_floor"])
    with np.load(paths.REFERENCE_DIR / "dinov2-vit-s-14.npz") as reference:
        assert reference["features"].shape == (16, 384)

    key_sets = []
    noise = rng.randint(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    for generated in (noise, np.zeros((16, 1, 28, 28), np.uint8)):
        save_npz(paths.SAMPLES, images=generated)
        scores = score.score_samples(params)
        assert json.loads(paths.SCORES.read_text()) == scores
        key_sets.append(set(scores))
        prefixed = {key for key in scores if key.startswith("dinov2_vit_s_14_")}
        metrics = ("fid", "kid_mean", "kid_std", "precision", "recall", "fid_noise_floor", "kid_noise_floor")
        assert prefixed == {f"dinov2_vit_s_14_{key}" for key in (*metrics, "resizer", "input_range")}
        assert all(isinstance(scores[f"dinov2_vit_s_14_{key}"], float) for key in metrics)
        assert all(math.isfinite(scores[f"dinov2_vit_s_14_{key}"]) for key in metrics)
        assert scores["dinov2_vit_s_14_resizer"] == "tf1x-bilinear-to-224"
        assert "is_mean" in scores and "dinov2_vit_s_14_is_mean" not in scores  # IS needs class logits
        assert scores["extractors"] == "ganpipe-domain,ganpipe-dinov2-vit-s-14"
    assert key_sets[0] == key_sets[1]
