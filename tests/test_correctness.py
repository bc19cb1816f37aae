"""Results DVC can never get wrong: representative references, no invisible params, complete code deps,
independent random streams (issue 11). The DVC behaviour itself (run cache on revisits, no retraining
for a metric change, a new image side) is exercised by the end-to-end test in test_pipeline.py."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_params
from sklearn.datasets import load_digits

from ganpipe.data import download, preprocess
from ganpipe.measure import score
from ganpipe.measure.classifier import train_and_evaluate
from ganpipe.pipeline import paths
from ganpipe.pipeline.deps import import_closure, missing_deps
from ganpipe.pipeline.io import save_npz
from ganpipe.pipeline.processed import class_quotas, read_split, stratified_subset
from ganpipe.pipeline.streams import STREAMS, numpy_rng, seed_globals, stream_seed, torch_generator

# --- named random streams ------------------------------------------------------------------------------


def test_no_two_random_streams_coincide() -> None:
    """Over seeds 0-9 and epochs 0-100 (and the stream-wide key), every stream key has its own seed."""
    keys = [(seed, name, epoch) for seed in range(10) for name in STREAMS for epoch in (None, *range(101))]
    seeds = {stream_seed(*key) for key in keys}
    assert len(seeds) == len(keys)
    # ...and their first draws differ too (the generators really are different).
    firsts = {int(numpy_rng(seed, name, epoch).integers(0, 2**62)) for seed, name, epoch in keys[:5000]}
    assert len(firsts) == 5000


def test_unknown_stream_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown random stream 'train\.nosie'"):
        stream_seed(0, "train.nosie")


# --- params the run cache can see ------------------------------------------------------------------------

# DVC leaves params with these names out of its run-cache key (dvc issue 10296): a run with another
# value would be restored from the cache of the old one.
INVISIBLE_TO_RUN_CACHE = {"size", "nfiles"}


def _keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, val in node.items() for k in [f"{prefix}{key}", *_keys(val, f"{prefix}{key}.")]]
    if isinstance(node, list):
        return [k for item in node for k in _keys(item, prefix)]
    return []


def test_no_params_key_is_invisible_to_the_run_cache() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    bad = [key for key in _keys(params) if key.rsplit(".", 1)[-1] in INVISIBLE_TO_RUN_CACHE]
    assert not bad, f"params.yaml keys DVC's run cache ignores: {bad}; rename them"
    assert _keys({"data": {"size": 28}}) == ["data", "data.size"]  # the walk finds nested keys


# --- code deps ----------------------------------------------------------------------------------------------


def test_every_stage_depends_on_its_whole_import_closure() -> None:
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert missing_deps(dvc_yaml) == {}, "run `python -m ganpipe.pipeline.deps --write`"
    # The closure follows lazy imports: FID during training makes train import the scoring code.
    assert {
        "ganpipe/measure/score.py",
        "ganpipe/measure/features.py",
        "ganpipe/pipeline/io.py",
        "ganpipe/pipeline/params.py",
    } <= set(import_closure("stages/train.py"))
    assert "ganpipe/report/plots.py" not in import_closure("stages/train.py")  # a plot change never retrains


def test_every_stage_imports_the_ganpipe_next_to_it(tmp_path: Path) -> None:
    """`dvc exp run --queue` runs an experiment in a temporary copy of the repository: its stages must
    import that copy's ganpipe (whose files DVC hashed as deps), not the checkout that the editable
    install points at, which may have been edited since the experiment was queued."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {name: stage["cmd"] for name, stage in stages.items()}
    assert commands == {name: f"python -m stages.{name}" for name in stages}
    copy = tmp_path / "queued-copy"
    for folder in ("ganpipe", "stages"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "stages" / "probe.py").write_text("import ganpipe\nprint(ganpipe.__file__)\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.probe"], cwd=copy, env=env, capture_output=True, text=True, check=True
    )
    assert Path(done.stdout.strip()).parent == copy / "ganpipe"


def test_the_data_and_plots_stages_do_not_import_torch() -> None:
    """download, preprocess and plots need no torch for 28 px data: its import (about 2 s on a small
    CPU) would be paid by three stage processes of every `dvc repro`."""
    probe = "import sys, stages.download, stages.preprocess, stages.plots; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_deps_check_catches_the_lists_it_replaced() -> None:
    """The hand-kept lists of the first landing: score missed classifier.py, sample missed train.py,
    no stage listed io.py or params.py. The check names each of them."""
    before = {
        "stages": {
            "sample": {
                "cmd": "python stages/sample.py",
                "deps": [
                    "stages/sample.py",
                    "ganpipe/gan/sample.py",
                    "ganpipe/gan/models.py",
                    "ganpipe/report/images.py",
                ],
            },
            "score": {
                "cmd": "python stages/score.py",
                "deps": [
                    "stages/score.py",
                    "ganpipe/measure/features.py",
                    "ganpipe/measure/score.py",
                    "data/samples",
                ],
            },
        }
    }
    missing = missing_deps(before)
    assert {"ganpipe/measure/classifier.py", "ganpipe/pipeline/io.py", "ganpipe/pipeline/params.py"} <= set(
        missing["score"]
    )
    assert {"ganpipe/pipeline/io.py", "ganpipe/pipeline/params.py", "ganpipe/pipeline/device.py"} <= set(
        missing["sample"]
    )
    covered = {"stages": {"score": {**before["stages"]["score"], "deps": ["stages/score.py", "ganpipe"]}}}
    assert missing_deps(covered) == {}  # a folder dep covers every file under it


# --- a representative reference ------------------------------------------------------------------------


def test_class_quotas_match_the_split_within_one_image() -> None:
    labels = np.repeat(np.arange(7), [1, 5, 50, 13, 200, 2, 29])
    for count in (1, 7, 33, 100, 299, len(labels)):
        quotas = class_quotas(labels, count)
        assert quotas.sum() == count
        assert np.all(np.abs(quotas - np.bincount(labels) * count / len(labels)) < 1)
    chosen = stratified_subset(labels, 100, np.random.default_rng(0))
    assert len(set(chosen.tolist())) == 100
    assert np.array_equal(np.bincount(labels[chosen]), class_quotas(labels, 100))


def _digits_source(path: Path, order: np.ndarray | None = None) -> Path:
    """scikit-learn's digits as a local MedMNIST-layout npz, train split sorted by class (or `order`)."""
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train = np.argsort(labels[:1500], kind="stable") if order is None else order
    np.savez(
        path,
        train_images=images[:1500][train],
        train_labels=labels[:1500][train],
        test_images=images[1500:],
        test_labels=labels[1500:],
    )
    return path


def _pipeline_scores(root: Path, source: Path, samples: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """download, preprocess, classifier and reference from `source`, then the scores of `samples`."""
    root.mkdir()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        params = tiny_params(
            data__name="local",
            data__source=str(source),
            data__limit=None,
            data__channels=1,
            classifier__epochs=1,
            score__num_real=300,
            sample__num_samples=len(samples),
        )
        download(params["data"])
        preprocess(params)
        train_and_evaluate(params)
        meta = score.compute_reference(params)
        save_npz(paths.SAMPLES, images=samples)
        return meta, score.score_samples(params)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def sorted_and_shuffled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reference")
    shuffled_order = np.random.default_rng(5).permutation(1500)
    samples = np.random.default_rng(6).integers(0, 256, (200, 1, 28, 28), dtype=np.uint8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CI", "1")
        runs = {
            name: _pipeline_scores(root / name, _digits_source(root / f"{name}.npz", order), samples)
            for name, order in (("sorted", None), ("shuffled", shuffled_order))
        }
    return {"root": root, **runs}


def test_reference_of_a_class_sorted_source_has_the_split_class_histogram(sorted_and_shuffled: dict) -> None:
    meta, scores = sorted_and_shuffled["sorted"]
    _images, labels = read_split(sorted_and_shuffled["root"] / "sorted" / paths.PROCESSED_TRAIN)
    expected = np.bincount(labels) * meta["num_real"] / len(labels)
    assert meta["num_real"] == 300 and len(np.unique(labels)) == 10
    assert np.all(np.abs(np.array(meta["class_counts"]) - expected) <= 1), (meta["class_counts"], expected)
    assert "stratified random" in meta["subset"] and "reference.subset" in meta["subset"]
    # The noise floor: two disjoint real sets at the score's N, finite and recorded with its N.
    assert (scores["noise_floor_num_real"], scores["noise_floor_num_generated"]) == (300, 200)
    assert 0 <= scores["fid_noise_floor"] < scores["fid"]
    assert np.isfinite(scores["kid_noise_floor"])


def test_scores_do_not_depend_on_the_source_order(sorted_and_shuffled: dict) -> None:
    root = sorted_and_shuffled["root"]
    for output in (paths.PROCESSED_TRAIN, paths.PROCESSED_VAL, paths.PROCESSED_TEST):
        assert (root / "sorted" / output).read_bytes() == (root / "shuffled" / output).read_bytes(), output
    (_, sorted_scores), (_, shuffled_scores) = sorted_and_shuffled["sorted"], sorted_and_shuffled["shuffled"]
    assert sorted_scores.keys() == shuffled_scores.keys()
    for key, value in sorted_scores.items():
        if isinstance(value, float):
            assert shuffled_scores[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
        else:
            assert shuffled_scores[key] == value, key


def test_reference_metadata_is_valid_json(sorted_and_shuffled: dict) -> None:
    meta = json.loads((sorted_and_shuffled["root"] / "sorted" / score.REFERENCE_META).read_text())
    assert meta["noise_floor"]["rule"].startswith("the reference vs other training images")
    assert meta["extractors"]["domain"]["fid_noise_floor"] >= 0


def test_stream_seeds_keep_their_golden_values() -> None:
    """Every result depends on the seeds: a change to how a stream's seed is derived (the name digest,
    the epoch slot, the 63-bit state) would silently change every run, so the values are pinned."""
    assert stream_seed(0, "train.noise") == 589860193406815354
    assert stream_seed(7, "train.order", 3) == 9097551731883303509
    assert numpy_rng(1, "utility.seed", 2).integers(0, 2**31) == 1906015797
    generator = torch_generator(1, "train.order", 4)
    assert torch.randint(0, 2**31, (1,), generator=generator).item() == 1804616185
    seed_globals(5, "train.weights")
    assert (np.random.randint(0, 2**31), random.randrange(2**31)) == (1282360573, 53867751)
    assert torch.randint(0, 2**31, (1,)).item() == 696151965
    with pytest.raises(ValueError, match="seed >= 0"):
        stream_seed(-1, "train.noise")
    with pytest.raises(ValueError, match="epoch >= 0"):
        stream_seed(0, "train.noise", -1)
