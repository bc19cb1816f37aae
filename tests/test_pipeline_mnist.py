"""End to end on real MNIST: `dvc exp run` from the shared npz, in a temporary copy of the repo.

A file of its own so that the test runner can give it a worker of its own, beside the long
end-to-end test of tests/test_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MNIST_NPZ, dvc


def test_real_mnist_from_local_source(repo_copy: Path) -> None:
    # The npz through DVC; the idx folder's loader is tested on the same data in tests/test_data.py.
    source = MNIST_NPZ
    if not source.exists():
        pytest.skip(f"{source} is not on this machine")
    # Up to the score stage: the figures, export and utility stages are covered by tests/test_pipeline.py.
    dvc(repo_copy, "exp", "run", "score", "-S", "data.name=local", "-S", f"data.source={source}")
    info = json.loads((repo_copy / "data/processed/info.json").read_text())
    assert info["n_classes"] == 10 and info["size"] == 28
    scores = json.loads((repo_copy / "metrics/scores.json").read_text())
    assert scores["fid"] > 0
