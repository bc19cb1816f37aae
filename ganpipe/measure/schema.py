"""The measuring sections of params.yaml (classifier, score, utility, privacy): the measure layer's
own keys and their checks, as plain data.

ganpipe.config assembles it with the other layers' schemas into `load_params()`; like them it
imports no torch (ganpipe.measure.extractors names the extractors without loading them).
"""

from __future__ import annotations

from typing import Any

from ganpipe.measure.extractors import DOMAIN, EXTRACTORS
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.params import Schema, boolean, fail, integer, number, optional, readable_path, subset


def _downloadable() -> list[str]:
    """The extractors with weights to fetch (read at each check: an extension may register more)."""
    return [key for key, extractor in EXTRACTORS.items() if extractor.weights_url]


def _check_extractors(params: dict[str, Any]) -> None:
    score = params["score"]
    names = ", ".join(EXTRACTORS)
    chosen = score["extractors"]
    if not isinstance(chosen, list) or not all(isinstance(name, str) for name in chosen):
        fail("score.extractors", chosen, f"a list of names from {names}, e.g. [{DOMAIN}, inception]")
    for name in chosen:
        if name not in EXTRACTORS:
            raise ParamsError(
                f"params.yaml: score.extractors has unknown extractor {name!r}; allowed: {names}"
            )
    if len(set(chosen)) != len(chosen):
        fail("score.extractors", chosen, "each extractor once")
    if DOMAIN not in chosen:
        raise ParamsError(
            f"params.yaml: score.extractors = {chosen!r} lacks {DOMAIN!r}; add it back: class coverage, "
            "intra-class FID and FID during training are computed on the domain classifier"
        )
    weights = score["weights"]
    if not isinstance(weights, dict):
        fail("score.weights", weights, "a mapping of extractor name -> weights file or null (may be {})")
    downloadable = _downloadable()
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


MEASURE = Schema(
    sections={
        "classifier": {
            "epochs": integer(1, 1000),
            "batch_size": integer(2, 65536),
            "lr": number(0, 1, low_open=True),
            "weight_decay": number(0, 1),
            "dropout": number(0, 1, high_open=True),
            "label_smoothing": number(0, 0.5),
            "augment": boolean,
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
    },
    checks=(_check_extractors,),
    allowed={
        "score.extractors": f"a list of distinct names among {', '.join(EXTRACTORS)}; must hold {DOMAIN}",
        "score.weights": "a mapping of " + ", ".join(_downloadable()) + " to a local weights file or null",
    },
    # Keys that were replaced, with what replaces them: an old params.yaml gets told the new spelling.
    renamed={
        f"privacy.{key}": "privacy.flag_z and the privacy.min_*_margin floors (docs/privacy.md)"
        for key in ("max_dcr_share", "min_ct", "max_authenticity_drop", "max_blackbox_auc")
    },
)
