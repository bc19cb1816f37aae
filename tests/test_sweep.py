"""The plan of `ganpipe sweep`, without Ray: DVC's grid, trial names, resources, one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from ganpipe.cli import main
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.sweep import plan


def test_the_grid_is_dvcs_sweep_times_the_seeds() -> None:
    trials = plan.expand(["model=dcgan,lsgan", "train.epochs=3"], "0,1")
    assert trials == [
        ("model=dcgan", "train.epochs=3", "seed=0"),
        ("model=dcgan", "train.epochs=3", "seed=1"),
        ("model=lsgan", "train.epochs=3", "seed=0"),
        ("model=lsgan", "train.epochs=3", "seed=1"),
    ]
    assert plan.expand(["train.lr=range(1,3)"], None) == [("train.lr=1",), ("train.lr=2",)]
    assert plan.expand([], None) == [()]


@pytest.mark.parametrize(
    ("set_params", "seeds", "names"),
    [
        (["seed=1"], "0,1", "seed is set twice"),
        ([], "0,a", "--seeds '0,a': expected comma-separated integers"),
        (["model=dcgan,"], None, "-S model=dcgan,: not DVC's -S syntax"),
    ],
)
def test_a_bad_grid_is_refused_in_one_line(set_params: list[str], seeds: str | None, names: str) -> None:
    with pytest.raises(GanpipeError, match="^" + names.replace("(", r"\(")) as raised:
        plan.expand(set_params, seeds)
    assert "\n" not in str(raised.value)


def test_a_trial_keeps_its_name_and_its_params_are_dvcs() -> None:
    name = plan.trial_name(("model=dcgan", "seed=0"), ["train"])
    assert name == plan.trial_name(("seed=0", "model=dcgan"), ["train"])  # the order of -S does not matter
    assert name != plan.trial_name(("model=dcgan", "seed=0"), [])
    assert name.startswith("sweep-") and len(name) == len("sweep-") + 8
    params = plan.resolved_params(REPO, ("model=wgan", "train.world_size=2"))
    assert (params["model"], params["train"]["world_size"]) == ("wgan", 2)
    with pytest.raises(
        GanpipeError, match=r"^-S train\.nope=1: DVC cannot apply it to params\.yaml"
    ) as raised:
        plan.resolved_params(REPO, ("train.nope=1",))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("device", "world_size", "cluster_gpus", "gpus"),
    [("auto", 1, 0, 0), ("cpu", 1, 0, 0), ("auto", 2, 4, 2), ("cuda", 1, 4, 1), ("cpu", 1, 4, 1)],
)
def test_a_trial_asks_for_the_gpus_it_trains_and_measures_on(
    device: str, world_size: int, cluster_gpus: int, gpus: int
) -> None:
    params = {"train": {"device": device, "world_size": world_size}}
    assert plan.gpus_per_trial(params, cluster_gpus) == gpus


def test_cuda_on_a_cluster_without_gpus_is_refused() -> None:
    with pytest.raises(GanpipeError, match=r"train\.device = 'cuda' but the Ray cluster has no GPU"):
        plan.gpus_per_trial({"train": {"device": "cuda", "world_size": 1}}, 0)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--address", "h:1"], "error: --address is for --engine ray"),
        (["--max-retries", "1"], "error: --max-retries is for --engine ray"),
        (["--engine", "ray", "-j", "2"], "error: -j is for --engine local"),
        (["--engine", "ray", "--cpus-per-trial", "0"], "error: --cpus-per-trial must be above 0"),
    ],
)
def test_a_flag_of_the_other_engine_is_refused_in_one_line(
    argv: list[str],
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["sweep", *argv])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1, err
