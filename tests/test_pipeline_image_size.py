"""End to end: a new image size re-runs the whole pipeline at that size (`dvc exp run`, temporary copy).

A regression test of the run cache: a param named `size` was left out of DVC's run-cache key, so an
experiment at 64 px restored the 28 px data of an earlier run. A file of its own, apart from the
long end-to-end test of tests/test_pipeline.py, so that the test runner can run the two side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import PIPELINE_STAGES, dvc, ran_stages, run, tiny_params, write_params


def test_a_new_image_size_reruns_every_stage_at_that_size(repo_copy: Path) -> None:
    # Fewer images than the other pipeline tests: at 64 px the classifier and training cost 5 times more.
    write_params(repo_copy, tiny_params(data__limit=96))
    run(["git", "commit", "-q", "-am", "96 images"], repo_copy)
    # The 28 px data in the run cache: what a key without the image size would restore.
    first = dvc(repo_copy, "repro", "preprocess")
    assert ran_stages(first.stdout) == {"download", "preprocess"}, first.stdout

    # One epoch of training and of the classifier: they change no data, and keep the run short.
    hinge = dvc(repo_copy, "exp", "run", "-S", "model=hinge", "-S", "data.image_size=64",
                "-S", "train.epochs=1", "-S", "classifier.epochs=1")
    assert ran_stages(hinge.stdout) == set(PIPELINE_STAGES), hinge.stdout
    assert json.loads((repo_copy / "data/processed/info.json").read_text())["size"] == 64
    with np.load(repo_copy / "data/processed/train.npz") as processed:
        assert processed["images"].shape[1:] == (3, 64, 64)
    with np.load(repo_copy / "data/samples/samples.npz") as samples:
        assert samples["images"].shape[1:] == (3, 64, 64)
    scores = json.loads((repo_copy / "metrics/scores.json").read_text())
    assert json.loads((repo_copy / "metrics/train.json").read_text())["model"] == "hinge"
    assert scores["fid"] > 0 and scores["num_generated"] == 128 and scores["num_real"] == 96
