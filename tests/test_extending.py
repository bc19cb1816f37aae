"""docs/extending.md's architecture and metric examples, applied to a copy of the repository as the
page says: they change only the files the page names, and the pipeline trains, samples and scores
through them, and `ganpipe compare` and `ganpipe results` show the new metric, with no other edit."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import yaml
from conftest import REPO, run, tiny_params, write_params
from test_docs import code_block

# The files the two examples name: the ones they edit or add, and the generated files they regenerate.
NAMED = {
    "ganpipe/gan/arch/mlp.py",
    "ganpipe/gan/catalog.py",
    "ganpipe/measure/metrics.py",
    "dvc.yaml",
    "docs/params.md",
    "params.yaml",
}
STAGES = ("download", "preprocess", "classifier", "reference", "train", "sample", "score")


def _add_entry(path: Path, opening: str, entry: str) -> None:
    """Put `entry` last in the tuple of entries that the registry opened by `opening` is built from,
    with a comma after it as its neighbours have."""
    text = path.read_text()
    start = text.index(opening)
    end = text.index("\n    )\n}", start)
    path.write_text(text[:end] + "\n" + textwrap.indent(entry.strip() + ",", " " * 8) + text[end:])


def _changed(repo: Path) -> set[str]:
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout
    return {line[3:] for line in status.splitlines()}


def test_a_new_architecture_and_metric_touch_only_the_files_they_name(repo_copy: Path) -> None:
    repo = repo_copy
    (repo / "docs").mkdir()
    for name in ("docs/params.md", "params.yaml"):  # the page and the commented file it is made from
        shutil.copy2(REPO / name, repo / name)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "the params page"], repo)
    deps_before = (repo / "dvc.yaml").read_text()

    # The examples, as the page gives them.
    architecture = "A new architecture"
    (repo / "ganpipe/gan/arch/mlp.py").write_text(code_block(architecture, "# ganpipe/gan/arch/mlp.py"))
    _add_entry(
        repo / "ganpipe/gan/catalog.py",
        "ARCHITECTURES: dict[str, Architecture] = {",
        code_block(architecture, "# ganpipe/gan/catalog.py, an entry of ARCHITECTURES"),
    )
    recipes = code_block(architecture, "# params.yaml, under recipes:")
    params_file = repo / "params.yaml"
    params_file.write_text(params_file.read_text().replace("\nrecipes:\n", f"\nrecipes:\n{recipes}\n", 1))
    metrics = repo / "ganpipe/measure/metrics.py"
    function = code_block("A new metric", "# ganpipe/measure/metrics.py, above METRICS")
    metrics.write_text(metrics.read_text().replace("\nMETRICS = {", f"\n{function}\n\nMETRICS = {{"))
    _add_entry(
        metrics,
        "METRICS = {",
        code_block("A new metric", "# ganpipe/measure/metrics.py, an entry of METRICS"),
    )
    run([sys.executable, "-m", "ganpipe.pipeline.deps", "--write"], repo)
    run([sys.executable, "-m", "ganpipe.params_doc", "--write"], repo)
    assert _changed(repo) <= NAMED, _changed(repo) - NAMED
    # The new file is covered by the stages that build networks, which list ganpipe/gan/arch whole.
    assert (repo / "dvc.yaml").read_text() == deps_before
    assert "one of dcgan, resnet, mlp" in (repo / "docs/params.md").read_text()

    # The pipeline through both: a conditional mlp model, trained, sampled and scored.
    params = tiny_params(model="hinge", arch__name="mlp", data__channels=1, train__max_steps=4)
    params["recipes"] = yaml.safe_load(params_file.read_text())["recipes"]
    params["models"]["hinge"]["conditional"] = "projection"
    write_params(repo, params)
    for stage in STAGES:
        run([sys.executable, "-m", f"stages.{stage}"], repo)
    scores = json.loads((repo / "metrics/scores.json").read_text())
    assert 0 <= scores["class_balance"] <= 1
    generator = run(
        [
            sys.executable,
            "-c",
            "import torch; from ganpipe.gan.models import generator_from_checkpoint as g; "
            "print(type(g(torch.load('data/train/generator.pt', weights_only=True))).__name__)",
        ],
        repo,
    )
    assert generator.stdout.strip() == "MLPGenerator"

    # The reports: the per-run comparison and the results table, from the run's files.
    report = run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import json, yaml
                from ganpipe.report.compare import Experiment
                from ganpipe.report.results import markdown, results_rows
                files = ["metrics/scores.json", "metrics/train.json"]
                run = Experiment("mlp", "workspace", yaml.safe_load(open("params.yaml")),
                                 {name: json.load(open(name)) for name in files})
                row = results_rows([run])[0]
                print(json.dumps([run.row()["class_balance"], row["class_balance"], markdown([row], [])]))
                """
            ),
        ],
        repo,
    )
    compared, tabled, page = json.loads(report.stdout)
    assert compared == scores["class_balance"]
    assert float(tabled) == float(f"{scores['class_balance']:.4g}")
    assert next(line for line in page.splitlines() if line.startswith("| model |")).endswith(
        " class_balance |"
    )
    assert "- `class_balance`: the entropy" in page
