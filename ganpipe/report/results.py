"""`ganpipe results`: the results table (docs/results.md) from the experiments of `dvc exp show`.

`ganpipe compare` lists every run; this groups runs that differ only in `seed` and reports each
setting once, mean ± std over its seeds: domain FID (with its real-vs-real noise floor), label
accuracy (conditional models), the TSTR ratio of the utility stage and the training time. A setting
is the model with its loss and conditioning, the networks' width (arch.ngf / arch.ndf), DiffAugment,
the dataset, `data.limit`, the training length, the sample count (FID is biased by N, so different N
never share a row), the commit whose code ran (`code`) and the environment it ran in (`environment`,
train.json's: package releases, torch's kernels and, on CPU, torch's thread count): runs of different
code or environment never share a row either, which matters with `--all-commits` and with rows kept
from other clones. Other params (learning rates, batch size, ...) are not columns: runs that differ
only in those would share a row, so vary them in a clone of their own.

Anyone can repeat the table: queue the runs (README, "Results table"), start the queue, then run
`ganpipe results`. A rerun rewrites the title, legend and table and keeps every `## ` section after
them (how the table was made, notes). With `keep_rows` (`--keep-rows`) it also keeps the table's rows
of settings that have no experiment here, such as rows run in another clone, so that a table can grow
across clones; a setting that has experiments here gets its row rewritten from them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import write_text
from ganpipe.report.compare import Experiment, finished_experiments

RESULTS = Path("docs") / "results.md"
SETTING_COLUMNS = (
    "model",
    "loss",
    "conditional",
    "width",
    "augment",
    "data",
    "limit",
    "steps",
    "num_generated",
    "code",
    "environment",
)
# Setting columns added after tables were written, whose "–" in a kept row means "not in that table"
# (every run has arch.ngf and arch.ndf), not a value.
LATER_COLUMNS = ("width",)
# (column, metrics file, key): averaged over the seeds of a setting.
MEASURED = (
    ("fid", paths.SCORES, "fid"),
    ("fid_noise_floor", paths.SCORES, "fid_noise_floor"),
    ("label_accuracy", paths.SCORES, "label_accuracy"),
    ("tstr_ratio", paths.UTILITY_METRICS, "tstr_ratio"),
    # The utility stage's low-data arms: a fraction of the real training split alone, and with synthetic.
    ("low_accuracy", paths.UTILITY_METRICS, "low_accuracy_mean"),
    ("low_mixed_accuracy", paths.UTILITY_METRICS, "low_mixed_accuracy_mean"),
    ("train_time_s", paths.TRAIN_METRICS, "train_time_s"),
)


def width(params: dict[str, Any]) -> str | None:
    """The `width` cell of a run's params: "arch.ngf/arch.ndf", prefixed by arch.name where it is not
    dcgan (so a resnet run never joins a dcgan row as another seed), or None where params lack them."""
    arch = params.get("arch", {})
    if "ngf" not in arch or "ndf" not in arch:
        return None
    # dcgan, and params from before arch.name, keep the bare widths: existing rows stay as they were.
    name = "" if arch.get("name", "dcgan") == "dcgan" else f"{arch['name']} "
    return f"{name}{arch['ngf']}/{arch['ndf']}"


def setting(experiment: Experiment) -> tuple[Any, ...]:
    """What a row stands for: everything but the seed that shapes the numbers."""
    params = experiment.params
    model = params.get("model")
    config = params.get("models", {}).get(model, {})
    data = params.get("data", {})
    source = data.get("source")
    dataset = data.get("name") if not source else f"{data.get('name')}:{Path(str(source)).name}"
    train = params.get("train", {})
    augment = ",".join(train.get("augment") or []) or "none"
    trained = experiment.metrics.get(paths.TRAIN_METRICS.as_posix(), {})
    num_generated = experiment.metrics.get(paths.SCORES.as_posix(), {}).get("num_generated")
    return (
        model,
        config.get("loss"),
        config.get("conditional", "none"),
        width(params),
        augment,
        dataset,
        data.get("limit"),
        trained.get("steps"),
        num_generated,
        experiment.baseline[:7],
        trained.get("environment"),
    )


def _value(experiment: Experiment, source: Path, key: str) -> float | None:
    value = experiment.metrics.get(source.as_posix(), {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


def results_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """One row per setting, in the order settings first appear, with `seeds` (how many runs)."""
    groups: dict[tuple[Any, ...], list[Experiment]] = {}
    for experiment in experiments:
        groups.setdefault(setting(experiment), []).append(experiment)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = dict(zip(SETTING_COLUMNS, key))
        # Ascending, whatever order `dvc exp show` lists the runs in (newest first, queue order).
        row["seeds"] = ",".join(str(seed) for seed in sorted(m.params.get("seed") for m in members))
        for column, source, metric in MEASURED:
            row[column] = _mean_std([v for m in members if (v := _value(m, source, metric)) is not None])
        rows.append(row)
    return rows


COLUMNS = (*SETTING_COLUMNS, "seeds", *(column for column, _, _ in MEASURED))
HEADER = "| " + " | ".join(COLUMNS) + " |"


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def markdown(rows: list[dict[str, Any]], skipped: list[str]) -> str:
    lines = [
        "# Results",
        "",
        "Written by `ganpipe results` from `dvc exp show --json`: one row per setting, mean ± std "
        "(sample std) over the seeds listed. `fid` is the domain FID (lower is better) and "
        "`fid_noise_floor` the same metric between two disjoint real sets at the same N; `label_accuracy` "
        "the domain classifier's accuracy on generated images against their conditioning labels; "
        "`tstr_ratio` the utility stage's train-on-synthetic / train-on-real test accuracy, and "
        "`low_accuracy` / `low_mixed_accuracy` its low-data arms' test accuracy (a fraction of the real "
        "training split alone / with synthetic images added; each the mean of the stage's runs). "
        "`width` is the generator's / critic's base channel count (arch.ngf / arch.ndf, after arch.name "
        "where it is not dcgan), `code` the "
        "commit whose code made the row and `environment` the package releases, torch kernels and CPU "
        "threads it ran with (– in rows written before the column existed, or where the runs did not "
        "record it; code up to 5bcb56e did not record the threads).",
        "",
        HEADER,
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[column]) for column in COLUMNS) + " |")
    if skipped:
        lines += ["", "Not in the table:", ""] + [f"- {note}" for note in skipped]
    return "\n".join(lines) + "\n"


def kept_sections(text: str) -> str:
    """What a rewrite of the table keeps from the old file: everything from its first `## ` heading.

    The table part has no such heading, so the sections after it (how the table was made, notes
    written by hand) survive `ganpipe results` runs; only the title, the legend and the table change.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return "".join(lines[start:])


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split("|")]


def table_rows(text: str, source: Path) -> list[dict[str, str]]:
    """The rows of the table `markdown` wrote into `text` (read from `source`), as cell strings.

    A table written before a column was added reads with "–" in it (such as `environment`, which
    older runs did not record); a column this version does not write is refused in one line.
    """
    lines = text.splitlines()
    start = next((index for index, line in enumerate(lines) if line.startswith("| model |")), None)
    if start is None:
        return []
    columns = _cells(lines[start])
    unknown = [column for column in columns if column not in COLUMNS]
    if unknown:
        raise GanpipeError(
            f"{source}'s table has columns `ganpipe results` does not write "
            f"({', '.join(unknown)}); move the file aside or run without --keep-rows"
        )
    rows = []
    for line in lines[start + 2 :]:  # past the header and its --- line
        if not line.startswith("| "):
            break
        row = dict.fromkeys(COLUMNS, "–")
        row.update(zip(columns, _cells(line)))
        rows.append(row)
    return rows


def merged_rows(rows: list[dict[str, Any]], earlier: list[dict[str, str]]) -> list[dict[str, Any]]:
    """`rows`, then the `earlier` rows of settings that `rows` lacks (in their order).

    An earlier row with "–" in a column of LATER_COLUMNS predates that column: it matches on the
    others, so a rewrite from the same experiments replaces it rather than adding a twin that differs
    only there.
    """

    def covered(old: dict[str, str]) -> bool:
        return any(
            all(
                _cell(row[column]) == old[column]
                for column in SETTING_COLUMNS
                if not (column in LATER_COLUMNS and old[column] == "–")
            )
            for row in rows
        )

    return [*rows, *(row for row in earlier if not covered(row))]


def write_results(
    out: Path = RESULTS, all_commits: bool = False, keep_rows: bool = False, repo: Path = Path(".")
) -> tuple[Path, list[dict[str, Any]]]:
    """Write the results table of `repo`'s experiments to `out` (a path of its own, not relative to
    `repo`), keeping its sections after the table; the path and the rows.

    With `keep_rows`, `out`'s rows of settings that no experiment here has stay in the table.
    """
    experiments, skipped = finished_experiments(all_commits, repo)
    if not experiments:
        raise GanpipeError("no experiment has metrics yet; run `dvc exp run` or `dvc queue start` first")
    old = out.read_text() if out.exists() else ""
    rows = results_rows(experiments)
    if keep_rows:
        rows = merged_rows(rows, table_rows(old, out))
    kept = kept_sections(old)
    write_text(out, markdown(rows, skipped) + ("\n" + kept if kept else ""))
    return out, rows
