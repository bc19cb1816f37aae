"""The metrics registry: every number that `ganpipe compare` and `ganpipe results` show, where a
run's metrics files hold it and, for a metric that the score stage computes itself, how.

One entry is one metric everywhere: a `Metric` with a `score` function is computed by the score
stage on the domain features of the generated images and written to metrics/scores.json under its
key; `compare` puts it in `ganpipe compare`'s per-run table, `results` in the results table
(docs/results.md, mean ± std over seeds) with its `note` in the page's legend. Entries keep their
order in both tables. A new metric is one entry here (docs/extending.md). Plain data and numpy: no
torch, so the report layer reads it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganpipe.pipeline import paths

if TYPE_CHECKING:  # the score stage's type; importing it here would bring torch to the report
    from ganpipe.measure.score import DomainSamples


@dataclass(frozen=True)
class Metric:
    """A metric column: the key of one metrics file, and where it shows."""

    column: str
    source: Path
    key: str
    compare: bool = False  # a column of `ganpipe compare`'s per-run table
    results: bool = False  # a column of the results table, mean ± std over seeds
    note: str | None = None  # the results page's line on it (the built-in columns share lines)
    # Computed by the score stage into metrics/scores.json[key]; None: written by its stage's code.
    score: Callable[[DomainSamples], float | None] | None = None

    def value(self, metrics: dict[str, dict[str, Any]]) -> float | None:
        """The finite number in a run's metrics files ({path: contents}), else None (missing, null,
        NaN, a string)."""
        value = metrics.get(self.source.as_posix(), {}).get(self.key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None


METRICS = {
    metric.column: metric
    for metric in (
        Metric("fid", paths.SCORES, "fid", compare=True, results=True),
        Metric("fid_noise_floor", paths.SCORES, "fid_noise_floor", results=True),
        Metric("heldout_fid", paths.SCORES, "heldout_fid", results=True),
        Metric("heldout_fid_noise_floor", paths.SCORES, "heldout_fid_noise_floor", results=True),
        Metric("is_mean", paths.SCORES, "is_mean", compare=True),
        Metric("kid_mean", paths.SCORES, "kid_mean", compare=True),
        Metric("precision", paths.SCORES, "precision", compare=True),
        Metric("recall", paths.SCORES, "recall", compare=True),
        Metric("coverage_classes", paths.SCORES, "coverage_classes", compare=True),
        # Conditional models only (else –).
        Metric("label_accuracy", paths.SCORES, "label_accuracy", compare=True, results=True),
        Metric("num_generated", paths.SCORES, "num_generated", compare=True),
        Metric("tstr_ratio", paths.UTILITY_METRICS, "tstr_ratio", results=True),
        # The utility stage's low-data arms: a fraction of the real training split alone, and with synthetic.
        Metric("low_accuracy", paths.UTILITY_METRICS, "low_accuracy_mean", results=True),
        Metric("low_mixed_accuracy", paths.UTILITY_METRICS, "low_mixed_accuracy_mean", results=True),
        Metric("wall_time_s", paths.TRAIN_METRICS, "wall_time_s", compare=True),
        Metric("train_time_s", paths.TRAIN_METRICS, "train_time_s", results=True),
        # The privacy audit (pixel copies, domain features; docs/privacy.md), each against its null
        # in metrics/privacy.json.
        Metric("copy_share", paths.PRIVACY_METRICS, "copy_share", compare=True),  # the pixel copy search
        Metric("dcr_share", paths.PRIVACY_METRICS, "dcr_share", compare=True),
        Metric("ct", paths.PRIVACY_METRICS, "ct", compare=True),
        Metric("authenticity", paths.PRIVACY_METRICS, "authenticity", compare=True),
        Metric("blackbox_auc", paths.PRIVACY_METRICS, "blackbox_auc", compare=True),
        Metric("logan_auc", paths.PRIVACY_METRICS, "logan_auc", compare=True),
    )
}


def scored_metrics() -> list[Metric]:
    """The entries the score stage computes, in registry order (stages/score.py hands them to
    ganpipe.measure.score.score_samples, so that only the score stage depends on this registry)."""
    return [metric for metric in METRICS.values() if metric.score is not None]
