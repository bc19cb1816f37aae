"""The GAN layer's sections of params.yaml (model, models, arch, train, sample, export) and their
checks, as plain data.

ganpipe.config assembles it with the other layers' schemas into `load_params()`; like them it
imports no torch: the names it checks against come from ganpipe.gan.catalog
(losses, architectures, DiffAugment), which is plain data too.
"""

from __future__ import annotations

from typing import Any

from ganpipe.gan.catalog import ARCHITECTURES, AUGMENT_OPS, LOSS_OPTIONS, check_model_options
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.params import (
    AUTO_RECIPE,
    DEVICES,
    MODEL_RECIPE,
    PRECISIONS,
    Schema,
    allowing,
    boolean,
    check_section,
    choice,
    fail,
    integer,
    is_number,
    model_config,
    number,
    optional,
    recipe,
    string,
)

OPTIMIZERS = ("adam", "rmsprop", "sgd")
MODELS, RECIPES = "models", "recipes"
# What a recipe (recipes.<arch>.<loss>) may set: how the model is optimised, not what it is.
RECIPE_KEYS = ("optimizer", "lr_g", "lr_d", "betas", "n_critic", "ema_decay", "lecam_lambda")


def _augment_policy(key: str, value: Any) -> None:
    distinct = isinstance(value, list) and len(set(map(str, value))) == len(value)
    if not (distinct and all(op in AUGMENT_OPS for op in value)):
        fail(key, value, augment_policy.allowed)


augment_policy = allowing(
    f"a list of distinct DiffAugment ops among {', '.join(AUGMENT_OPS)} ([] is off)", _augment_policy
)


def _betas(key: str, value: Any) -> None:
    if not (isinstance(value, list) and len(value) == 2 and all(is_number(b) and 0 <= b < 1 for b in value)):
        fail(key, value, betas.allowed)


betas = allowing("a list of two numbers in [0, 1), e.g. [0.5, 0.999]", _betas)


MODEL_SCHEMA: dict[str, Any] = {
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
    "lecam_lambda": number(0),  # LeCam regulariser weight (ganpipe.gan.losses.lecam_regulariser)
    "conditional": choice("none", "projection", "acgan"),  # class conditioning (ganpipe.gan.layers)
    "acgan_weight": number(0),  # weight of the auxiliary classifier's cross-entropy (acgan only)
}


def _check_models(params: dict[str, Any]) -> None:
    models = params[MODELS]
    if not isinstance(models, dict) or not models:
        fail(MODELS, models, "a mapping of model name -> settings")
    for name, cfg in models.items():
        check_section(MODEL_SCHEMA, f"{MODELS}.{name}", cfg)
        if cfg["loss"] not in LOSS_OPTIONS:
            fail(f"{MODELS}.{name}.loss", cfg["loss"], "one of " + ", ".join(sorted(LOSS_OPTIONS)))
        check_model_options(f"{MODELS}.{name}", cfg)
    if params["model"] not in models:
        fail("model", params["model"], "one of " + ", ".join(models))
    _check_recipes(params[RECIPES])
    # The settings it trains with, its architecture's recipe applied, must make sense too.
    check_model_options(f"{MODELS}.{params['model']} with recipe {recipe(params)[0]}", model_config(params))
    chosen, arch = model_config(params), ARCHITECTURES[params["arch"]["name"]]
    if arch.spectral_norm_builtin and chosen["clip"] is not None and chosen["clip"] != 0:
        # Only the selected model: the other entries (wgan clips) may still be run with dcgan.
        raise ParamsError(
            f"params.yaml: {MODELS}.{params['model']}.clip = {chosen['clip']!r} with arch.name = "
            f"{arch.name}: the {arch.name} critic is always spectrally normalised and clipping would "
            "constrain it twice; set clip: null (model wgan_gp is the Wasserstein loss for it) or "
            "arch.name=dcgan"
        )


def _check_recipes(recipes: Any) -> None:
    # Every architecture has an entry ({} for none), so that dvc.yaml's recipes.${arch.name} resolves.
    if not isinstance(recipes, dict) or sorted(recipes) != sorted(ARCHITECTURES):
        fail(RECIPES, recipes, "a mapping with one entry per architecture (" + ", ".join(ARCHITECTURES) + ")")
    for arch, by_loss in recipes.items():
        if not isinstance(by_loss, dict):
            fail(f"{RECIPES}.{arch}", by_loss, "a mapping of loss name -> recipe ({} for none)")
        for loss, entry in by_loss.items():
            key = f"{RECIPES}.{arch}.{loss}"
            if loss not in LOSS_OPTIONS:
                fail(key, loss, "a loss among " + ", ".join(sorted(LOSS_OPTIONS)))
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                fail(key, entry, "a mapping with a `name` and some of " + ", ".join(RECIPE_KEYS))
            for option, value in entry.items():
                if option == "name":
                    continue
                if option not in RECIPE_KEYS:
                    raise ParamsError(
                        f"params.yaml: {key}.{option} is not a recipe key; a recipe sets only "
                        f"{', '.join(RECIPE_KEYS)} (set the rest in models.<name>)"
                    )
                MODEL_SCHEMA[option](f"{key}.{option}", value)


GAN = Schema(
    sections={
        "model": string,  # checked against `models` below
        MODELS: None,  # a mapping of model name -> MODEL_SCHEMA, checked below
        RECIPES: None,  # arch -> loss -> a recipe (RECIPE_KEYS), checked below
        "arch": {
            "name": choice(*ARCHITECTURES),  # the networks (ganpipe.gan.catalog.ARCHITECTURES)
            "nz": integer(1, 4096),
            "ngf": integer(4, 1024),
            "ndf": integer(4, 1024),
            "recipe": choice(AUTO_RECIPE, MODEL_RECIPE),
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
        "sample": {
            "num_samples": integer(16),
            "batch_size": integer(1, 65536),
            "labels": choice(
                "prior", "uniform"
            ),  # conditioning labels: training class frequencies or balanced
        },
        "export": {
            "num_train": integer(1),
            "num_val": integer(0),
            "num_test": integer(1),
            "labels": choice("prior", "uniform"),
            "png": boolean,
            "require_private": boolean,  # refuse to export when the privacy audit flags copying
        },
    },
    entries={MODELS: MODEL_SCHEMA},
    checks=(_check_models,),
    allowed={
        "model": "a key of `models`",
        f"{MODELS}.<name>.loss": "one of " + ", ".join(sorted(LOSS_OPTIONS)),
        RECIPES: "per architecture, loss name -> {name, " + ", ".join(RECIPE_KEYS) + "}",
    },
    # Keys that were replaced, with what replaces them: an old params.yaml gets told the new spelling.
    renamed={"train.bf16": "train.precision: bf16 (or fp32, the default)"},
)
