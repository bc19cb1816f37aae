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
from PIL import Image

from ganpipe import cli
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.report import compare

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
        "| experiment | rev | model | loss | conditional | lr_g | lr_d | n_critic | epochs | data | seed "
        "| fid |"
    )
    assert header in report
    row = "| dcgan-seed1 | 3fb5d3f | dcgan | bce | none | 0.0002 | 0.0002 | 1 | 2 | digits | 1 | 68 |"
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
    table = compare.comparison_table(compare.collect_experiments(document)[0])
    if drop_is:  # a score stage that computed no IS: the panel says so instead of failing
        table["is_mean"] = None

    path = compare.plot_comparison(table, tmp_path / "comparison.png")

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
