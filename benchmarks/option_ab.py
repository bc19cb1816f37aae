"""A/B of one training option on MNIST at equal critic steps: class conditioning or DiffAugment.

Runs the real pipeline functions (download, preprocess, classifier, reference, train, sample, score)
in a temporary folder on `../shared/data/mnist_t10k.npz` (8,000 training images, 1 channel, 28 px),
for each loss in --losses, each arm of the option and each seed, and prints one JSON line: every
run's domain FID, label accuracy and time, the mean ± std over seeds per arm, and per loss the ratio
of the option's mean FID to the baseline's.

Options (`--option`):
- `conditional`: `models.<m>.conditional` none (A) vs projection (B);
- `augment`: `train.augment` [] (A) vs [color, translation, cutout] (B).

Every run of a loss gets the same critic steps (`--steps hinge:6000,wgan_gp:10000`, ...) and keeps
its params.yaml settings (hinge: n_critic 1, spectral-norm critic; wgan_gp: n_critic 5, λ 10),
except arch.ngf = ndf = --width (default 16; params.yaml has 64) so that a CPU can afford the steps.
`--limit 500` trains on a 500-image subset (`data.limit`: every split, so the classifier and the
reference come from the subset too; both arms share them). Scoring: --num-samples generated images
(sample.labels prior) against up to as many real ones.

With `--jobs 2` two runs go at once, each in its own copy of the prepared folder with one torch
thread: on the 2-core CPU that finishes the grid sooner than one run on two threads.

    python benchmarks/option_ab.py --option conditional [--losses hinge,wgan_gp] [--steps ...]
        [--seeds 0,1,2] [--limit N] [--width 16] [--jobs 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
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
DIFFAUGMENT = ["color", "translation", "cutout"]
# option -> (arm name, how the arm sets params) for A (baseline) and B.
ARMS = {
    "conditional": (("none", {"conditional": "none"}), ("projection", {"conditional": "projection"})),
    "augment": (("off", {"augment": []}), ("diffaugment", {"augment": DIFFAUGMENT})),
}


def base_params(args: argparse.Namespace, loss: str, seed: int, steps: int) -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(model=loss, seed=seed)
    params["data"].update(name="local", source=str(MNIST_NPZ), channels=1, image_size=28, limit=args.limit)
    params["arch"].update(ngf=args.width, ndf=args.width)
    params["train"].update(
        device="cpu", epochs=10**6, max_steps=steps, batch_size=64, checkpoint_every=10**9, eval_every=None
    )
    params["sample"]["num_samples"] = args.num_samples
    params["score"]["num_real"] = args.num_samples
    return params


def apply_arm(params: dict[str, Any], settings: dict[str, Any]) -> None:
    if "conditional" in settings:
        params["models"][params["model"]]["conditional"] = settings["conditional"]
    if "augment" in settings:
        params["train"]["augment"] = list(settings["augment"])


def run_one(job: tuple[str, dict[str, Any], str, int]) -> dict[str, Any]:
    """Train, sample and score one run in `folder` (a prepared copy); its figures."""
    folder, params, arm, threads = job
    import torch

    torch.set_num_threads(threads)
    os.chdir(folder)
    start = time.perf_counter()
    metrics = train(validate(params))
    sample(params)
    scores = score_samples(params)
    return {
        "loss": params["model"],
        "arm": arm,
        "seed": params["seed"],
        "fid": round(scores["fid"], 3),
        "fid_noise_floor": scores.get("fid_noise_floor"),
        "label_accuracy": scores["label_accuracy"],
        "steps": metrics["steps"],
        "train_time_s": metrics["train_time_s"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def summarise(runs: list[dict[str, Any]], losses: list[str], arms: tuple[str, str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for loss in losses:
        per_arm: dict[str, Any] = {}
        for arm in arms:
            chosen = [run for run in runs if run["loss"] == loss and run["arm"] == arm]
            fids = [run["fid"] for run in chosen]
            accuracies = [run["label_accuracy"] for run in chosen if run["label_accuracy"] is not None]
            per_arm[arm] = {
                "fid_mean": round(float(np.mean(fids)), 3),
                "fid_std": round(float(np.std(fids, ddof=1)), 3) if len(fids) > 1 else None,
                "label_accuracy_mean": round(float(np.mean(accuracies)), 4) if accuracies else None,
                "label_accuracy_min": round(float(np.min(accuracies)), 4) if accuracies else None,
            }
        per_arm["fid_ratio"] = round(per_arm[arms[1]]["fid_mean"] / per_arm[arms[0]]["fid_mean"], 3)
        summary[loss] = per_arm
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--option", choices=sorted(ARMS), required=True)
    parser.add_argument("--losses", default="hinge,wgan_gp", help="models of params.yaml, comma-separated")
    parser.add_argument("--steps", default="hinge:6000,wgan_gp:10000,dcgan:6000,lsgan:6000,wgan:10000",
                        help="critic steps per run, per loss")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit", type=int, default=None, help="data.limit (default: all 8,000 images)")
    parser.add_argument("--width", type=int, default=16, help="arch.ngf = arch.ndf")
    parser.add_argument("--num-samples", type=int, default=5000, help="generated and real images scored")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one torch thread each when > 1")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    losses = args.losses.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    steps = {name: int(count) for name, count in (item.split(":") for item in args.steps.split(","))}
    out = args.out.resolve() if args.out is not None else None  # before any chdir
    os.environ.setdefault("CI", "1")  # no progress bars in the log
    threads = 1 if args.jobs > 1 else max(1, os.cpu_count() or 1)
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ganpipe-ab-") as workdir:
        prepared = Path(workdir) / "prepared"
        prepared.mkdir()
        os.chdir(prepared)
        params = validate(base_params(args, losses[0], 0, 1))
        download(params["data"])
        preprocess(params)
        classifier = train_and_evaluate(params)
        compute_reference(params)
        os.chdir(workdir)
        folders = []
        for index in range(args.jobs):  # one copy of the prepared folder per concurrent run
            folder = Path(workdir) / f"job{index}"
            shutil.copytree(prepared, folder)
            folders.append(str(folder))
        jobs = []
        # Seed-major order: a change of machine load falls on both arms of a loss alike.
        for seed in seeds:
            for loss in losses:
                for arm, settings in ARMS[args.option]:
                    run_params = base_params(args, loss, seed, steps[loss])
                    apply_arm(run_params, settings)
                    jobs.append((run_params, arm))
        runs: list[dict[str, Any]] = []
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for start in range(0, len(jobs), args.jobs):  # each wave: one job per folder
                chunk = jobs[start : start + args.jobs]
                wave = [(folders[i], p, arm, threads) for i, (p, arm) in enumerate(chunk)]
                for result in pool.map(run_one, wave):
                    runs.append(result)
                    print(json.dumps(result), file=sys.stderr, flush=True)
    arm_names = tuple(arm for arm, _ in ARMS[args.option])
    result = {
        "benchmark": f"option_ab:{args.option}",
        "data": MNIST_NPZ.name,
        "limit": args.limit,
        "width": args.width,
        "critic_steps": {loss: steps[loss] for loss in losses},
        "seeds": seeds,
        "num_samples": args.num_samples,
        "jobs": args.jobs,
        "classifier_test_accuracy": classifier["test_accuracy"],
        "summary": summarise(runs, losses, arm_names),
        "runs": runs,
        "total_seconds": round(time.perf_counter() - total_start, 1),
    }
    line = json.dumps(result)
    print(line)
    if out is not None:
        out.write_text(line + "\n")


if __name__ == "__main__":
    main()
