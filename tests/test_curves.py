"""The results page's FID-against-time section (ganpipe.report.curves): each run's curve read back from
its commit, a setting's mean over seeds, the verdict per training budget and the EMA's gain."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ganpipe.pipeline import paths
from ganpipe.pipeline.exp_show import WORKSPACE
from ganpipe.report.compare import Experiment
from ganpipe.report.curves import Curve, budget_lines, curve_summary, ema_lines, run_curve, setting_curve
from ganpipe.report.settings import Setting

VALUES = {"model": "hinge", "conditional": "none", "width": "64/64", "augment": "none", "recipe": "model"}


def _curve(label: str, arch: str, seconds: list[float], fids: list[list[float]], raw=None) -> Curve:
    fid = np.array(fids, dtype=float)
    return Curve(
        label=label,
        data="digits",
        architecture=arch,
        seconds=np.array([seconds] * len(fids), dtype=float),
        fid=fid,
        fid_generator=fid if raw is None else np.array(raw, dtype=float),
    )


def _train_json(folder: Path, fid: list[float], raw: list[float], seconds: list[float]) -> None:
    path = folder / paths.TRAIN_METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    curve = {"epoch": [1, 2], "step": [8, 16], "train_seconds": seconds, "fid": fid, "fid_generator": raw}
    path.write_text(json.dumps({"steps": 16, "fid_curve": curve}))


def test_a_runs_curve_is_read_from_its_commit_and_from_the_workspace(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    _train_json(tmp_path, [50.0, 40.0], [52.0, 45.0], [10.0, 20.0])
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "run"], cwd=tmp_path, check=True)
    rev = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    _train_json(tmp_path, [30.0, 20.0], [30.0, 20.0], [11.0, 21.0])  # the workspace moved on
    committed = run_curve(Experiment("run", rev, {}, {}), tmp_path)
    assert committed is not None and committed["fid"] == [50.0, 40.0]
    assert run_curve(Experiment(WORKSPACE, WORKSPACE, {}, {}), tmp_path)["fid"] == [30.0, 20.0]
    assert run_curve(Experiment("gone", "0" * 40, {}, {}), tmp_path) is None


def test_a_settings_curve_is_cut_to_the_evaluations_every_seed_reached(tmp_path: Path) -> None:
    runs = []
    for seed, (fid, seconds) in enumerate((([50.0, 40.0], [10.0, 20.0]), ([60.0], [12.0]))):
        folder = tmp_path / str(seed)
        _train_json(folder, fid, fid, seconds)
        runs.append(Experiment(WORKSPACE, WORKSPACE, {"seed": seed}, {}))
    # Each run reads its own folder: the workspace entry of two repos.
    curves = [setting_curve(Setting(VALUES, (run,)), "x", tmp_path / str(i)) for i, run in enumerate(runs)]
    assert [c.fid.tolist() for c in curves] == [[[50.0, 40.0]], [[60.0]]]
    both = setting_curve(Setting(VALUES, tuple(runs)), "x", tmp_path / "0")
    assert both.seeds == 2 and both.fid.shape == (2, 2) and not both.has_ema


def test_at_budget_takes_each_runs_last_evaluation_within_it() -> None:
    curve = _curve("a", "dcgan", [100, 200, 300], [[90, 60, 40], [80, 70, 50]])
    assert curve.at_budget(250).tolist() == [60, 70]
    assert curve.at_budget(300).tolist() == [40, 50]
    assert curve.at_budget(310).tolist() == [40, 50]  # within BUDGET_TOLERANCE of its end
    assert curve.at_budget(500) is None  # never trained that long
    assert curve.at_budget(50) is None  # no evaluation yet


def test_budget_verdicts_name_each_architectures_best_and_say_when_ranges_overlap() -> None:
    seconds = [150, 300, 500]
    dcgan = _curve("fast", "dcgan", seconds, [[30, 28, 27], [32, 29, 28], [31, 30, 29]])
    resnet = _curve("slow", "resnet", seconds, [[60, 26, 15], [70, 28, 14], [65, 30, 16]])
    worse = _curve("worse", "resnet", seconds, [[90, 80, 70]] * 3)
    few = _curve("one seed", "resnet", seconds, [[1, 1, 1]])  # under MIN_SEEDS: never a verdict
    lines = budget_lines([dcgan, resnet, worse, few])
    assert lines[0] == "### `digits`, by training time"
    at = {line.split(":")[0]: line for line in lines if line.startswith("- At")}
    assert at["- At 150 s"] == "- At 150 s: `fast` 31 ± 1; `slow` 65 ± 5: dcgan leads."
    assert at["- At 300 s"].endswith("resnet leads, but the mean ± std ranges overlap.")
    assert at["- At 500 s"].endswith("resnet leads.") and "`slow` 15 ± 1" in at["- At 500 s"]


def test_ema_lines_give_both_generators_last_fid_and_their_ratio() -> None:
    with_ema = _curve("e", "dcgan", [10, 20], [[50, 30], [50, 40]], raw=[[60, 60], [60, 20]])
    assert ema_lines([with_ema, _curve("plain", "dcgan", [10, 20], [[50, 30]])]) == [
        "- `digits` `e` at 20 s: EMA 35 ± 7.1, trained generator 40 ± 28 "
        "(EMA / trained per seed: 0.50, 2.00)."
    ]


def test_the_summary_draws_the_figure_or_says_nothing_without_curves(tmp_path: Path) -> None:
    settings = []
    _train_json(tmp_path / "repo", [50.0, 40.0], [55.0, 45.0], [100.0, 160.0])
    for seed in range(3):  # three seeds' entries, all reading the workspace's curve
        settings.append(Experiment(WORKSPACE, WORKSPACE, {"seed": seed}, {}))
    values: dict[str, Any] = {**VALUES, "data": "digits", "ema": 0.999, "lecam": "none", "steps": 16}
    figure = tmp_path / "out" / "results_fid_against_time.png"
    figure.parent.mkdir()
    lines = curve_summary([Setting(values, tuple(settings))], figure, tmp_path / "repo")
    assert figure.stat().st_size > 10_000
    assert f"![Domain FID against training time]({figure.name})" in lines
    assert (
        "- At 150 s: `dcgan hinge none, recipe model, EMA 0.999, 16 steps` 50 ± 0: "
        "only dcgan was trained this long." in lines
    )
    assert curve_summary([Setting(values, tuple(settings))], figure, tmp_path / "none") == []


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_curve_architecture_comes_from_the_width_cell(tmp_path: Path, arch: str) -> None:
    _train_json(tmp_path, [50.0], [50.0], [10.0])
    width = "64/64" if arch == "dcgan" else "resnet 64/64"
    curve = setting_curve(
        Setting({**VALUES, "width": width}, (Experiment(WORKSPACE, WORKSPACE, {}, {}),)), "x", tmp_path
    )
    assert curve.architecture == arch
