"""`ganpipe results`: the results page (docs/results.md) from the experiments of `dvc exp show`.

`ganpipe compare` lists every run; this reports each setting once (ganpipe.report.settings: runs that
differ only in `seed` pool), mean ± std over its seeds: domain FID with its real-vs-real noise floor,
the held-out FID (against the split the GAN never saw) with its floor, label accuracy (conditional
models), the utility stage's TSTR ratio and low-data arms, and the training time.

The page is generated whole: the title and legend, the table, one legend of environments (a short id
per distinct environment; rows cite the id) and the benchmark protocol (ganpipe.measure.protocol).
Anyone can repeat the table: queue the runs (docs/protocol.md), start the queue, then run `ganpipe
results`. With `keep_rows` (`--keep-rows`) the page's rows of settings that have no experiment here,
such as rows run in another clone, stay, so that a table can grow across clones; a setting that has
experiments here gets its row rewritten from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganpipe.measure.metrics import METRICS
from ganpipe.measure.protocol import protocol_lines
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.io import write_text
from ganpipe.report.compare import Experiment, finished_experiments
from ganpipe.report.curves import curve_summary
from ganpipe.report.settings import (
    LATER_COLUMNS,
    MISSING,
    SETTING_COLUMNS,
    cell,
    group_settings,
    mean_std,
    pooled,
)
from ganpipe.report.which_gan import section

RESULTS = Path("docs") / "results.md"
# The measured columns, each averaged over the seeds of a setting: the registry's entries marked
# `results` (ganpipe.measure.metrics), in its order.
MEASURED = tuple(column for column, metric in METRICS.items() if metric.results)
COLUMNS = (*SETTING_COLUMNS, "seeds", *MEASURED)
HEADER = "| " + " | ".join(COLUMNS) + " |"
ENVIRONMENTS_HEADING = "## Environments"
DATA_HEADING = "## Data: "  # then the `data` cell of the table's rows
PROTOCOL_HEADING = "## Protocol"
# What the columns hold, above the table.
COLUMN_NOTES = (
    "- `fid`: the domain FID (lower is better); `fid_noise_floor`: the same metric between two "
    "disjoint real training sets at the same N.",
    "- `heldout_fid`: the domain FID against the split the GAN never saw (see Protocol); "
    "`heldout_fid_noise_floor`: training images against that split.",
    "- `label_accuracy`: the domain classifier's accuracy on generated images against their "
    "conditioning labels.",
    "- `tstr_ratio`: the utility stage's train-on-synthetic / train-on-real test accuracy; "
    "`low_accuracy` / `low_mixed_accuracy`: its low-data arms' test accuracy (a fraction of the real "
    "training split alone / with synthetic images added).",
    "- `width`: the generator's / critic's base channel count (arch.ngf / arch.ndf); `code`: the "
    "commit whose code made the row; `environment`: the id of the environment it ran in (see "
    "Environments).",
)
ENVIRONMENTS_NOTE = (
    "Package releases, torch's kernels and, on CPU, torch's thread count, as train.json records them "
    "(code up to 5bcb56e did not record the thread count)."
)
ENVIRONMENT_ID = "E"  # environment ids are E1, E2, ... in the order the table first cites them


def results_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """One row per setting, in the order settings first appear, with `seeds` (which runs)."""
    rows = []
    for group in group_settings(experiments):
        row: dict[str, Any] = dict(group.values)
        # Ascending, whatever order `dvc exp show` lists the runs in (newest first, queue order).
        row["seeds"] = ",".join(map(cell, group.seeds))
        row.update({column: mean_std(pooled(group, METRICS[column])) for column in MEASURED})
        rows.append(row)
    return rows


def environment_ids(rows: list[dict[str, Any]]) -> dict[str, str]:
    """environment -> short id ("E1", ...), numbered in the order the rows first name them."""
    ids: dict[str, str] = {}
    for row in rows:
        environment = row["environment"]
        if environment not in (None, MISSING) and environment not in ids:
            ids[environment] = f"{ENVIRONMENT_ID}{len(ids) + 1}"
    return ids


def markdown(
    rows: list[dict[str, Any]], skipped: list[str], curve_lines: tuple[str, ...] | list[str] = ()
) -> str:
    """The whole page: title, legend, "Which GAN", `curve_lines` (ganpipe.report.curves), the tables,
    environments, protocol and the runs left out."""
    ids = environment_ids(rows)
    lines = [
        "# Results",
        "",
        "Written by `ganpipe results` from `dvc exp show --json`: one row per setting (runs that differ "
        "only in seed), mean ± std (sample std) over the seeds listed; – where the runs did not record "
        "a value (rows made before it existed, or unconditional models' label accuracy).",
        "",
        *COLUMN_NOTES,
        *(f"- `{column}`: {METRICS[column].note}" for column in MEASURED if METRICS[column].note),
        "",
        *section(rows),
        *curve_lines,
    ]
    # One table per dataset, in the order the rows first name them: scores of different data never
    # share a table.
    datasets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        datasets.setdefault(cell(row["data"]), []).append(row)
    for data, data_rows in datasets.items():
        lines += [f"{DATA_HEADING}`{data}`", "", HEADER, "| " + " | ".join("---" for _ in COLUMNS) + " |"]
        for row in data_rows:
            cells = {**row, "environment": ids.get(row["environment"], row["environment"])}
            lines.append("| " + " | ".join(cell(cells[column]) for column in COLUMNS) + " |")
        lines.append("")
    lines += [ENVIRONMENTS_HEADING, "", ENVIRONMENTS_NOTE, ""]
    lines += [f"- `{short}`: {environment}" for environment, short in ids.items()] or ["- none recorded"]
    lines += ["", PROTOCOL_HEADING, "", *protocol_lines(), "", "To rerun it: [the protocol](protocol.md)."]
    if skipped:
        lines += ["", "Not in the table:", ""] + [f"- {note}" for note in skipped]
    return "\n".join(lines) + "\n"


def _legend(lines: list[str]) -> dict[str, str]:
    """short id -> environment, from the Environments section of a page `markdown` wrote."""
    if ENVIRONMENTS_HEADING not in lines:
        return {}
    legend = {}
    for line in lines[lines.index(ENVIRONMENTS_HEADING) + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("- `") and "`: " in line:
            short, environment = line[3:].split("`: ", 1)
            legend[short] = environment
    return legend


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split("|")]


def table_rows(text: str, source: Path) -> list[dict[str, str]]:
    """The rows of the table `markdown` wrote into `text` (read from `source`), as cell strings, with
    each environment id replaced by the environment its legend names.

    A table written before a column was added reads with "–" in it (such as `heldout_fid`, which
    older runs did not measure); a column this version does not write is refused in one line.
    """
    lines = text.splitlines()
    legend = _legend(lines)
    rows = []
    # Every table (one per dataset; pages written before that have one).
    for start in (index for index, line in enumerate(lines) if line.startswith("| model |")):
        columns = _cells(lines[start])
        unknown = [column for column in columns if column not in COLUMNS]
        if unknown:
            raise GanpipeError(
                f"{source}'s table has columns `ganpipe results` does not write "
                f"({', '.join(unknown)}); move the file aside or run without --keep-rows"
            )
        for line in lines[start + 2 :]:  # past the header and its --- line
            if not line.startswith("| "):
                break
            row = dict.fromkeys(COLUMNS, MISSING)
            row.update(zip(columns, _cells(line)))
            # Tables written before the legend hold the environment itself: it is kept as it is.
            row["environment"] = legend.get(row["environment"], row["environment"])
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
                cell(row[column]) == old[column]
                for column in SETTING_COLUMNS
                if not (column in LATER_COLUMNS and old[column] == MISSING)
            )
            for row in rows
        )

    return [*rows, *(row for row in earlier if not covered(row))]


def write_results(
    out: Path = RESULTS, all_commits: bool = False, keep_rows: bool = False, repo: Path = Path(".")
) -> tuple[Path, list[dict[str, Any]]]:
    """Write the results page of `repo`'s experiments to `out` (a path of its own, not relative to
    `repo`); the path and the rows.

    With `keep_rows`, `out`'s rows of settings that no experiment here has stay in the table; then a
    repo without experiments rewrites the page from its kept rows alone (through this version's
    layout), as long as it has some.
    """
    experiments, skipped = finished_experiments(all_commits, repo)
    old = out.read_text() if out.exists() else ""
    earlier = table_rows(old, out) if keep_rows else []
    if not experiments and not earlier:
        raise GanpipeError("no experiment has metrics yet; run `dvc exp run` or `dvc queue start` first")
    rows = merged_rows(results_rows(experiments), earlier)
    settings = group_settings(experiments)
    figure = out.with_name(f"{out.stem}_fid_against_time.png")
    curves = curve_summary(settings, figure, repo) if settings else []
    write_text(out, markdown(rows, skipped, curves))
    return out, rows
