"""Many machines, one comparison: the DVC-native flow of docs/scaling-out.md, end to end.

A bare Git repository stands in for the shared Git remote and a local folder for the DVC remote.
The origin clone runs the shared stages once and pushes them; two "machines" (clones) pull those
instead of recomputing, each runs its own model and pushes the experiment; a third clone pulls
both experiments and `ganpipe compare` tables them together.

The data is real MNIST from ../shared/data's npz (`data.name=local`) where that file exists, so the
same run also takes real data through every stage from download to score; digits elsewhere.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from conftest import MNIST_NPZ, dvc, ran_stages, run, tiny_params, write_params

SHARED_STAGES = ("download", "preprocess", "classifier", "reference", "train_reference")
MACHINES = {"machine-a": "lsgan", "machine-b": "dcgan"}  # clone -> the model it runs


def _clone(bare: Path, branch: str, folder: Path) -> Path:
    run(["git", "clone", "-q", "-b", branch, str(bare), str(folder)], folder.parent)
    run(["git", "config", "user.email", "ci@ganpipe.invalid"], folder)
    run(["git", "config", "user.name", "ganpipe tests"], folder)
    return folder


def _machine(bare: Path, branch: str, folder: Path, model: str) -> str:
    """One machine: clone, pull the shared outputs, run one experiment, push it; its run's stdout."""
    machine = _clone(bare, branch, folder)
    dvc(machine, "pull", *SHARED_STAGES)  # the shared outputs, instead of recomputing them
    # `score` as the target: what the comparison needs (train, sample, score). A real sweep runs the
    # whole pipeline, plots included; that changes nothing in this flow but the time.
    result = dvc(machine, "exp", "run", "-n", f"{model}-run", "-S", f"model={model}", "score")
    # Every experiment of HEAD: the exp ref to the Git remote, its cached outputs to the DVC remote.
    dvc(machine, "exp", "push", "origin")
    return result.stdout


def _exp_metrics(repo: Path) -> dict[str, tuple[str, float]]:
    """experiment name -> (model, fid), straight from `dvc exp show --json`."""
    shown = json.loads(dvc(repo, "exp", "show", "--json", "--all-commits").stdout)
    found = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            model = data["params"]["params.yaml"]["data"]["model"]
            found[experiment["name"]] = (model, data["metrics"]["metrics/scores.json"]["data"]["fid"])
    return found


def test_two_machines_push_experiments_and_a_third_compares_them(repo_copy: Path, tmp_path: Path) -> None:
    origin = repo_copy
    bare, storage = tmp_path / "remote.git", tmp_path / "dvc-storage"
    run(["git", "init", "-q", "--bare", str(bare)], tmp_path)
    real_mnist = MNIST_NPZ.exists()
    data = {"data__name": "local", "data__source": str(MNIST_NPZ)} if real_mnist else {}
    write_params(origin, tiny_params(**data))  # no FID during training: the test stays fast
    run(["git", "remote", "add", "origin", str(bare)], origin)
    dvc(origin, "remote", "add", "-d", "storage", str(storage))
    # The shared stages run once; their outputs go to the DVC remote, dvc.lock and the git-tracked
    # metrics to the Git remote.
    shared = dvc(origin, "repro", *SHARED_STAGES[-2:])
    assert ran_stages(shared.stdout) == set(SHARED_STAGES), shared.stdout
    info = json.loads((origin / "data/processed/info.json").read_text())
    assert (info["name"], info["n_classes"], info["size"]) == ("local" if real_mnist else "digits", 10, 28)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-q", "-m", "shared stages"], origin)
    branch = run(["git", "symbolic-ref", "--short", "HEAD"], origin).stdout.strip()
    run(["git", "push", "-q", "origin", branch], origin)
    dvc(origin, "push")

    # Both machines at once, as they would be; each runs the generated side of its own model only.
    with ThreadPoolExecutor(len(MACHINES)) as pool:
        outputs = list(
            pool.map(lambda item: _machine(bare, branch, tmp_path / item[0], item[1]), MACHINES.items())
        )
    for output in outputs:
        assert ran_stages(output) == {"train", "sample", "score"}, output  # the shared stages were pulled

    third = _clone(bare, branch, tmp_path / "laptop")
    # Work went on here: HEAD is no longer the experiments' baseline, hence --all-commits below.
    run(["git", "commit", "-q", "--allow-empty", "-m", "later work"], third)
    dvc(third, "exp", "pull", "origin", "--all-commits")
    pulled = _exp_metrics(third)
    assert {name: model for name, (model, _fid) in pulled.items()} == {
        f"{model}-run": model for model in MACHINES.values()
    }

    run(["ganpipe", "compare", "--all-commits"], third)
    table = (third / "reports/comparison.md").read_text()
    for name, (model, fid) in pulled.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {model} |" in row and f"{fid:.4g}" in row, (name, row)

    # `ganpipe results` writes the page whole (table, environments, protocol): the sections written
    # by hand after an old table go, and so do its rows (no --keep-rows).
    results = third / "docs/results.md"
    results.parent.mkdir(exist_ok=True)
    sections = "## How this table was made\n\nan earlier run\n\n## Notes\n\n- written by hand\n"
    results.write_text("# Results\n\n| model |\n| --- |\n| an old row |\n\n" + sections)
    run(["ganpipe", "results", "--all-commits"], third)
    written = results.read_text()
    assert "written by hand" not in written and "an earlier run" not in written
    assert "## Environments" in written and "## Protocol" in written
    table = written
    # Rows of this clone's experiments only: the old file's rows are gone.
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(row.split(" | ")[0].strip("| ") for row in rows) == sorted(MACHINES.values()), table

    # The cached outputs travelled too: the pulled experiment's weights are in the third clone's cache.
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], third).stdout.split()
    ref = next(ref for ref in refs if ref.endswith("/lsgan-run"))  # refs/exps/<baseline>/<name>
    lock = yaml.safe_load(run(["git", "show", f"{ref}:dvc.lock"], third).stdout)
    md5 = next(out["md5"] for out in lock["stages"]["train"]["outs"] if out["path"] == "data/train")
    assert (third / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).exists()
