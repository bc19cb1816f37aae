"""`ganpipe compare`: every experiment of this repo in one table and one chart.

DVC keeps each `dvc exp run` (queued ones included, once they have run) as an experiment commit;
`dvc exp show --json` lists them with their params and metrics. This module reads that document,
keeps the runs that finished with metrics, and writes reports/comparison.md (one row per
experiment, then one per setting) and reports/comparison.png (FID and IS, one bar per setting of
ganpipe.report.settings: runs that differ only in seed pool, with their spread).

The JSON layout (DVC 3.x) is a list of commits, the first being the workspace:
    [{"rev": "workspace" | <sha>, "name": <branch> | null, "error": ..., "data": {...},
      "experiments": [{"name": ..., "executor": {"state": "queued" | "running" | "success" |
                       "failed", ...} | null, "revs": [{"rev": <sha>, "name": ..., "error": ...,
                       "data": {...}}]}] | null}]
where each "data" holds {"params": {"params.yaml": {"data": {...}}},
"metrics": {"metrics/scores.json": {"data": {...}} | {"error": ...}, ...}}.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import atomic_open, save_figure, write_text
from ganpipe.pipeline.params import PARAMS_FILE
from ganpipe.report.settings import (
    METRICS,
    Setting,
    cell,
    group_settings,
    mean_std,
    pooled,
    seeds_label,
    setting_labels,
)

WORKSPACE = "workspace"
UNFINISHED_STATES = {"queued": "queued, not run yet", "running": "still running"}
COMMIT = "commit"  # the state _experiment gets for a commit's (or the workspace's) own entry

# The per-run table's metric columns (ganpipe.report.settings holds every metric column).
METRIC_COLUMNS = tuple(
    METRICS[column]
    for column in (
        "fid",
        "is_mean",
        "kid_mean",
        "precision",
        "recall",
        "coverage_classes",
        "label_accuracy",  # conditional models only (else –)
        "num_generated",
        "wall_time_s",
        # The privacy audit (pixel copies, domain features; each against its null in metrics/privacy.json).
        "copy_share",
        "dcr_share",
        "ct",
        "authenticity",
        "blackbox_auc",
        "logan_auc",
    )
)
# The privacy stage's figures of the workspace's run (`dvc exp show` carries no images; `dvc plots
# diff <exp>` shows any experiment's).
PRIVACY_FIGURES = (paths.COPY_GALLERY, paths.DCR_HISTOGRAM_PNG)
PARAM_COLUMNS = ("model", "arch", "loss", "conditional", "lr_g", "lr_d", "n_critic", "epochs", "data", "seed")


@dataclass(frozen=True)
class Experiment:
    """One finished run: its display name, commit, params.yaml and metrics files (by path), and
    `baseline`, the commit whose code it ran (its own for a commit; the workspace's is "workspace")."""

    name: str
    rev: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    baseline: str = ""

    def row(self) -> dict[str, Any]:
        """The report row: the key params of the selected model, then the metrics."""
        model = self.params.get("model")
        model_settings = self.params.get("models", {}).get(model, {})
        row: dict[str, Any] = {
            "experiment": self.name,
            "rev": self.rev[:7] if self.rev != WORKSPACE else WORKSPACE,
            "model": model,
            # Params written before arch.name existed have no such key: those runs were dcgan.
            "arch": self.params.get("arch", {}).get("name", "dcgan"),
            "loss": model_settings.get("loss"),
            # Params written before conditioning existed have no such key: those runs were unconditional.
            "conditional": model_settings.get("conditional", "none"),
            "lr_g": model_settings.get("lr_g"),
            "lr_d": model_settings.get("lr_d"),
            "n_critic": model_settings.get("n_critic"),
            "epochs": self.params.get("train", {}).get("epochs"),
            "data": self.params.get("data", {}).get("name"),
            "seed": self.params.get("seed"),
        }
        for metric in METRIC_COLUMNS:
            row[metric.column] = metric.value(self)
        return row


def _run_dvc(*args: str, repo: Path = Path(".")) -> subprocess.CompletedProcess[str]:
    dvc = shutil.which("dvc")
    if dvc is None:
        raise GanpipeError("dvc not found on PATH; activate the venv that has the requirements installed")
    return subprocess.run([dvc, *args], cwd=repo, capture_output=True, text=True, check=False)


def run_exp_show(all_commits: bool = False, repo: Path = Path(".")) -> list[dict[str, Any]]:
    """`dvc exp show --json` for the repository at `repo` (default: the current directory)."""
    args = ["exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    result = _run_dvc(*args, repo=repo)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise GanpipeError(f"`dvc {' '.join(args)}` failed: {reason}")
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise GanpipeError("dvc exp show --json printed no valid JSON; check the DVC version (3.x)") from None
    if not isinstance(document, list):
        raise GanpipeError("dvc exp show --json is not a list of commits; check the DVC version (3.x)")
    return document


def _file_data(files: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{path: contents} for the files DVC could read; unreadable ones ({"error": ...}) are left out."""
    return {
        path: entry["data"]
        for path, entry in (files or {}).items()
        if isinstance(entry, dict) and entry.get("data")
    }


def _experiment(
    name: str, entry: dict[str, Any], state: str | None, skipped: list[str], baseline: str
) -> Experiment | None:
    """The Experiment of one `rev` entry, or None (with the reason added to `skipped`)."""
    if state in UNFINISHED_STATES:
        skipped.append(f"{name}: {UNFINISHED_STATES[state]}")
        return None
    message = (entry.get("error") or {}).get("msg")
    if state == "failed":
        skipped.append(f"{name}: failed ({message or 'run failed'}; see `dvc queue logs {name}`)")
        return None
    if message:
        skipped.append(f"{name}: could not be read ({message})")
        return None
    data = entry.get("data") or {}
    metrics = _file_data(data.get("metrics"))
    if paths.SCORES.as_posix() not in metrics:
        # A commit (or the workspace) that never ran the pipeline is not a failed run: with
        # --all-commits most commits are such, and a note for each would bury the real ones.
        if state != COMMIT:
            scores = paths.SCORES.as_posix()
            skipped.append(f"{name}: no {scores} (the pipeline did not reach the score stage)")
        return None
    params = _file_data(data.get("params")).get(PARAMS_FILE, {})
    rev = entry.get("rev") or name
    return Experiment(name=name, rev=rev, params=params, metrics=metrics, baseline=baseline)


def collect_experiments(document: list[dict[str, Any]]) -> tuple[list[Experiment], list[str]]:
    """The finished experiments in `dvc exp show --json` order, and one note per skipped entry.

    The workspace is dropped when it repeats another row, as it does right after `dvc exp run`
    or a checkout: one run should not count twice in the spread across seeds.
    """
    experiments: list[Experiment] = []
    skipped: list[str] = []
    for commit in document:
        rev = commit.get("rev") or ""
        name = WORKSPACE if rev == WORKSPACE else commit.get("name") or rev[:7]
        commit_run = _experiment(name, commit, COMMIT, skipped, rev)
        if commit_run is not None:
            experiments.append(commit_run)
        for experiment in commit.get("experiments") or []:
            revs = experiment.get("revs") or []
            if not revs:
                continue
            state = (experiment.get("executor") or {}).get("state")
            exp_name = experiment.get("name") or revs[0].get("name") or (revs[0].get("rev") or "")[:7]
            found = _experiment(exp_name, revs[0], state, skipped, rev)
            if found is not None:
                experiments.append(found)
    workspace = next((e for e in experiments if e.rev == WORKSPACE), None)
    if workspace is not None:
        twin = next(
            (
                e
                for e in experiments
                if e is not workspace and e.params == workspace.params and e.metrics == workspace.metrics
            ),
            None,
        )
        if twin is not None:
            experiments.remove(workspace)
            skipped.append(f"{WORKSPACE}: same params and metrics as {twin.name}, listed once")
    return experiments, skipped


def workspace_is_current(repo: Path = Path(".")) -> bool:
    """Whether `dvc status` in `repo` finds every stage up to date: params.yaml, dvc.lock and outputs agree.

    Only then are the workspace's metrics those of its params.yaml. After an edit of params.yaml, or a
    `git reset` that left an applied experiment's metrics behind, they are not. Where DVC cannot
    tell (the command fails), the workspace is taken as current, as it was before this check.
    """
    result = _run_dvc("status", "--json", repo=repo)
    try:
        return result.returncode != 0 or not json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        return True


def finished_experiments(
    all_commits: bool = False, repo: Path = Path(".")
) -> tuple[list[Experiment], list[str]]:
    """collect_experiments of `repo`'s `dvc exp show`, less a workspace whose metrics are stale."""
    experiments, skipped = collect_experiments(run_exp_show(all_commits, repo))
    workspace = next((e for e in experiments if e.rev == WORKSPACE), None)
    if workspace is not None and not workspace_is_current(repo):  # `dvc status` only when it matters
        experiments.remove(workspace)
        skipped.append(
            f"{WORKSPACE}: `dvc status` lists changes, so its metrics may not come from its "
            "params.yaml; run `dvc repro` (or `dvc checkout`) to list it"
        )
    return experiments, skipped


def comparison_table(experiments: list[Experiment]) -> pd.DataFrame:
    """One row per experiment, with the label of its setting (its bar), best FID first (rows without
    FID last)."""
    settings = group_settings(experiments)
    label_of = {
        id(run): label
        for group, label in zip(settings, setting_labels(settings), strict=True)
        for run in group.runs
    }
    table = pd.DataFrame([{**e.row(), "setting": label_of[id(e)]} for e in experiments])
    return table.sort_values("fid", na_position="last", kind="stable").reset_index(drop=True)


# The chart's panels, one per metric: (column, title, bar colour). A new panel is one more entry.
PANELS = (
    ("fid", "FID (lower is better)", "tab:blue"),
    ("is_mean", "IS (higher is better)", "tab:green"),
)
POOLING = "bars pool runs that differ only in seed: mean, error bar = sample std over the seeds"


def settings_table(settings: list[Setting]) -> list[str]:
    """The chart's bars as Markdown lines: setting label, seeds, then each panel's mean ± std."""
    columns = ["setting", "seeds", *(column for column, _, _ in PANELS)]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for group, label in zip(settings, setting_labels(settings), strict=True):
        values = [mean_std(pooled(group, METRICS[column])) for column, _, _ in PANELS]
        seeds = ",".join(map(cell, group.seeds))
        lines.append("| " + " | ".join([label, seeds, *values]) + " |")
    return lines


def markdown_report(table: pd.DataFrame, skipped: list[str], settings: list[Setting] | None = None) -> str:
    """The comparison as Markdown: the table, a legend, the settings the chart draws (when given),
    and why some experiments are not in it."""
    columns = list(table.columns)
    lines = [
        "# GAN comparison",
        "",
        "Written by `ganpipe compare` from `dvc exp show --json`. FID and KID: lower is better; "
        "IS, precision and recall: higher is better. Sorted by FID. `setting` names the chart's bar "
        "that the run is pooled into.",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in table.itertuples(index=False)]
    sample_counts = table["num_generated"].dropna().unique()
    if len(sample_counts) > 1:
        counts = ", ".join(map(cell, sample_counts))
        lines += [
            "",
            f"**Warning:** the rows were scored on different sample counts ({counts}); FID is "
            "biased by N, so compare only rows with equal num_generated.",
        ]
    if settings:
        lines += ["", f"## Settings (the chart's bars; {POOLING})", "", *settings_table(settings)]
    if skipped:
        lines += ["", "Not in the table:", ""] + [f"- {note}" for note in skipped]
    return "\n".join(lines) + "\n"


def _draw_panel(ax: Any, settings: list[Setting], labels: list[str], column: str, color: str) -> None:
    """One metric's bars: a bar per setting that has the metric, its seeds' mean, error bar = std
    where there are several seeds (none for one), each bar annotated with its value and seed count."""
    bars = [
        (label, values)
        for group, label in zip(settings, labels, strict=True)
        if (values := pooled(group, METRICS[column]))
    ]
    ax.set_ylabel(column)
    if not bars:
        message = f"no {column} in {paths.SCORES.as_posix()}"
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
        return
    positions = np.arange(len(bars))
    means = [float(np.mean(values)) for _, values in bars]
    spreads = [float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 for _, values in bars]
    ax.bar(positions, means, color=color, alpha=0.8)
    for position, mean, spread, (_, values) in zip(positions, means, spreads, bars, strict=True):
        if len(values) > 1:  # one seed has no spread: no error bar rather than a zero-length one
            ax.errorbar(position, mean, yerr=spread, color="black", capsize=6)
        value = f"{mean:.3g} ± {spread:.2g}" if len(values) > 1 else f"{mean:.3g}"
        ax.annotate(
            f"{value}\n{seeds_label(len(values))}",
            (position, mean + spread),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(positions, [label.replace(" · ", "\n") for label, _ in bars])
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)


def plot_comparison(settings: list[Setting], path: Path) -> Path:
    """One panel per entry of PANELS, one bar per setting (group_settings), labelled by what differs."""
    labels = setting_labels(settings)
    figure = Figure(figsize=(max(9, 1.6 * len(PANELS) * len(settings) / 2 + 3), 5), layout="constrained")
    for ax, (column, title, color) in zip(figure.subplots(1, len(PANELS)), PANELS, strict=True):
        ax.set_title(title)
        _draw_panel(ax, settings, labels, column, color)
    figure.suptitle(f"One bar per setting; {POOLING} (none for one seed)")
    save_figure(path, figure)
    return path


def copy_privacy_figures(out_dir: Path) -> list[Path]:
    """Copy the workspace's privacy figures, where the privacy stage wrote them, into `out_dir`."""
    copied = []
    for figure in PRIVACY_FIGURES:
        if figure.is_file():
            with atomic_open(out_dir / figure.name, "wb") as handle:
                handle.write(figure.read_bytes())
            copied.append(out_dir / figure.name)
    return copied


def compare(out_dir: Path = paths.REPORTS, all_commits: bool = False) -> tuple[list[Path], pd.DataFrame]:
    """Write comparison.md and comparison.png into `out_dir`; return the paths and the table."""
    experiments, skipped = finished_experiments(all_commits)
    if not experiments:
        reasons = f" ({'; '.join(skipped)})" if skipped else ""
        raise GanpipeError(f"no experiment has metrics yet{reasons}; run `dvc repro` or `dvc exp run` first")
    table = comparison_table(experiments)
    settings = group_settings(experiments)
    report = out_dir / "comparison.md"
    figures = copy_privacy_figures(out_dir)
    text = markdown_report(table, skipped, settings)
    if figures:
        text += "\n## Privacy audit of the workspace's run\n\n" + "".join(
            f"![{figure.stem}]({figure.name})\n" for figure in figures
        )
    write_text(report, text)
    return [report, plot_comparison(settings, out_dir / "comparison.png"), *figures], table
