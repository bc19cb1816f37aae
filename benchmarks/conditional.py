"""Does class conditioning help? Unconditional vs projection-conditional hinge and WGAN-GP on MNIST.

Runs the real pipeline functions (download, preprocess, classifier, reference, train, sample, score)
in a temporary folder on `../shared/data/mnist_t10k.npz` (8,000 training images, 1 channel, 28 px),
for each loss in LOSSES, conditioning in ("none", "projection") and seed in SEEDS, all at the same
number of critic steps, and prints one JSON line: every run's domain FID and label accuracy, the
mean over seeds, and the ratio conditional / unconditional FID per loss.

Sized for a shared 2-core CPU (about 30 minutes): arch.ngf = ndf = 16 (the default is 64),
nz 100, batch 64, 5,000 samples scored against 5,000 real images, and per loss a fixed number of
critic steps (default hinge 1,000, wgan_gp 2,000: WGAN-GP steps cost half, with n_critic 5 it makes
one generator step per 5 critic steps). Each model keeps its params.yaml settings (hinge: n_critic
1, spectral-norm critic; wgan_gp: n_critic 5, λ 10); conditional and unconditional runs of a loss
always get the same critic steps.

    python benchmarks/conditional.py [--steps hinge:1000,wgan_gp:2000] [--seeds 0,1,2] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ganpipe.classifier import train_and_evaluate  # noqa: E402
from ganpipe.data import download, preprocess  # noqa: E402
from ganpipe.params import validate  # noqa: E402
from ganpipe.sample import sample  # noqa: E402
from ganpipe.score import compute_reference, score_samples  # noqa: E402
from ganpipe.train import train  # noqa: E402

MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist_t10k.npz"
LOSSES = ("hinge", "wgan_gp")
MODES = ("none", "projection")
SETTINGS = {
    "arch": {"nz": 100, "ngf": 16, "ndf": 16},
    "num_samples": 5000,
    "num_real": 5000,
}


def base_params(steps: int) -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="local", source=str(MNIST_NPZ), channels=1, image_size=28, limit=None)
    params["arch"] = dict(SETTINGS["arch"])
    params["train"].update(
        device="cpu", epochs=1000, max_steps=steps, batch_size=64, checkpoint_every=10**9, eval_every=None
    )
    params["sample"]["num_samples"] = SETTINGS["num_samples"]
    params["score"]["num_real"] = SETTINGS["num_real"]
    return params


def run_one(params: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = train(validate(params))
    sample(params)
    scores = score_samples(params)
    return {
        "model": params["model"],
        "conditional": params["models"][params["model"]]["conditional"],
        "seed": params["seed"],
        "fid": round(scores["fid"], 3),
        "label_accuracy": scores["label_accuracy"],
        "intra_fid_mean": scores["intra_fid_mean"],
        "class_labels": scores["class_labels"],
        "steps": metrics["steps"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="hinge:1000,wgan_gp:2000", help="critic steps per run, per loss")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    steps = {name: int(count) for name, count in (item.split(":") for item in args.steps.split(","))}
    out = args.out.resolve() if args.out is not None else None  # before the chdir below
    os.environ.setdefault("CI", "1")  # no progress bars in the log
    total_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ganpipe-conditional-") as workdir:
        os.chdir(workdir)
        params = validate(base_params(1))
        download(params["data"])
        preprocess(params)
        classifier = train_and_evaluate(params)
        compute_reference(params)
        for loss in LOSSES:
            for mode in MODES:
                for seed in seeds:
                    run_params = base_params(steps[loss])
                    run_params.update(model=loss, seed=seed)
                    run_params["models"][loss]["conditional"] = mode
                    runs.append(run_one(run_params))
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for loss in LOSSES:
        means = {}
        for mode in MODES:
            chosen = [run for run in runs if run["model"] == loss and run["conditional"] == mode]
            accuracies = [run["label_accuracy"] for run in chosen if run["label_accuracy"] is not None]
            means[mode] = {
                "fid_mean": round(float(np.mean([run["fid"] for run in chosen])), 3),
                "fid_std": round(float(np.std([run["fid"] for run in chosen])), 3),
                "label_accuracy_mean": round(float(np.mean(accuracies)), 4) if accuracies else None,
            }
        means["fid_ratio"] = round(means["projection"]["fid_mean"] / means["none"]["fid_mean"], 3)
        summary[loss] = means
    result = {
        "benchmark": "conditional",
        "data": str(MNIST_NPZ.name),
        "critic_steps": steps,
        "seeds": seeds,
        **SETTINGS,
        "classifier_test_accuracy": classifier["test_accuracy"],
        "summary": summary,
        "runs": runs,
        "total_seconds": round(time.perf_counter() - total_start, 1),
    }
    line = json.dumps(result)
    print(line)
    if out is not None:
        out.write_text(line + "\n")


if __name__ == "__main__":
    main()
