"""What a setting is, and the cells that `ganpipe compare` and `ganpipe results` share.

A setting is everything but the seed that shapes a run's numbers: the model with its loss and
conditioning, the networks' width (arch.ngf / arch.ndf), DiffAugment, the dataset, `data.limit`, the
optimiser recipe (train.json's `recipe`), the generator EMA's decay, the LeCam weight, the
training length, the sample count (FID is biased by N, so different N never pool), the commit whose
code ran (`code`) and the environment it ran in (train.json's `environment`: package releases, torch's
kernels and, on CPU, torch's thread count). Runs of one setting differ only in `seed`: they pool into
one bar of the comparison chart and one row of the results table, n = their number, spread = their
sample std. Other params (learning rates, batch size, ...) are not part of it: runs that differ only
in those would pool, so vary them in a clone of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganpipe.measure.metrics import Metric
from ganpipe.pipeline import paths
from ganpipe.pipeline.params import model_config

if TYPE_CHECKING:  # compare imports this module; the type alone is needed here
    from ganpipe.report.compare import Experiment

MISSING = "–"


def width(params: dict[str, Any]) -> str | None:
    """The `width` cell of a run's params: "arch.ngf/arch.ndf", prefixed by arch.name where it is not
    dcgan (so a resnet run never joins a dcgan row as another seed), or None where params lack them."""
    arch = params.get("arch", {})
    if "ngf" not in arch or "ndf" not in arch:
        return None
    # dcgan, and params from before arch.name, keep the bare widths: existing rows stay as they were.
    name = "" if arch.get("name", "dcgan") == "dcgan" else f"{arch['name']} "
    return f"{name}{arch['ngf']}/{arch['ndf']}"


def _model_config(experiment: Experiment) -> dict[str, Any]:
    """The settings the run trained with: its model entry with its architecture's recipe applied."""
    params = experiment.params
    if params.get("model") not in params.get("models", {}):
        return {}
    return model_config(params)


def _ema(experiment: Experiment) -> Any:
    return _model_config(experiment).get("ema_decay") or "none"


def _lecam(experiment: Experiment) -> Any:
    return _model_config(experiment).get("lecam_lambda") or "none"


def _dataset(experiment: Experiment) -> str | None:
    data = experiment.params.get("data", {})
    source = data.get("source")
    return data.get("name") if not source else f"{data.get('name')}:{Path(str(source)).name}"


def _trained(experiment: Experiment, key: str) -> Any:
    return experiment.metrics.get(paths.TRAIN_METRICS.as_posix(), {}).get(key)


# (column, how a run's value is read, how a chart label names it: "" for the bare value). The order
# is the results table's; a column added after tables were written goes in LATER_COLUMNS too.
SETTING_FIELDS: tuple[tuple[str, Callable[[Experiment], Any], str], ...] = (
    ("model", lambda e: e.params.get("model"), ""),
    ("loss", lambda e: _model_config(e).get("loss"), ""),
    # Params written before conditioning existed have no such key: those runs were unconditional.
    ("conditional", lambda e: _model_config(e).get("conditional", "none"), ""),
    ("width", lambda e: width(e.params), "width "),
    ("augment", lambda e: ",".join(e.params.get("train", {}).get("augment") or []) or "none", "augment "),
    # The optimiser recipe (recipes.<arch>.<loss>, or "model": the model's own settings), the
    # generator EMA's decay and the LeCam weight: runs that differ in them never pool.
    ("recipe", lambda e: _trained(e, "recipe"), "recipe "),
    ("ema", _ema, "ema "),
    ("lecam", _lecam, "lecam "),
    ("data", _dataset, ""),
    ("limit", lambda e: e.params.get("data", {}).get("limit"), "limit "),
    ("steps", lambda e: _trained(e, "steps"), "steps "),
    ("num_generated", lambda e: e.metrics.get(paths.SCORES.as_posix(), {}).get("num_generated"), "N "),
    ("code", lambda e: e.baseline[:7], "code "),
    ("environment", lambda e: _trained(e, "environment"), "environment "),
)
SETTING_COLUMNS = tuple(column for column, _, _ in SETTING_FIELDS)
# Setting columns added after tables were written, whose "–" in a kept row means "not in that table"
# (every run has arch.ngf and arch.ndf), not a value.
LATER_COLUMNS = ("width", "recipe", "ema", "lecam")


def setting(experiment: Experiment) -> tuple[Any, ...]:
    """What a row or a bar stands for: the SETTING_COLUMNS values of a run."""
    return tuple(read(experiment) for _, read, _ in SETTING_FIELDS)


@dataclass(frozen=True)
class Setting:
    """One setting and its runs, in the order `dvc exp show` listed them."""

    values: dict[str, Any]  # SETTING_COLUMNS -> value
    runs: tuple[Experiment, ...]

    @property
    def seeds(self) -> list[Any]:
        """The seeds of the runs, ascending."""
        return sorted(run.params.get("seed") for run in self.runs)


def group_settings(experiments: list[Experiment]) -> list[Setting]:
    """The settings of `experiments`, in the order each first appears."""
    groups: dict[tuple[Any, ...], list[Experiment]] = {}
    for experiment in experiments:
        groups.setdefault(setting(experiment), []).append(experiment)
    return [
        Setting(dict(zip(SETTING_COLUMNS, key, strict=True)), tuple(runs)) for key, runs in groups.items()
    ]


def differing_columns(settings: list[Setting]) -> list[str]:
    """The setting columns whose values differ among `settings`: what tells them apart.

    `loss` is left out when `model` differs too: each model entry names its loss, so the model says it.
    """
    differ = [c for c in SETTING_COLUMNS if len({cell(s.values[c]) for s in settings}) > 1]
    return [c for c in differ if not (c == "loss" and "model" in differ)]


def setting_labels(settings: list[Setting]) -> list[str]:
    """A short label per setting: the model, then only what differs among them, e.g. "hinge · none"
    and "hinge · projection"; the model alone when nothing but the seed differs."""
    prefixes = {column: prefix for column, _, prefix in SETTING_FIELDS}
    columns = ["model", *(column for column in differing_columns(settings) if column != "model")]
    return [" · ".join(prefixes[c] + cell(s.values[c]) for c in columns) for s in settings]


def cell(value: Any) -> str:
    """A table cell: "–" for no value (None, NaN), 4 significant digits for a float, else str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def mean_std(values: list[float]) -> str:
    """The cell of values pooled over seeds: "mean ± sample std", the value alone for one seed."""
    if not values:
        return MISSING
    if len(values) == 1:
        return cell(values[0])
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


def pooled(group: Setting, metric: Metric) -> list[float]:
    """The metric's values over the setting's runs that have it."""
    return [value for run in group.runs if (value := metric.value(run.metrics)) is not None]


def seeds_label(count: int) -> str:
    return f"{count} seed" if count == 1 else f"{count} seeds"
