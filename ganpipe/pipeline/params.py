"""Read and check params.yaml: the machinery, with no section of its own but `seed`.

Each layer declares the sections it owns as a Schema, plain data (ganpipe.data.schema,
ganpipe.gan.schema, ganpipe.measure.schema), built from the checks here; ganpipe.config assembles
them into `load_params()`. A bad value raises ParamsError with one line naming the key, the bad value
and what is allowed; the stage runner turns it into exit status 2. The config stays plain data
(nested dicts), as DVC and `dvc exp run -S` see it. Nothing here imports torch, nor any layer above
this one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganpipe.pipeline.errors import ParamsError

PARAMS_FILE = "params.yaml"
# train.device; ganpipe.pipeline.device resolves them. Kept here so that reading params does not import torch
# (about 2 s per stage process on a small CPU, for stages such as download, preprocess and plots).
DEVICES = ("auto", "cpu", "cuda")
# train.precision; ganpipe.pipeline.precision checks the hardware for them (kept here for the same reason).
PRECISIONS = ("fp32", "bf16")

Check = Callable[[str, Any], None]


def allowing(allowed: str, check: Check) -> Check:
    """`check`, carrying the text of what it allows."""
    # The same text goes into the error message and into the generated docs/params.md
    # (ganpipe.pipeline.params_doc), so the reference cannot drift from what the check accepts.
    check.allowed = allowed  # type: ignore[attr-defined]
    return check


def fail(key: str, value: Any, allowed: str) -> None:
    raise ParamsError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int | None = None) -> Check:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def check(key: str, value: Any) -> None:
        if not _is_int(value) or value < low or (high is not None and value > high):
            fail(key, value, allowed)

    return allowing(allowed, check)


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Check:
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"a number in {left}{low}, {'inf' if high is None else high}{right}"

    def check(key: str, value: Any) -> None:
        ok = is_number(value)
        ok = ok and (value > low if low_open else value >= low)
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            fail(key, value, allowed)

    return allowing(allowed, check)


def _boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(key, value, boolean.allowed)


boolean = allowing("true or false", _boolean)


def choice(*options: Any) -> Check:
    allowed = "one of " + ", ".join(str(o) for o in options)

    def check(key: str, value: Any) -> None:
        if value not in options or isinstance(value, bool) != isinstance(options[0], bool):
            fail(key, value, allowed)

    return allowing(allowed, check)


def _string(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        fail(key, value, string.allowed)


string = allowing("a non-empty string", _string)


def subset(*options: str) -> Check:
    """A list of distinct `options` (empty allowed)."""
    allowed = f"a list of distinct values from {list(options)}"

    def check(key: str, value: Any) -> None:
        if not (isinstance(value, list) and len(set(value)) == len(value) and set(value) <= set(options)):
            fail(key, value, allowed)

    return allowing(allowed, check)


def optional(check: Check) -> Check:
    def wrapped(key: str, value: Any) -> None:
        if value is not None:
            check(key, value)

    return allowing(f"{check.allowed}, or null", wrapped)  # type: ignore[attr-defined]


def _readable_path(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        fail(key, value, readable_path.allowed)
    if not os.path.exists(value):
        raise ParamsError(
            f"params.yaml: {key} = {value!r}: no such file or folder; fix the path or set it to null"
        )
    if not os.access(value, os.R_OK):
        raise ParamsError(f"params.yaml: {key} = {value!r}: not readable; check its permissions")


readable_path = allowing("a path to an existing file or folder", _readable_path)


@dataclass(frozen=True)
class Schema:
    """The params sections one layer owns, as plain data.

    `sections`: top-level key -> a Check, a nested mapping of Checks, or None for a key that
    `checks` looks at alone. `entries`: a key whose value maps names to settings (`models`) -> the
    schema of each entry. `checks`: run on the whole params once every section has its shape, for
    rules a Check of one value cannot state (a registry, two keys together). `allowed`: the
    reference's text for the keys those rules check (docs/params.md). `renamed`: replaced keys, with
    what replaces them, so that an old params.yaml is told the new spelling.
    """

    sections: dict[str, Any]
    entries: dict[str, dict[str, Check]] = field(default_factory=dict)
    checks: tuple[Callable[[dict[str, Any]], None], ...] = ()
    allowed: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)


# The ground floor's own key: every layer draws its random streams from it (ganpipe.pipeline.streams).
PIPELINE = Schema(sections={"seed": integer(0, 2**31 - 1)})


def check_section(
    schema: dict[str, Any], prefix: str, params: Any, renamed: dict[str, str] | None = None
) -> None:
    """Check one mapping against `schema`: no unknown key, none missing, each value by its Check."""
    if not isinstance(params, dict):
        fail(prefix or "(top level)", params, "a mapping of keys")
    for key in params:
        if key not in schema:
            name = f"{prefix}.{key}" if prefix else str(key)
            if renamed and name in renamed:
                raise ParamsError(f"params.yaml: {name!r} was replaced; use {renamed[name]}")
            raise ParamsError(f"params.yaml: unknown key {name!r}; allowed keys here: {', '.join(schema)}")
    for key, check in schema.items():
        name = f"{prefix}.{key}" if prefix else key
        if key not in params:
            raise ParamsError(f"params.yaml: missing key {name!r}; add it (see docs/params.md)")
        if check is None:
            continue
        if isinstance(check, dict):
            check_section(check, name, params[key], renamed)
        else:
            check(name, params[key])


def validate(params: Any, schemas: Sequence[Schema], whole: bool = True) -> dict[str, Any]:
    """Check `params` against the sections of `schemas`; return it unchanged or raise ParamsError.

    `whole`: the schemas are every layer's, so a top-level key none of them owns is refused. A stage
    below the GAN layer checks only the layers it runs (`whole=False`): the sections of the others
    are theirs to check, in the stages that read them.
    """
    sections: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for schema in schemas:
        sections.update(schema.sections)
        renamed.update(schema.renamed)
    if whole:
        check_section(sections, "", params, renamed)
    else:
        if not isinstance(params, dict):
            fail("(top level)", params, "a mapping of keys")
        check_section(sections, "", {key: value for key, value in params.items() if key in sections}, renamed)
    for schema in schemas:
        for check in schema.checks:
            check(params)
    return params


def read_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Any:
    """params.yaml parsed, unchecked (relative to the current directory, the repo root)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"{path}: not found; run from the repository root, where params.yaml lives"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where}; fix the syntax") from None


def load_sections(
    schemas: Sequence[Schema], path: str | os.PathLike[str] = PARAMS_FILE, whole: bool = False
) -> dict[str, Any]:
    """Read params.yaml and check the sections of `schemas` (see validate)."""
    return validate(read_params(path), schemas, whole)


# arch.recipe: "auto" takes the architecture's recipe for the model's loss where params.yaml's
# `recipes` has one; MODEL_RECIPE is also the recipe name of a run on the model's own settings.
AUTO_RECIPE, MODEL_RECIPE = "auto", "model"


def recipe(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, settings) of the optimiser recipe a run trains with: `recipes.<arch.name>.<loss>` of the
    selected model's loss when arch.recipe is auto and there is one, else (MODEL_RECIPE, {}): the
    model's own settings. Params written before recipes existed read as MODEL_RECIPE."""
    arch = params.get("arch", {})
    loss = params.get("models", {}).get(params.get("model"), {}).get("loss")
    entry = None
    if arch.get("recipe", AUTO_RECIPE) == AUTO_RECIPE:
        entry = (params.get("recipes") or {}).get(arch.get("name")) or {}
        entry = entry.get(loss)
    if not entry:
        return MODEL_RECIPE, {}
    settings = dict(entry)
    return str(settings.pop("name")), settings


def model_config(params: dict[str, Any]) -> dict[str, Any]:
    """The settings the selected model trains with: its `models` entry, with the keys of its
    architecture's recipe (see `recipe`) in their place (the GAN layer checks both; the plots read them)."""
    return {**params["models"][params["model"]], **recipe(params)[1]}
