"""Load and validate params.yaml.

Every stage calls `load_params()` before it touches any output. A bad value raises ParamsError
with one line naming the key, the bad value and what is allowed; the stage runner turns it into
exit status 2. The config stays plain data (nested dicts), as DVC and `dvc exp run -S` see it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ganpipe.gan.catalog import ARCHITECTURES, AUGMENT_OPS, LOSS_OPTIONS, check_model_options
from ganpipe.pipeline.errors import ParamsError

PARAMS_FILE = "params.yaml"
# train.device; ganpipe.pipeline.device resolves them. Kept here so that reading params does not import torch
# (about 2 s per stage process on a small CPU, for stages such as download, preprocess and plots).
DEVICES = ("auto", "cpu", "cuda")
# train.precision; ganpipe.pipeline.precision checks the hardware for them (kept here for the same reason).
PRECISIONS = ("fp32", "bf16")
SIZES = (28, 64, 128, 224)
OPTIMIZERS = ("adam", "rmsprop", "sgd")

Check = Callable[[str, Any], None]


def _allowing(allowed: str, check: Check) -> Check:
    # The same text goes into the error message and into the generated docs/params.md
    # (ganpipe.pipeline.params_doc), so the reference cannot drift from what the check accepts.
    check.allowed = allowed  # type: ignore[attr-defined]
    return check


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ParamsError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int | None = None) -> Check:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def check(key: str, value: Any) -> None:
        if not _is_int(value) or value < low or (high is not None and value > high):
            _fail(key, value, allowed)

    return _allowing(allowed, check)


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Check:
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"a number in {left}{low}, {'inf' if high is None else high}{right}"

    def check(key: str, value: Any) -> None:
        ok = _is_number(value)
        ok = ok and (value > low if low_open else value >= low)
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            _fail(key, value, allowed)

    return _allowing(allowed, check)


def _boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(key, value, boolean.allowed)


boolean = _allowing("true or false", _boolean)


def choice(*options: Any) -> Check:
    allowed = "one of " + ", ".join(str(o) for o in options)

    def check(key: str, value: Any) -> None:
        if value not in options or isinstance(value, bool) != isinstance(options[0], bool):
            _fail(key, value, allowed)

    return _allowing(allowed, check)


def _string(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        _fail(key, value, string.allowed)


string = _allowing("a non-empty string", _string)


def subset(*options: str) -> Check:
    """A list of distinct `options` (empty allowed)."""
    allowed = f"a list of distinct values from {list(options)}"

    def check(key: str, value: Any) -> None:
        if not (isinstance(value, list) and len(set(value)) == len(value) and set(value) <= set(options)):
            _fail(key, value, allowed)

    return _allowing(allowed, check)


def optional(check: Check) -> Check:
    def wrapped(key: str, value: Any) -> None:
        if value is not None:
            check(key, value)

    return _allowing(f"{check.allowed}, or null", wrapped)  # type: ignore[attr-defined]


def _readable_path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        _fail(key, value, readable_path.allowed)
    if not os.path.exists(value):
        raise ParamsError(
            f"params.yaml: {key} = {value!r}: no such file or folder; fix the path or set it to null"
        )
    if not os.access(value, os.R_OK):
        raise ParamsError(f"params.yaml: {key} = {value!r}: not readable; check its permissions")


readable_path = _allowing("a path to an existing file or folder", _readable_path)


def _augment_policy(key: str, value: Any) -> None:
    distinct = isinstance(value, list) and len(set(map(str, value))) == len(value)
    if not (distinct and all(op in AUGMENT_OPS for op in value)):
        _fail(key, value, augment_policy.allowed)


augment_policy = _allowing(
    f"a list of distinct DiffAugment ops among {', '.join(AUGMENT_OPS)} ([] is off)", _augment_policy
)


def _label_names(key: str, value: Any) -> None:
    """A list of distinct non-empty names, or a mapping of the labels 0..n-1 to them."""
    names = list(value.values()) if isinstance(value, dict) else value
    labels_ok = not isinstance(value, dict) or set(value) == set(range(len(value)))
    names_ok = isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
    if not (labels_ok and names_ok and len(set(names)) == len(names)):
        _fail(key, value, label_names.allowed)


label_names = _allowing(
    "a list of distinct class names, one per label, or a mapping {0: name, 1: name, ...}", _label_names
)


def _betas(key: str, value: Any) -> None:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(b) and 0 <= b < 1 for b in value)):
        _fail(key, value, betas.allowed)


betas = _allowing("a list of two numbers in [0, 1), e.g. [0.5, 0.999]", _betas)


MODEL_SCHEMA: dict[str, Check] = {
    "loss": string,  # checked against the loss registry below
    "optimizer": choice(*OPTIMIZERS),
    "lr_g": number(0, 1, low_open=True),
    "lr_d": number(0, 1, low_open=True),
    "betas": betas,
    "n_critic": integer(1, 100),
    "clip": optional(number(0, None, low_open=True)),
    "gp_lambda": number(0),
    "gp_every": integer(1),  # the penalty on every k-th critic step, weighted λ·k
    "spectral_norm_g": boolean,
    "spectral_norm_d": boolean,
    "dropout_d": number(0, 1, high_open=True),
    "label_smoothing": number(0, 0.5),
    "ema_decay": optional(number(0, 1, low_open=True, high_open=True)),
    "conditional": choice("none", "projection", "acgan"),  # class conditioning (ganpipe.gan.models)
    "acgan_weight": number(0),  # weight of the auxiliary classifier's cross-entropy (acgan only)
}

SCHEMA: dict[str, Any] = {
    "model": string,  # checked against `models` below
    "seed": integer(0, 2**31 - 1),
    "data": {
        "name": string,  # checked against the dataset registry below
        "source": optional(readable_path),
        "image_size": choice(*SIZES),
        "channels": choice(1, 3),
        "limit": optional(integer(16)),
        "label_names": optional(label_names),  # local sources only, checked below and at download
    },
    "models": None,  # a mapping of model name -> MODEL_SCHEMA, checked below
    "arch": {
        "name": choice(*ARCHITECTURES),  # the networks (ganpipe.gan.models.ARCHITECTURES)
        "nz": integer(1, 4096),
        "ngf": integer(4, 1024),
        "ndf": integer(4, 1024),
    },
    "train": {
        "device": choice(*DEVICES),
        "epochs": integer(1),
        "max_steps": optional(integer(1)),
        "batch_size": integer(2, 65536),
        "world_size": integer(1, 1024),
        "checkpoint_every": integer(1),
        "checkpoint_dir": string,
        "eval_every": optional(integer(1)),
        "epoch_grids": integer(1),
        "precision": choice(*PRECISIONS),
        "compile": boolean,
        "cuda_graphs": boolean,
        "tensorboard": boolean,
        "augment": augment_policy,
    },
    "classifier": {
        "epochs": integer(1, 1000),
        "batch_size": integer(2, 65536),
        "lr": number(0, 1, low_open=True),
        "weight_decay": number(0, 1),
        "dropout": number(0, 1, high_open=True),
        "label_smoothing": number(0, 0.5),
        "augment": boolean,
    },
    "sample": {
        "num_samples": integer(16),
        "batch_size": integer(1, 65536),
        "labels": choice("prior", "uniform"),  # conditioning labels: training class frequencies or balanced
    },
    "score": {
        "num_real": integer(16),
        "train_samples": integer(16),
        "extractors": None,  # a list of names from ganpipe/measure/extractors.py, checked below
        "weights": None,  # a mapping of extractor name -> local weights file or null, checked below
        "batch_size": integer(1, 65536),
    },
    "utility": {
        "seeds": integer(1, 100),
        "epochs": integer(1, 1000),
        "synthetic_ratio": number(0, 100, low_open=True),
        "low_data_fraction": number(0, 1, low_open=True, high_open=True),
    },
    "export": {
        "num_train": integer(1),
        "num_val": integer(0),
        "num_test": integer(1),
        "labels": choice("prior", "uniform"),
        "png": boolean,
        "require_private": boolean,  # refuse to export when the privacy audit flags copying
    },
    "privacy": {
        "num_train": integer(16),
        "num_heldout": integer(16),
        "pca_dims": integer(1, 4096),  # C_T's PCA dimensions
        "ct_cells": integer(1, 1000),  # C_T's k-means cells
        "ct_min_cell": integer(2),  # fewest samples and held-out images per C_T cell
        "copy_shift": integer(0, 8),  # the copy search's largest shift, in working pixels
        "copy_flips": subset("horizontal", "vertical"),  # the flips the copy search undoes
        "flag_z": number(0, None, low_open=True),  # standard errors beyond the null that flag
        "min_share_margin": number(0, 1),  # the smallest margin of a share (dcr_share, copy_share, ...)
        "min_auc_margin": number(0, 0.5),  # the smallest margin of a membership AUC
        "min_ct_margin": number(0),  # the smallest margin of C_T
        "gallery": integer(1, 256),  # pairs in the copy gallery
    },
}

# Keys that were replaced, with what replaces them: an old params.yaml gets told the new spelling.
RENAMED = {
    "train.bf16": "train.precision: bf16 (or fp32, the default)",
    **{
        f"privacy.{key}": "privacy.flag_z and the privacy.min_*_margin floors (docs/privacy.md)"
        for key in ("max_dcr_share", "min_ct", "max_authenticity_drop", "max_blackbox_auc")
    },
}


def _check_section(schema: dict[str, Any], prefix: str, params: Any) -> None:
    if not isinstance(params, dict):
        _fail(prefix or "(top level)", params, "a mapping of keys")
    for key in params:
        if key not in schema:
            name = f"{prefix}.{key}" if prefix else str(key)
            if name in RENAMED:
                raise ParamsError(f"params.yaml: {name!r} was replaced; use {RENAMED[name]}")
            raise ParamsError(f"params.yaml: unknown key {name!r}; allowed keys here: {', '.join(schema)}")
    for key, check in schema.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in params:
            raise ParamsError(f"params.yaml: missing key {name!r}; add it (see docs/params.md)")
        if check is None:
            continue
        if isinstance(check, dict):
            _check_section(check, name, params[key])
        else:
            check(name, params[key])


def _check_models(params: dict[str, Any]) -> None:
    models = params["models"]
    if not isinstance(models, dict) or not models:
        _fail("models", models, "a mapping of model name -> settings")
    for name, cfg in models.items():
        _check_section(MODEL_SCHEMA, f"models.{name}", cfg)
        if cfg["loss"] not in LOSS_OPTIONS:
            _fail(f"models.{name}.loss", cfg["loss"], "one of " + ", ".join(sorted(LOSS_OPTIONS)))
        check_model_options(f"models.{name}", cfg)
    if params["model"] not in models:
        _fail("model", params["model"], "one of " + ", ".join(models))
    chosen = models[params["model"]]
    if params["arch"]["name"] == "resnet" and chosen["clip"] is not None and chosen["clip"] != 0:
        # Only the selected model: the other entries (wgan clips) may still be run with dcgan.
        raise ParamsError(
            f"params.yaml: models.{params['model']}.clip = {chosen['clip']!r} with arch.name = resnet: the "
            "ResNet critic is always spectrally normalised and clipping would constrain it twice; set "
            "clip: null (model wgan_gp is the Wasserstein loss for resnet) or arch.name=dcgan"
        )


def _check_data(data: dict[str, Any]) -> None:
    from ganpipe.data import DATASETS, LOCAL

    if data["name"] not in DATASETS:
        _fail("data.name", data["name"], "one of " + ", ".join(sorted(DATASETS)))
    if data["label_names"] is not None and data["name"] != LOCAL:
        raise ParamsError(
            f"params.yaml: data.label_names names the classes of data.name = {LOCAL!r} only; "
            f"{data['name']} publishes its own names: set data.label_names to null"
        )
    if data["name"] == LOCAL and data["source"] is None:
        raise ParamsError(
            "params.yaml: data.name = 'local' needs data.source: set it to a MedMNIST-layout .npz "
            "file or a torchvision MNIST idx folder"
        )


def _check_extractors(score: dict[str, Any]) -> None:
    from ganpipe.measure.extractors import DOMAIN, EXTRACTORS

    names = ", ".join(EXTRACTORS)
    chosen = score["extractors"]
    if not isinstance(chosen, list) or not all(isinstance(name, str) for name in chosen):
        _fail("score.extractors", chosen, f"a list of names from {names}, e.g. [{DOMAIN}, inception]")
    for name in chosen:
        if name not in EXTRACTORS:
            raise ParamsError(
                f"params.yaml: score.extractors has unknown extractor {name!r}; allowed: {names}"
            )
    if len(set(chosen)) != len(chosen):
        _fail("score.extractors", chosen, "each extractor once")
    if DOMAIN not in chosen:
        raise ParamsError(
            f"params.yaml: score.extractors = {chosen!r} lacks {DOMAIN!r}; add it back: class coverage, "
            "intra-class FID and FID during training are computed on the domain classifier"
        )
    weights = score["weights"]
    if not isinstance(weights, dict):
        _fail("score.weights", weights, "a mapping of extractor name -> weights file or null (may be {})")
    downloadable = [key for key, extractor in EXTRACTORS.items() if extractor.weights_url]
    for key, path in weights.items():
        if key == DOMAIN:
            raise ParamsError(
                f"params.yaml: score.weights.{DOMAIN}: the domain extractor's weights are the classifier "
                "stage's output (data/classifier); remove this key"
            )
        if key not in downloadable:
            allowed = ", ".join(downloadable)
            raise ParamsError(f"params.yaml: unknown key 'score.weights.{key}'; allowed keys here: {allowed}")
        optional(readable_path)(f"score.weights.{key}", path)


def validate(params: Any) -> dict[str, Any]:
    """Check a whole params mapping; return it unchanged or raise ParamsError."""
    _check_section(SCHEMA, "", params)
    _check_data(params["data"])
    _check_models(params)
    _check_extractors(params["score"])
    return params


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml (relative to the current directory, the repo root)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: not found; run from the repository root, where params.yaml lives"
        ) from None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return validate(params)


def model_config(params: dict[str, Any]) -> dict[str, Any]:
    """The settings of the selected model."""
    return params["models"][params["model"]]
