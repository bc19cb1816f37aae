"""End to end: real `dvc repro` / `dvc exp run` of the whole pipeline in a temporary copy of the repo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PIPELINE_STAGES, dvc, ran_stages, run

from ganpipe.report.compare import finished_experiments

FIGURES = (
    "losses.png",
    "wasserstein.png",
    "epoch_progression.png",
    "samples_vs_real.png",
    "fid.png",
    "class_histogram.png",
)
SCORE_KEYS = {
    "fid",
    "is_mean",
    "is_std",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "num_generated",
    "num_real",
    "resizer",
    "extractors",
    "torch_fidelity_version",
}


def _commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)


def test_repro_experiments_and_compare(repo_copy: Path) -> None:
    first = dvc(repo_copy, "repro")
    assert ran_stages(first.stdout) == set(PIPELINE_STAGES)
    train_metrics = json.loads((repo_copy / "metrics/train.json").read_text())
    scores = json.loads((repo_copy / "metrics/scores.json").read_text())
    assert train_metrics["steps"] > 0 and train_metrics["model"] == "wgan_gp"
    fid_rows = [row.split("\t") for row in (repo_copy / "plots/train/fid.tsv").read_text().splitlines()]
    assert fid_rows[0] == ["epoch", "step", "train_seconds", "fid", "fid_generator"]
    assert len(fid_rows) == 1 + train_metrics["epochs"]
    last = dict(zip(fid_rows[0], map(float, fid_rows[-1]), strict=True))
    assert train_metrics["final_fid"] == pytest.approx(last["fid"], rel=1e-5)
    assert train_metrics["fid_curve"]["fid_generator"][-1] == pytest.approx(last["fid_generator"], rel=1e-5)
    assert scores.keys() >= SCORE_KEYS
    assert scores["fid"] > 0
    for figure in FIGURES:
        assert (repo_copy / "plots/figures" / figure).stat().st_size > 10_000, figure
    assert (repo_copy / "plots/real_grid.png").exists() and (repo_copy / "plots/samples_grid.png").exists()

    again = dvc(repo_copy, "repro")
    assert ran_stages(again.stdout) == set(), again.stdout
    # Up to date (`dvc status` clean) and not committed yet: the workspace is the run to compare.
    run(["ganpipe", "compare"], repo_copy)
    assert "| workspace | workspace | wgan_gp |" in (repo_copy / "reports/comparison.md").read_text()
    _commit(repo_copy, "baseline results")
    metric_files = ("metrics/train.json", "metrics/scores.json")
    baseline = {file: (repo_copy / file).read_text() for file in metric_files}

    # Another model: only the generated side re-runs; the reference statistics are reused.
    lsgan = dvc(repo_copy, "exp", "run", "-S", "model=lsgan")
    generated_side = {"train", "sample", "privacy", "export", "utility", "score", "plots"}
    assert ran_stages(lsgan.stdout) == generated_side, lsgan.stdout
    diff = json.loads(dvc(repo_copy, "metrics", "diff", "--all", "--json").stdout)
    for file in ("metrics/train.json", "metrics/scores.json"):
        old = json.loads(run(["git", "show", f"HEAD:{file}"], repo_copy).stdout)
        new = json.loads((repo_copy / file).read_text())
        assert old.keys() == new.keys(), file
    numeric_keys = SCORE_KEYS - {"resizer", "extractors", "torch_fidelity_version"}
    assert numeric_keys <= set(diff["metrics/scores.json"])

    # Back to the first model: every stage is restored from the run cache, no stage command runs.
    revisit = dvc(repo_copy, "exp", "run", "-S", "model=wgan_gp")
    assert ran_stages(revisit.stdout) == set(), revisit.stdout
    assert "is cached - skipping run" in revisit.stdout
    assert {file: (repo_copy / file).read_text() for file in baseline} == baseline

    # A scoring change re-measures; it never retrains.
    more_real = dvc(repo_copy, "exp", "run", "-S", "score.num_real=100")
    remeasured = ran_stages(more_real.stdout)
    assert {"reference", "score"} <= remeasured and "train" not in remeasured, more_real.stdout
    assert json.loads((repo_copy / "metrics/scores.json").read_text())["num_real"] == 100

    shown = json.loads(dvc(repo_copy, "exp", "show", "--json").stdout)
    fids = {}  # experiment name -> (model, fid)
    experiments = [exp for commit in shown for exp in commit.get("experiments") or []]
    for experiment in experiments:
        for rev in experiment["revs"]:
            data = rev["data"]
            model = data["params"]["params.yaml"]["data"]["model"]
            fids[rev["name"]] = (model, data["metrics"]["metrics/scores.json"]["data"]["fid"])
    assert {model for model, _fid in fids.values()} == {"wgan_gp", "lsgan"}

    run(["ganpipe", "compare"], repo_copy)
    table = (repo_copy / "reports/comparison.md").read_text()
    assert (repo_copy / "reports/comparison.png").stat().st_size > 10_000
    for name, (model, fid) in fids.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {model} |" in row and f"{fid:.4g}" in row, (name, model, fid, row)

    # 64 px: the image size is seen by the run cache, so preprocess runs again (a param named `size`
    # was left out of DVC's run-cache key and restored 28 px data). Its outputs are what every later
    # stage is keyed on; training at 64 px is covered by test_train and test_conditional.
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["data"]["image_size"] = 64
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    resized = dvc(repo_copy, "repro", "preprocess")
    assert "preprocess" in ran_stages(resized.stdout), resized.stdout
    assert json.loads((repo_copy / "data/processed/info.json").read_text())["size"] == 64
    with np.load(repo_copy / "data/processed/train.npz") as processed:
        assert processed["images"].shape[1:] == (3, 64, 64)

    # The workspace's metrics are still the 28 px run's, its params.yaml says 64 px: compare leaves
    # it out and says why, instead of a row that pairs the new params with the old metrics.
    run(["ganpipe", "compare"], repo_copy)
    report = (repo_copy / "reports/comparison.md").read_text()
    assert "| workspace |" not in report and "workspace: `dvc status` lists changes" in report, report
    assert all(f"| {name} |" in report for name in fids)

    # The same collection from another directory, through `repo` (results_grid's path to a clone).
    experiments, skipped = finished_experiments(repo=repo_copy)
    assert set(fids) <= {experiment.name for experiment in experiments}
    assert any(reason.startswith("workspace: `dvc status` lists changes") for reason in skipped), skipped


def test_default_params_without_network_fail_fast_at_download(
    repo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["data"].update(name="pathmnist", limit=None)
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # No real download even where the network is up: every proxy points at a closed local port, so
    # the real download code fails at once, as it does offline.
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    start = time.monotonic()
    result = dvc(repo_copy, "repro", check=False)
    assert time.monotonic() - start < 60
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "pathmnist" in errors[0] and "data.source" in errors[0] and "digits" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (repo_copy / "data/processed").exists()
