"""`ganpipe results`: runs that differ only in seed become one row, mean ± std over the seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ganpipe.pipeline.errors import GanpipeError
from ganpipe.report import compare, results
from ganpipe.report.settings import cell

FIXTURE = Path(__file__).parent / "fixtures" / "dvc_exp_show.json"
REPO = Path(__file__).resolve().parents[1]


def _experiments() -> list[compare.Experiment]:
    experiments, _ = compare.collect_experiments(json.loads(FIXTURE.read_text()))
    return experiments


def test_seeds_of_one_setting_share_a_row_with_mean_and_sample_std() -> None:
    experiments = _experiments()
    fids = {
        (e.params["model"], e.params["seed"]): e.metrics["metrics/scores.json"]["fid"] for e in experiments
    }
    rows = {row["model"]: row for row in results.results_rows(experiments)}
    assert set(rows) == {"wgan_gp", "dcgan"}
    assert [e.params["seed"] for e in experiments if e.params["model"] == "dcgan"] == [1, 0]
    for model in rows:
        values = [fids[(model, seed)] for seed in (0, 1)]
        mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2**0.5  # sample std of two values
        assert rows[model]["fid"] == f"{mean:.4g} ± {std:.2g}"
        assert rows[model]["seeds"] == "0,1"  # ascending, whatever order the runs came in
        assert rows[model]["label_accuracy"] == "–"  # unconditional runs have none


def test_another_setting_gets_its_own_row_and_the_table_lists_every_column() -> None:
    experiments = _experiments()
    changed = experiments[0]
    params = json.loads(json.dumps(changed.params))
    params["data"]["limit"] = 500
    experiments[0] = compare.Experiment(changed.name, changed.rev, params, changed.metrics)
    rows = results.results_rows(experiments)
    assert len(rows) == 3 and {row["limit"] for row in rows} == {None, 500}
    # The same params run by other code (a later commit, with --all-commits) is another row too.
    other_code = experiments[1]
    experiments[1] = compare.Experiment(
        other_code.name, other_code.rev, other_code.params, other_code.metrics, baseline="f" * 40
    )
    rows = results.results_rows(experiments)
    assert len(rows) == 4 and "fffffff" in {row["code"] for row in rows}
    # So is the same params and code run in another environment (train.json's `environment`): of the
    # two seeds of each setting, one dcgan run moves to a row of its own.
    fresh = _experiments()
    other_env = next(e for e in fresh if e.params["model"] == "dcgan")
    metrics = json.loads(json.dumps(other_env.metrics))
    environment = "torch 0, numpy 0, scipy 0, torch-fidelity 0, cpu AVX2"
    metrics["metrics/train.json"]["environment"] = environment
    moved = compare.Experiment(other_env.name, other_env.rev, other_env.params, metrics)
    fresh[fresh.index(other_env)] = moved
    dcgan_rows = [row for row in results.results_rows(fresh) if row["model"] == "dcgan"]
    by_environment = {row["environment"]: row for row in dcgan_rows}
    assert set(by_environment) == {None, environment} and by_environment[environment]["seeds"] == "1"
    # And a run with a wider critic (arch.ndf), the only param changed: the `width` column tells it.
    widths = _experiments()
    for index, experiment in enumerate(widths):
        params = json.loads(json.dumps(experiment.params))
        params["arch"] = {"nz": 100, "ngf": 16, "ndf": 64 if index == 0 else 16}
        widths[index] = compare.Experiment(experiment.name, experiment.rev, params, experiment.metrics)
    by_width = {(row["model"], row["width"]): row["seeds"] for row in results.results_rows(widths)}
    model, seed = widths[0].params["model"], str(widths[0].params["seed"])
    assert by_width[(model, "16/64")] == seed and (model, "16/16") in by_width
    # A resnet run at the same widths is a setting of its own, named by its architecture.
    params = json.loads(json.dumps(widths[0].params))
    params["arch"] = {"name": "resnet", "nz": 100, "ngf": 16, "ndf": 64}
    resnet = compare.Experiment(widths[0].name, widths[0].rev, params, widths[0].metrics)
    assert {row["width"] for row in results.results_rows([widths[0], resnet])} == {"16/64", "resnet 16/64"}
    assert {row["width"] for row in results.results_rows(_experiments())} == {None}  # no arch recorded
    table = results.markdown(rows, ["broken: failed"])
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    expected = (
        *results.SETTING_COLUMNS,
        "seeds",
        "fid",
        "fid_noise_floor",
        "label_accuracy",
        "tstr_ratio",
        "low_accuracy",
        "low_mixed_accuracy",
        "heldout_fid",
        "train_time_s",
    )
    assert all(f" {column} " in header for column in expected)
    assert "- broken: failed" in table


def with_environments(experiments: list[compare.Experiment], *environments: str) -> list[compare.Experiment]:
    """The experiments, the i-th recording environments[i % len] in its train.json."""
    changed = []
    for index, experiment in enumerate(experiments):
        metrics = json.loads(json.dumps(experiment.metrics))
        metrics["metrics/train.json"]["environment"] = environments[index % len(environments)]
        changed.append(compare.Experiment(experiment.name, experiment.rev, experiment.params, metrics))
    return changed


def test_the_page_is_generated_whole_with_one_legend_of_environments(tmp_path, monkeypatch) -> None:
    """Rows cite a short id per environment, listed once under Environments, then the protocol; a
    rewrite keeps no hand-written section, and reads each id back as its environment."""
    first, second = "torch 1, numpy 1, cpu AVX2, 1 threads", "torch 2, numpy 2, cpu AVX2, 1 threads"
    rows = results.results_rows(with_environments(_experiments(), first, second))
    page = results.markdown(rows, [])
    table = [line for line in page.splitlines() if line.startswith("| ") and " | bce | " in line]
    assert table and all(" | E1 | " in line or " | E2 | " in line for line in table)
    assert page.count(first) == 1 and page.count(second) == 1  # once each, in the legend
    assert f"- `E1`: {first}" in page and f"- `E2`: {second}" in page
    assert "## Protocol" in page and "`val` split" in page and "(protocol.md)" in page
    assert {row["environment"] for row in results.table_rows(page, Path("r.md"))} == {first, second}

    out = tmp_path / "results.md"
    out.write_text(page + "\n## Notes (written by hand)\n\n- a worker stopped\n")
    document = json.loads(FIXTURE.read_text())
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: document)
    monkeypatch.setattr(compare, "workspace_is_current", lambda repo: True)
    results.write_results(out, keep_rows=True)
    rewritten = out.read_text()
    assert "a worker stopped" not in rewritten and rewritten.count("## Environments") == 1
    # The fixture's runs recorded no environment: their rows (now first) say –, the kept rows keep theirs.
    kept = [first, second, first, second]  # each model's two seeds ran in two environments: 4 rows
    assert [row["environment"] for row in results.table_rows(rewritten, out)] == ["–", "–", *kept]


def test_kept_rows_alone_regenerate_the_page(tmp_path, monkeypatch) -> None:
    """With --keep-rows and no experiment here, the page is rewritten from its own rows: an older
    page's full environment cells become ids, its hand-written sections go, every row stays."""
    environment = "torch 2.14.1, numpy 2.4.6, cpu AVX512, 1 threads"
    older = (
        "# Results\n\n| model | environment | seeds | fid |\n| --- | --- | --- | --- |\n"
        f"| hinge | {environment} | 0,1 | 3 ± 1 |\n| dcgan | – | 0 | 4 |\n\n"
        "## How this table was made\n\nby hand\n"
    )
    out = tmp_path / "results.md"
    out.write_text(older)
    nothing = [{"rev": "workspace", "name": None, "error": None, "data": {}, "experiments": None}]
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: nothing)

    _, rows = results.write_results(out, keep_rows=True)

    page = out.read_text()
    assert [row["fid"] for row in rows] == ["3 ± 1", "4"] and "by hand" not in page
    missing = " | ".join("–" for _ in results.COLUMNS[1 : results.COLUMNS.index("environment")])
    assert f"| hinge | {missing} | E1 | 0,1 | 3 ± 1 |" in page
    assert page.count(environment) == 1
    with pytest.raises(GanpipeError, match=r"^no experiment has metrics yet"):
        results.write_results(tmp_path / "new.md", keep_rows=True)


def test_results_grid_merges_a_groups_overrides_into_the_common_ones() -> None:
    spec = importlib.util.spec_from_file_location("results_grid", REPO / "research" / "results_grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    # A group's override of a common key (augment_wide's critic width) replaces it in place, once.
    [(_, overrides), *_] = grid.group_runs("augment_wide")
    merged = grid.merged_overrides(grid.common_overrides("0"), overrides)
    assert "arch.ndf=64" in merged and "arch.ndf=16" not in merged and "arch.ngf=16" in merged
    assert merged.index("arch.ndf=64") == grid.common_overrides("0").index("arch.ndf=16")
    assert grid.merged_overrides(["a=1", "b=2"], ["c=3"]) == ["a=1", "b=2", "c=3"]
    assert "train.device=cuda" in grid.common_overrides("0", "cuda")
    # The DiffAugment target's grid: each loss off and on, wgan_gp with the others' generator steps.
    target = [(steps, overrides[0]) for steps, overrides in grid.group_runs("augment_wide_target")]
    assert sorted(set(target)) == [(40000, "model=dcgan"), (40000, "model=hinge"), (200000, "model=wgan_gp")]
    assert len(target) == 6


def test_keep_rows_keeps_other_settings_rows_and_rewrites_those_run_here() -> None:
    rows = results.results_rows(_experiments())
    earlier_text = results.markdown(rows, [])
    earlier = results.table_rows(earlier_text, Path("docs/results.md"))
    assert [row["model"] for row in earlier] == [row["model"] for row in rows]
    assert earlier[0]["fid"] == rows[0]["fid"] and earlier[0]["limit"] == "–"  # None reads back as –
    # Here only the first setting has experiments, with another result: its row is rewritten, the
    # other setting's row (run in another clone) stays, after the rows of this clone.
    rerun = dict(rows[0], fid="1 ± 0.1")
    merged = results.merged_rows([rerun], earlier)
    assert [row["fid"] for row in merged] == ["1 ± 0.1", rows[1]["fid"]]
    again = results.table_rows(results.markdown(merged, []), Path("docs/results.md"))
    assert again == [{column: cell(row[column]) for column in results.COLUMNS} for row in merged]


def test_keep_rows_reads_an_older_table_and_refuses_unknown_columns() -> None:
    """A table written before the environment column reads with "–" in it; an unknown column stops.
    A kept row from before the width column is replaced by a rewrite of its setting, at any width,
    also once a rewrite has written it back with "–"."""
    older = "# Results\n\n| model | fid |\n| --- | --- |\n| hinge | 3 |\n\n## Notes\n"
    [row] = results.table_rows(older, Path("r.md"))
    assert row["model"] == "hinge" and row["fid"] == "3" and row["environment"] == "–"
    rerun = {**results.results_rows(_experiments())[0], "width": "16/16"}
    assert results.merged_rows([rerun], [row]) == [rerun, row]  # another model: kept
    for column in results.SETTING_COLUMNS:
        rerun[column] = row[column]
    rerun["width"] = "16/16"
    assert results.merged_rows([rerun], [row]) == [rerun]  # the same setting, now with its width
    [written_back] = results.table_rows(results.markdown([row], []), Path("r.md"))
    assert written_back["width"] == "–" and results.merged_rows([rerun], [written_back]) == [rerun]
    rerun["environment"] = "torch 0"  # a column whose "–" is a value: no match
    assert results.merged_rows([rerun], [row]) == [rerun, row]
    with pytest.raises(GanpipeError, match=r"r\.md's table has columns .* \(gpu_hours\)"):
        results.table_rows("| model | gpu_hours |\n| --- | --- |\n| hinge | 3 |\n", Path("r.md"))
    assert results.table_rows("# Results\n\nno table yet\n", Path("r.md")) == []


def _row(width: str, fid: str, heldout: str, **cells: str) -> dict[str, str]:
    row = dict.fromkeys(results.COLUMNS, "–")
    row.update(
        model="hinge",
        loss="hinge",
        conditional="none",
        width=width,
        augment="none",
        steps="100",
        seeds="0,1,2",
    )
    row.update(data="breastmnist:breastmnist.npz", fid=fid, heldout_fid=heldout, train_time_s="150 ± 2")
    row.update(cells)
    return row


def test_which_gan_section_names_each_architectures_best_row_from_the_table() -> None:
    rows = [
        _row("64/64", "40 ± 4", "50 ± 5"),
        _row("64/64", "30 ± 3", "45 ± 5", augment="color,translation,cutout"),
        _row("resnet 64/64", "12 ± 1", "20 ± 2", steps="60", train_time_s="150 ± 3"),
        _row("resnet 64/64", "9 ± 9", "40 ± 3", conditional="projection", label_accuracy="0.9 ± 0.01"),
        _row("resnet 64/64", "1 ± 0", "1 ± 0", seeds="0"),  # one seed: never the best
        # DiffAugment on, but also longer and with LeCam: no partner for an on / off ratio.
        _row("resnet 64/64", "11 ± 1", "19 ± 2", augment="translation", steps="1500", lecam="0.3"),
        _row("64/64", "5", "5", data="local:mnist_t10k.npz", seeds="0,1,2"),  # another dataset
    ]
    page = results.markdown(rows, [])
    section = page.split("## Which GAN for my small medical set", 1)[1].split("## Data: ", 1)[0]
    assert "### `breastmnist:breastmnist.npz`" in section and "mnist_t10k" not in section
    assert "Best dcgan: `hinge` (none, DiffAugment on, 100 steps): domain FID 30 ± 3" in section
    assert "Best resnet: `hinge` (projection, DiffAugment off, 100 steps): domain FID 9 ± 9" in section
    assert "Domain FID: resnet / dcgan = 0.30× (the ranges do not overlap)" in section
    assert "Held-out FID: resnet / dcgan = 0.89× (the mean ± std ranges overlap)" in section
    assert "Conditional resnet, best:" in section and "label accuracy 0.9 ± 0.01" in section
    assert "DiffAugment on / off, dcgan domain FID: hinge none 0.75×" in section
    assert "DiffAugment on / off, resnet" not in section
    # One table per dataset, and the rows read back from the page are the rows written.
    assert page.count("| model |") == 2
    assert "## Data: `local:mnist_t10k.npz`" in page
    assert [row["fid"] for row in results.table_rows(page, Path("r.md"))] == [row["fid"] for row in rows]


def test_which_gan_section_says_when_no_dataset_has_both_architectures() -> None:
    page = results.markdown([_row("64/64", "40 ± 4", "50 ± 5")], [])
    assert "No dataset has rows of both dcgan and resnet with ≥ 3 seeds yet." in page
