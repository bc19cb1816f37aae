"""The results page's "Which GAN for my small medical set" section, drawn only from its table.

For every dataset whose table has rows of both architectures (the `width` cell names `resnet`; a
bare width is dcgan) with at least MIN_SEEDS seeds, it says which setting of each architecture
reached the lowest mean domain FID, the ratio of the two best (domain and held-out FID, training
time), whether their mean ± std ranges overlap, the conditional rows' label accuracy and TSTR ratio,
and what DiffAugment changed for each architecture. Every number is read back from a table cell, so
the prose can never disagree with the table it sits under.
"""

from __future__ import annotations

from typing import Any

from ganpipe.gan.catalog import ARCHITECTURES as REGISTRY
from ganpipe.report.settings import MISSING, SETTING_COLUMNS

HEADING = "## Which GAN for my small medical set"
# A claim that one setting beats another rests on at least this many seeds.
MIN_SEEDS = 3
ARCHITECTURES = tuple(REGISTRY)  # ganpipe.gan.arch, in its order


def _differ_only_in_augment(row: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two rows are one setting with and without DiffAugment: a ratio between rows that also
    differ in steps, recipe or LeCam would credit DiffAugment with what the others did."""
    return all(row.get(column) == other.get(column) for column in SETTING_COLUMNS if column != "augment")


def mean_and_std(value: Any) -> tuple[float, float] | None:
    """The mean and std of a table cell ("35.4 ± 4.1", or "35.4" for one seed); None for "–"."""
    text = str(value)
    if text in ("", MISSING, "None"):
        return None
    mean, _, std = text.partition(" ± ")
    return float(mean), float(std or 0.0)


def architecture(row: dict[str, Any]) -> str:
    """dcgan, or the arch.name the `width` cell starts with ("resnet 64/64")."""
    parts = str(row["width"]).split()
    return parts[0] if len(parts) == 2 else "dcgan"


def _seed_count(row: dict[str, Any]) -> int:
    return len(str(row["seeds"]).split(","))


def _name(row: dict[str, Any]) -> str:
    parts = [row["conditional"], f"DiffAugment {'off' if row['augment'] == 'none' else 'on'}"]
    # The recipe, EMA and LeCam cells are "–" in rows from before they existed, and "none" when off.
    parts += [
        f"{label} {row[column]}"
        for column, label in (("recipe", "recipe"), ("ema", "EMA"), ("lecam", "LeCam"))
        if row.get(column) not in (None, MISSING, "none", "None")
    ]
    return f"`{row['model']}` ({', '.join(parts)}, {row['steps']} steps)"


def _cell(row: dict[str, Any], column: str) -> str:
    return str(row[column])


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) <= a[1] + b[1]


def _ratio_line(best: dict[str, dict[str, Any]], column: str, label: str) -> str | None:
    pair = [mean_and_std(best[arch][column]) for arch in ARCHITECTURES]
    if pair[0] is None or pair[1] is None or pair[0][0] == 0:
        return None
    verdict = "the mean ± std ranges overlap" if _overlap(pair[0], pair[1]) else "the ranges do not overlap"
    return f"{label}: resnet / dcgan = {pair[1][0] / pair[0][0]:.2f}× ({verdict})"


def dataset_lines(data: str, rows: list[dict[str, Any]]) -> list[str]:
    """The section's lines for one dataset's rows; empty where it lacks either architecture."""
    scored = [row for row in rows if _seed_count(row) >= MIN_SEEDS and mean_and_std(row["fid"])]
    by_arch = {arch: [row for row in scored if architecture(row) == arch] for arch in ARCHITECTURES}
    if not all(by_arch.values()):
        return []
    best = {arch: min(by_arch[arch], key=lambda row: mean_and_std(row["fid"])[0]) for arch in ARCHITECTURES}
    lines = [f"### `{data}`", ""]
    for arch in ARCHITECTURES:
        row = best[arch]
        lines.append(
            f"- Best {arch}: {_name(row)}: domain FID {_cell(row, 'fid')} (noise floor "
            f"{_cell(row, 'fid_noise_floor')}), held-out FID {_cell(row, 'heldout_fid')}, "
            f"{_cell(row, 'train_time_s')} s of training."
        )
    ratios = (("fid", "Domain FID"), ("heldout_fid", "Held-out FID"), ("train_time_s", "Training time"))
    for column, label in ratios:
        if line := _ratio_line(best, column, label):
            lines.append(f"- {line}.")
    for arch in ARCHITECTURES:
        conditional = [row for row in by_arch[arch] if row["conditional"] != "none"]
        if conditional:
            row = min(conditional, key=lambda row: mean_and_std(row["fid"])[0])
            lines.append(
                f"- Conditional {arch}, best: {_name(row)}: label accuracy {_cell(row, 'label_accuracy')}, "
                f"TSTR ratio {_cell(row, 'tstr_ratio')}, low-data arm {_cell(row, 'low_accuracy')} real "
                f"alone, {_cell(row, 'low_mixed_accuracy')} with synthetic images."
            )
    for arch in ARCHITECTURES:
        pairs = []
        for row in by_arch[arch]:
            if row["augment"] != "none":
                continue
            partner = next(
                (
                    other
                    for other in by_arch[arch]
                    if other["augment"] != "none" and _differ_only_in_augment(row, other)
                ),
                None,
            )
            if partner:
                ratio = mean_and_std(partner["fid"])[0] / mean_and_std(row["fid"])[0]
                pairs.append(f"{row['model']} {row['conditional']} {ratio:.2f}×")
        if pairs:
            lines.append(f"- DiffAugment on / off, {arch} domain FID: {', '.join(pairs)}.")
    return [*lines, ""]


def section(rows: list[dict[str, Any]]) -> list[str]:
    """The whole section: a paragraph per dataset with both architectures, or why there is none."""
    datasets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        datasets.setdefault(str(row["data"]), []).append(row)
    body = [line for data, data_rows in datasets.items() for line in dataset_lines(data, data_rows)]
    intro = (
        "Drawn by `ganpipe results` from the tables below, and only from them: per dataset, the "
        f"setting of each architecture with the lowest mean domain FID over ≥ {MIN_SEEDS} seeds. "
        "A ratio whose mean ± std ranges overlap does not separate the two."
    )
    if not body:
        body = [f"No dataset has rows of both dcgan and resnet with ≥ {MIN_SEEDS} seeds yet.", ""]
    return [HEADING, "", intro, "", *body]
