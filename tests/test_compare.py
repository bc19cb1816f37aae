"""`ganpipe compare` on a real `dvc exp show --json` document.

tests/fixtures/dvc_exp_show.json is the unedited output of DVC 3.67 for a toy repo whose stage
writes ganpipe-shaped metrics: a baseline (master, wgan_gp seed 0), the workspace equal to it,
`dvc exp run -S seed=1` (wgan-gp-seed1), two queued-and-run dcgan seeds, one queued run that
failed (broken) and one still queued (still-queued).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer
from PIL import Image

from ganpipe import cli
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.report import compare, results
from ganpipe.report.settings import group_settings

FIXTURE = Path(__file__).parent / "fixtures" / "dvc_exp_show.json"
FINISHED = ["master", "dcgan-seed1", "dcgan-seed0", "wgan-gp-seed1"]


@pytest.fixture()
def document() -> list[dict]:
    return json.loads(FIXTURE.read_text())


def experiments_named(document: list[dict]) -> dict[str, dict]:
    """The `revs[0]` entry of each experiment, by name, to edit the fixture in a test."""
    return {exp["name"]: exp["revs"][0] for commit in document for exp in commit["experiments"] or []}


def test_collects_finished_experiments_and_says_why_others_are_left_out(document):
    experiments, skipped = compare.collect_experiments(document)

    assert [e.name for e in experiments] == FINISHED
    assert skipped == [
        "still-queued: queued, not run yet",
        "broken: failed (Experiment run failed; see `dvc queue logs broken`)",
        "workspace: same params and metrics as master, listed once",
    ]


def test_workspace_with_its_own_results_is_kept(document):
    document[0]["data"]["metrics"]["metrics/scores.json"]["data"]["fid"] = 39.0

    experiments, _ = compare.collect_experiments(document)

    assert [e.name for e in experiments] == ["workspace", *FINISHED]


def test_experiment_without_scores_is_skipped(document):
    entry = experiments_named(document)["dcgan-seed0"]
    unreadable = {"error": {"msg": "not found", "type": "FileNotFoundError"}}  # as DVC reports it
    entry["data"]["metrics"]["metrics/scores.json"] = unreadable

    experiments, skipped = compare.collect_experiments(document)

    assert "dcgan-seed0" not in [e.name for e in experiments]
    assert any(note.startswith("dcgan-seed0: no metrics/scores.json") for note in skipped)


def test_commit_that_never_ran_the_pipeline_is_left_out_without_a_note(document):
    document[0]["data"]["metrics"] = {}  # e.g. one of the commits `dvc exp show --all-commits` lists

    experiments, skipped = compare.collect_experiments(document)

    assert [e.name for e in experiments] == FINISHED
    assert not any(note.startswith("workspace") for note in skipped)


def test_unreadable_workspace_is_skipped_with_dvcs_message(document):
    reason = "unable to read: 'dvc.yaml', YAML file structure is corrupted"  # DVC's words
    document[0]["data"] = None
    document[0]["error"] = {"msg": reason, "type": "YAMLSyntaxError"}

    experiments, skipped = compare.collect_experiments(document)

    assert [e.name for e in experiments] == FINISHED
    assert skipped[0] == f"workspace: could not be read ({reason})"


def test_table_has_the_selected_models_params_and_is_sorted_by_fid(document):
    table = compare.comparison_table(compare.collect_experiments(document)[0])

    assert list(table["experiment"]) == ["master", "wgan-gp-seed1", "dcgan-seed0", "dcgan-seed1"]
    assert list(table["fid"]) == [40.0, 43.0, 65.0, 68.0]
    dcgan = table.set_index("experiment").loc["dcgan-seed1"]
    expected = {
        "model": "dcgan",
        "arch": "dcgan",
        "loss": "bce",
        "conditional": "none",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "n_critic": 1,
        "seed": 1,
        "data": "digits",
        "epochs": 2,
        "wall_time_s": 13.5,
        "rev": "3fb5d3f",
    }
    assert {key: dcgan[key] for key in expected} == expected


def test_markdown_report_lists_rows_and_skipped(document):
    experiments, skipped = compare.collect_experiments(document)

    report = compare.markdown_report(compare.comparison_table(experiments), skipped)

    header = (
        "| experiment | rev | model | arch | loss | conditional | lr_g | lr_d | n_critic | epochs | data "
        "| seed | fid |"
    )
    assert header in report
    row = "| dcgan-seed1 | 3fb5d3f | dcgan | dcgan | bce | none | 0.0002 | 0.0002 | 1 | 2 | digits | 1 | 68 |"
    assert row in report
    assert "- broken: failed" in report
    assert "Warning" not in report


def test_markdown_report_warns_when_sample_counts_differ(document):
    scores = experiments_named(document)["dcgan-seed0"]["data"]["metrics"]["metrics/scores.json"]["data"]
    scores["num_generated"] = 5000
    experiments, skipped = compare.collect_experiments(document)

    report = compare.markdown_report(compare.comparison_table(experiments), skipped)

    assert "**Warning:** the rows were scored on different sample counts (1000, 5000)" in report


@pytest.mark.parametrize("drop_is", [False, True])
def test_comparison_chart_is_written(document, tmp_path, drop_is):
    if drop_is:  # a score stage that computed no IS: the panel says so instead of failing
        for entry in [document[1], *experiments_named(document).values()]:
            entry["data"]["metrics"].get("metrics/scores.json", {}).get("data", {}).pop("is_mean", None)
    settings = group_settings(compare.collect_experiments(document)[0])

    path = compare.plot_comparison(settings, tmp_path / "comparison.png")

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 600


def test_compare_writes_report_and_chart(document, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: document)

    written, table = compare.compare(tmp_path / "reports")

    assert [p.name for p in written] == ["comparison.md", "comparison.png"]
    assert all(p.exists() for p in written)
    assert len(table) == len(FINISHED)


def test_compare_adds_the_workspace_privacy_figures(document, tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: document)
    monkeypatch.chdir(tmp_path)
    gallery = tmp_path / compare.paths.COPY_GALLERY
    gallery.parent.mkdir(parents=True)
    Image.new("L", (8, 8)).save(gallery)

    written, _ = compare.compare(tmp_path / "reports")

    assert [p.name for p in written] == ["comparison.md", "comparison.png", "copy_gallery.png"]
    assert written[2].read_bytes() == gallery.read_bytes()
    assert "![copy_gallery](copy_gallery.png)" in written[0].read_text()


def test_no_finished_experiment_is_one_line_error(document, monkeypatch, tmp_path):
    only_queued = copy.deepcopy(document)
    only_queued[0]["data"]["metrics"] = {}
    only_queued[1]["data"]["metrics"] = {}
    only_queued[1]["experiments"] = [e for e in only_queued[1]["experiments"] if e["name"] == "still-queued"]
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: only_queued)

    with pytest.raises(GanpipeError, match=r"^no experiment has metrics yet \(.*still-queued: queued"):
        compare.compare(tmp_path)


def test_missing_dvc_is_one_line_error(monkeypatch):
    monkeypatch.setattr(compare.shutil, "which", lambda name: None)

    with pytest.raises(GanpipeError, match="dvc not found on PATH"):
        compare.run_exp_show()


def test_outside_a_dvc_repo_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(GanpipeError, match=r"dvc exp show --json` failed: .*not inside of a DVC repository"):
        compare.run_exp_show()


def test_cli_reports_user_errors_in_one_line(monkeypatch, capsys):
    def fail(out_dir: Path, all_commits: bool) -> None:
        raise GanpipeError("no experiment has metrics yet")

    monkeypatch.setattr(compare, "compare", fail)

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare"])

    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: no experiment has metrics yet\n"


def test_cli_compare_passes_its_options(monkeypatch, capsys, tmp_path, document):
    calls = []

    def fake_compare(out_dir: Path, all_commits: bool):
        calls.append((out_dir, all_commits))
        return [out_dir / "comparison.md"], compare.comparison_table(compare.collect_experiments(document)[0])

    monkeypatch.setattr(compare, "compare", fake_compare)

    cli.main(["compare", "--out", str(tmp_path), "--all-commits"])

    assert calls == [(tmp_path, True)]
    assert capsys.readouterr().out.startswith("4 experiments compared; wrote ")


def hinge_runs(document: list[dict]) -> list[dict]:
    """The fixture's four finished runs made hinge runs of one dataset, code and length that differ
    in conditioning and seed: (none, seeds 0 and 1), (projection, seed 0), (acgan, seed 1). The
    workspace stays master's twin, so it is listed once."""
    entries = {"workspace": document[0], "master": document[1], **experiments_named(document)}
    for name, (mode, seed) in {
        "workspace": ("none", 0),
        "master": ("none", 0),
        "wgan-gp-seed1": ("none", 1),
        "dcgan-seed0": ("projection", 0),
        "dcgan-seed1": ("acgan", 1),
    }.items():
        params = entries[name]["data"]["params"]["params.yaml"]["data"]
        params.update(model="hinge", seed=seed)
        params["models"]["hinge"] = {"loss": "hinge", "lr_g": 2e-4, "lr_d": 2e-4, "conditional": mode}
    return document


def test_the_chart_draws_one_bar_per_setting_and_n_counts_seeds(document, tmp_path, monkeypatch):
    """Runs that differ in conditioning are separate bars, labelled by it; runs that differ only in
    seed pool, n = their seeds, error bar = their std; one seed has no error bar and says "1 seed".
    (At 520fa71 the bars grouped by model: one hinge bar of n=4.)"""
    monkeypatch.setattr(compare, "run_exp_show", lambda all_commits, repo: hinge_runs(document))
    figures = []
    monkeypatch.setattr(compare, "save_figure", lambda path, figure: figures.append(figure))

    compare.compare(tmp_path)

    [figure] = figures
    fid_axes = figure.axes[0]
    ticks = [tick.get_text() for tick in fid_axes.get_xticklabels()]
    assert ticks == ["hinge\nnone", "hinge\nacgan", "hinge\nprojection"]  # what differs: conditioning
    assert len(fid_axes.patches) == 3  # one bar per setting
    fids = {
        run.params["seed"]: run.metrics["metrics/scores.json"]["fid"]
        for run in (compare.collect_experiments(hinge_runs(json.loads(FIXTURE.read_text())))[0])
        if run.params["models"]["hinge"]["conditional"] == "none"
    }
    mean, std = (fids[0] + fids[1]) / 2, abs(fids[0] - fids[1]) / 2**0.5
    assert fid_axes.patches[0].get_height() == pytest.approx(mean)
    notes = [text.get_text() for text in fid_axes.texts]
    assert notes[0] == f"{mean:.3g} ± {std:.2g}\n2 seeds"
    assert notes[1:] == [f"{fid:.3g}\n1 seed" for fid in (68.0, 65.0)]  # dcgan-seed1's, dcgan-seed0's
    error_bars = [c for c in fid_axes.containers if isinstance(c, ErrorbarContainer)]
    assert len(error_bars) == 1  # for the 2-seed bar alone
    assert "differ only in seed" in figure.texts[0].get_text()  # the title names what bars pool


def test_compare_and_results_agree_on_which_runs_form_a_setting(document):
    """On one `dvc exp show` document: compare's table labels each run with its bar, and the runs
    under each label are the seeds of one results row, in the same order."""
    experiments, skipped = compare.collect_experiments(hinge_runs(document))

    table = compare.comparison_table(experiments)
    report = compare.markdown_report(table, skipped, group_settings(experiments))
    rows = results.results_rows(experiments)

    by_label: dict[str, list[int]] = {}
    for label, seed in zip(table["setting"], table["seed"], strict=True):
        by_label.setdefault(label, []).append(seed)
    # The labels name the model, then the conditioning: the one setting column that differs here.
    assert {label: ",".join(map(str, sorted(seeds))) for label, seeds in by_label.items()} == {
        f"hinge · {row['conditional']}": row["seeds"] for row in rows
    }
    assert len(rows) == 3
    for row in rows:  # the settings table (the chart's bars), in the results table's order
        assert f"| hinge · {row['conditional']} | {row['seeds']} | {row['fid']} |" in report
    bars = [line.split(" | ")[0][2:] for line in report.split("## Settings")[1].splitlines()[4:7]]
    assert bars == [f"hinge · {row['conditional']}" for row in rows]
