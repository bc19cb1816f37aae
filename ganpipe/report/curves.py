"""FID against training time, per setting: the results page's curves, its per-budget verdicts and
the EMA's gain, from each run's FID-during-training curve (train.json `fid_curve`, written by
ganpipe.gan.train every train.eval_every epochs).

`dvc exp show --json` leaves list-valued metrics out, so each run's curve is read from its own commit
(`git show <rev>:metrics/train.json`), or from the workspace's file for the workspace. A setting's
curve is the mean ± sample std over its seeds at each evaluation they all reached, at the mean of
their training seconds there. The FID during training is taken on score.train_samples samples, fewer
than the scored ones, so it reads higher than the table's `fid` (FID is biased upwards at small N):
compare curves with curves, not with the table.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ganpipe.pipeline import paths
from ganpipe.pipeline.exp_show import WORKSPACE
from ganpipe.pipeline.io import save_figure
from ganpipe.report.compare import Experiment
from ganpipe.report.settings import Setting

# The budgets (seconds of training) "Which GAN" answers for, where a setting's curve reaches them.
BUDGETS_S = (150, 300, 500)
# A curve that ends this close below a budget still answers for it (runs stop at a step count).
BUDGET_TOLERANCE = 0.95
MIN_SEEDS = 3  # as the table's verdicts: a claim rests on at least this many seeds


@dataclass(frozen=True)
class Curve:
    """One setting's FID against training time over `seeds` runs: each (seeds, points) array."""

    label: str
    data: str  # the setting's `data` cell: curves of different data never share a verdict
    architecture: str
    seconds: np.ndarray  # per run and evaluation, training seconds
    fid: np.ndarray  # the sampler's domain FID (the EMA generator's where EMA is on)
    fid_generator: np.ndarray  # the trained generator's (equal to fid without EMA)

    @property
    def seeds(self) -> int:
        return len(self.fid)

    @property
    def has_ema(self) -> bool:
        return not np.array_equal(self.fid, self.fid_generator)

    def at_budget(self, seconds: float) -> np.ndarray | None:
        """Each run's FID at its last evaluation within `seconds` of training; None where a run's
        curve ends before the budget (the setting was not trained that long) or starts after it."""
        if (self.seconds[:, -1] < seconds * BUDGET_TOLERANCE).any():
            return None
        values = []
        for run_seconds, run_fid in zip(self.seconds, self.fid, strict=True):
            within = np.flatnonzero(run_seconds <= seconds)
            if not len(within):
                return None
            values.append(run_fid[within[-1]])
        return np.array(values)


def run_curve(experiment: Experiment, repo: Path = Path(".")) -> dict[str, list[float]] | None:
    """The run's `fid_curve` (FID_COLUMNS -> values), None where it has none (older code, or no
    train.eval_every)."""
    if experiment.rev == WORKSPACE:
        path = repo / paths.TRAIN_METRICS
        text = path.read_text() if path.exists() else ""
    else:
        shown = subprocess.run(
            ["git", "show", f"{experiment.rev}:{paths.TRAIN_METRICS.as_posix()}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        text = shown.stdout if shown.returncode == 0 else ""
    curve = json.loads(text).get("fid_curve") if text else None
    return curve if curve and curve.get("fid") else None


def setting_curve(setting: Setting, label: str, repo: Path = Path(".")) -> Curve | None:
    """The setting's Curve over the runs that have one, cut to the evaluations all of them reached;
    None where no run has a curve."""
    curves = [curve for run in setting.runs if (curve := run_curve(run, repo))]
    if not curves:
        return None
    points = min(len(curve["fid"]) for curve in curves)

    def stack(column: str) -> np.ndarray:
        return np.array([curve[column][:points] for curve in curves], dtype=float)

    width = str(setting.values.get("width") or "")
    return Curve(
        label=label,
        data=str(setting.values.get("data")),
        architecture=width.split()[0] if len(width.split()) == 2 else "dcgan",
        seconds=stack("train_seconds"),
        fid=stack("fid"),
        fid_generator=stack("fid_generator"),
    )


def curve_label(values: dict[str, Any]) -> str:
    """A setting's short name on the curves: architecture, model, conditioning, then what is on."""
    width = str(values.get("width") or "")
    arch = width.split()[0] if len(width.split()) == 2 else "dcgan"
    parts = [f"{arch} {values['model']} {values['conditional']}"]
    if values.get("augment") not in (None, "none"):
        parts.append("DiffAugment")
    parts.append(f"recipe {values.get('recipe') or 'model'}")
    for key, name in (("ema", "EMA"), ("lecam", "LeCam")):
        if values.get(key) not in (None, "none"):
            parts.append(f"{name} {values[key]}")
    parts.append(f"{values.get('steps')} steps")
    return ", ".join(parts)


def _mean_std(values: np.ndarray) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{np.mean(values):.3g} ± {np.std(values, ddof=1):.2g}"


def plot_curves(curves: list[Curve], path: Path) -> Path:
    """One panel per dataset: each setting's mean domain FID against mean training seconds, with a
    ±1 std band over its seeds."""
    datasets = list(dict.fromkeys(curve.data for curve in curves))
    figure = Figure(figsize=(7.5, 4.5 * len(datasets)))
    for index, data in enumerate(datasets):
        ax = figure.add_subplot(len(datasets), 1, index + 1)
        for curve in (curve for curve in curves if curve.data == data):
            seconds, mean = curve.seconds.mean(axis=0), curve.fid.mean(axis=0)
            line = ax.plot(seconds, mean, marker="o", markersize=3, label=f"{curve.label} (n={curve.seeds})")
            if curve.seeds > 1:
                std = curve.fid.std(axis=0, ddof=1)
                ax.fill_between(seconds, mean - std, mean + std, alpha=0.15, color=line[0].get_color())
        ax.set_yscale("log")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("domain FID during training")
        ax.set_title(data)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    save_figure(path, figure)
    return path


def budget_lines(curves: list[Curve]) -> list[str]:
    """Per dataset and budget of BUDGETS_S: the best setting of each architecture at that budget (the
    lowest mean over ≥ MIN_SEEDS seeds of each run's FID at its last evaluation within the budget),
    and whether their mean ± std ranges overlap."""
    lines = []
    for data in dict.fromkeys(curve.data for curve in curves):
        verdicts = []
        for budget in BUDGETS_S:
            best: dict[str, tuple[Curve, np.ndarray]] = {}
            for curve in curves:
                values = curve.at_budget(budget) if curve.data == data and curve.seeds >= MIN_SEEDS else None
                if values is None:
                    continue
                held = best.get(curve.architecture)
                if held is None or values.mean() < held[1].mean():
                    best[curve.architecture] = (curve, values)
            if not best:
                continue
            parts = [f"`{curve.label}` {_mean_std(values)}" for curve, values in best.values()]
            ranked = sorted(best, key=lambda arch: best[arch][1].mean())
            if len(ranked) == 1:
                verdict = f"only {ranked[0]} was trained this long"
            else:
                first, second = best[ranked[0]][1], best[ranked[1]][1]
                overlap = abs(first.mean() - second.mean()) <= np.std(first, ddof=1) + np.std(second, ddof=1)
                verdict = f"{ranked[0]} leads" + (", but the mean ± std ranges overlap" if overlap else "")
            verdicts.append(f"- At {budget} s: {'; '.join(parts)}: {verdict}.")
        if verdicts:
            lines += [f"### `{data}`, by training time", "", *verdicts, ""]
    return lines


def ema_lines(curves: list[Curve]) -> list[str]:
    """For each setting with EMA: the EMA generator's and the trained generator's FID at the last
    evaluation (mean ± std over seeds) and their ratio per seed."""
    lines = []
    for curve in curves:
        if not curve.has_ema:
            continue
        ema, trained = curve.fid[:, -1], curve.fid_generator[:, -1]
        ratios = ", ".join(f"{r:.2f}" for r in ema / trained)
        lines.append(
            f"- `{curve.data}` `{curve.label}` at {curve.seconds[:, -1].mean():.0f} s: EMA {_mean_std(ema)}, "
            f"trained generator {_mean_std(trained)} (EMA / trained per seed: {ratios})."
        )
    return lines


def curve_summary(settings: list[Setting], figure: Path, repo: Path = Path(".")) -> list[str]:
    """The results page's section on FID against training time: the figure (written to `figure`),
    the per-budget verdicts and the EMA's gain; empty where no run has a curve. Settings whose short
    labels (curve_label) coincide are told apart by their `code` cell."""
    labels = [curve_label(setting.values) for setting in settings]
    labels = [
        label if labels.count(label) == 1 else f"{label}, code {setting.values.get('code')}"
        for label, setting in zip(labels, settings, strict=True)
    ]
    curves = [
        curve
        for setting, label in zip(settings, labels, strict=True)
        if (curve := setting_curve(setting, label, repo))
    ]
    if not curves:
        return []
    plot_curves(curves, figure)
    lines: list[str] = [
        "## FID against training time",
        "",
        "Each run's domain FID during training (train.eval_every), mean ± std over its setting's seeds at "
        "each evaluation they all reached, against their mean training seconds (the steps alone, not the "
        "evaluations). It is taken on score.train_samples samples, fewer than the table's, so it reads "
        "higher than the table's `fid`: compare curves with curves.",
        "",
        f"![Domain FID against training time]({figure.name})",
        "",
        *budget_lines(curves),
    ]
    if ema := ema_lines(curves):
        lines += [
            "### The generator EMA",
            "",
            "Where EMA is on, each evaluation scores both the EMA generator (what sample, score and "
            "export use) and the trained one, from the same noise:",
            "",
            *ema,
            "",
        ]
    return lines
