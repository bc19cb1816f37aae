"""Time to quality: the training time at which domain FID first falls below a threshold.

For each config (a model of params.yaml with overrides, e.g. `wgan_gp:gp_every=4`) and each seed, it
trains with the real pipeline functions in a temporary directory: the data stages
(`ganpipe.data.download` / `preprocess`) on a local MedMNIST-layout npz (by default the 8,000 MNIST
train images of ../shared/data/mnist_t10k.npz, 1 channel, 28 px), the domain classifier
(`ganpipe.measure.classifier.train_and_evaluate`), the FID-during-training reference
(`ganpipe.measure.score.compute_train_reference`) and `ganpipe.gan.train.train()` with `train.eval_every = 1`.
The data, classifier and reference are made once and shared by every run.

At each epoch end it records the FID that `train()` computes (score.train_samples generated images
against as many real ones) together with `train_seconds` (time inside training steps so far, the
figure `critic_images_per_s` is based on; evaluation excluded) and the wall time since `train()`
started (evaluation included). Time to threshold is the first epoch whose FID is below the threshold.

The threshold defaults to the worst seed's FID of the first config at epoch `--threshold-epoch`
(10), so that every seed of the reference reaches it by then; `--threshold` sets it. It also reports
each config's FID at equal training time: the last evaluation at or before the budget, which is the
smallest mean total training time among the configs.

Runs alternate between configs (seed 0 of each, then seed 1, ...), so that a change of load on a
shared machine falls on both. Timings on a shared CPU are noisy; `epochs_to_threshold` is not.

The last line printed is one JSON object with the flags, the threshold and every config's figures.

Usage (from the repository root, with ganpipe installed or PYTHONPATH=.):
    python benchmarks/time_to_fid.py [--configs wgan_gp:gp_every=1 wgan_gp:gp_every=4] [--epochs 10]
        [--seeds 0 1 2] [--ngf 64] [--ndf 64] [--threads N] [--threshold FID] [--threshold-epoch 10]
        [--data NPZ] [--classifier-epochs 5] [--train-samples 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import ganpipe.gan.train
from ganpipe.config import validate
from ganpipe.data import download, preprocess
from ganpipe.measure.classifier import train_and_evaluate
from ganpipe.measure.score import compute_train_reference, domain_fid

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mnist_t10k.npz"
DEFAULT_CONFIGS = ("wgan_gp:gp_every=1", "wgan_gp:gp_every=4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="MODEL[:key=value,...] with keys of models.<MODEL>; the first one sets the default threshold",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (FID after each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ngf", type=int, default=64, help="generator width (arch.ngf)")
    parser.add_argument("--ndf", type=int, default=64, help="critic width (arch.ndf)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="domain FID to reach (default: the first config's worst seed at --threshold-epoch)",
    )
    parser.add_argument("--threshold-epoch", type=int, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MedMNIST-layout npz")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1)
    parser.add_argument("--classifier-epochs", type=int, default=5)
    parser.add_argument(
        "--train-samples",
        type=int,
        default=2000,
        help="score.train_samples: generated (and real) images per FID during training",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser.parse_args(argv)


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """'wgan_gp:gp_every=4,n_critic=5' -> ('wgan_gp', {'gp_every': 4, 'n_critic': 5})."""
    model, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return model, overrides


def base_params(args: argparse.Namespace, checkpoint_dir: Path) -> dict[str, Any]:
    """The repository's params.yaml with this benchmark's data, width and training settings."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(
        name="local", source=str(args.data.resolve()), channels=args.channels, image_size=28, limit=None
    )
    params["arch"].update(ngf=args.ngf, ndf=args.ndf)
    params["classifier"]["epochs"] = args.classifier_epochs
    params["score"]["train_samples"] = args.train_samples
    params["train"].update(
        device=args.device,
        epochs=args.epochs,
        max_steps=None,
        batch_size=args.batch_size,
        checkpoint_every=10**9,
        checkpoint_dir=str(checkpoint_dir),
        eval_every=1,
        precision="fp32",
        compile=False,
        tensorboard=False,
    )
    return params


def run_params(params: dict[str, Any], config: str, seed: int) -> dict[str, Any]:
    model, overrides = parse_config(config)
    params = copy.deepcopy(params)
    params["model"], params["seed"] = model, seed
    params["models"][model].update(overrides)
    return validate(params)


def train_with_timeline(params: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """`train()`, returning its metrics and one record per epoch: FID, training seconds, wall seconds.

    The records come from wrapping `ganpipe.gan.train._end_of_epoch`, which `train()` calls right after
    adding the epoch's step time to `run.train_seconds` and which appends the epoch's FID.
    """
    timeline: list[dict[str, float]] = []
    original = ganpipe.gan.train._end_of_epoch
    start = time.perf_counter()

    def recording(run: Any, *args: Any, **kwargs: Any) -> Any:
        train_seconds = run.train_seconds
        result = original(run, *args, **kwargs)
        epoch, step, _, fid, _ = run.fid_log[-1]  # FID_COLUMNS
        timeline.append(
            {
                "epoch": int(epoch),
                "step": int(step),
                "fid": round(float(fid), 4),
                "train_s": round(train_seconds, 3),
                "wall_s": round(time.perf_counter() - start, 3),
            }
        )
        return result

    ganpipe.gan.train._end_of_epoch = recording
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            metrics = ganpipe.gan.train.train(params, fid=domain_fid)
    finally:
        ganpipe.gan.train._end_of_epoch = original
    return metrics, timeline


def first_below(timeline: list[dict[str, float]], threshold: float) -> dict[str, float] | None:
    return next((record for record in timeline if record["fid"] < threshold), None)


def at_budget(timeline: list[dict[str, float]], budget: float) -> dict[str, float] | None:
    """The last evaluation whose training time is within `budget` seconds."""
    within = [record for record in timeline if record["train_s"] <= budget]
    return within[-1] if within else None


def mean_std(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4), "n": len(values)}


def summarise(runs: dict[str, list[dict[str, Any]]], threshold: float, budget: float) -> dict[str, Any]:
    summary = {}
    for config, seeds in runs.items():
        hits = [first_below(run["timeline"], threshold) for run in seeds]
        reached = [hit for hit in hits if hit is not None]
        at = [at_budget(run["timeline"], budget) for run in seeds]
        summary[config] = {
            "time_to_threshold_train_s": mean_std([hit["train_s"] for hit in reached]),
            "time_to_threshold_wall_s": mean_std([hit["wall_s"] for hit in reached]),
            "epochs_to_threshold": mean_std([hit["epoch"] for hit in reached]),
            "seeds_reached": f"{len(reached)}/{len(seeds)}",
            "final_fid": mean_std([run["timeline"][-1]["fid"] for run in seeds]),
            "total_train_s": mean_std([run["timeline"][-1]["train_s"] for run in seeds]),
            "critic_images_per_s": mean_std([run["metrics"]["critic_images_per_s"] for run in seeds]),
            "fid_at_budget": mean_std([record["fid"] for record in at if record is not None]),
            "epoch_at_budget": mean_std([record["epoch"] for record in at if record is not None]),
            "per_seed": [
                {
                    "seed": run["seed"],
                    "fids": [r["fid"] for r in run["timeline"]],
                    "train_s": [r["train_s"] for r in run["timeline"]],
                    "wall_s": run["timeline"][-1]["wall_s"],
                }
                for run in seeds
            ],
        }
    return summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threshold_epoch = min(args.threshold_epoch, args.epochs)
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}

    with tempfile.TemporaryDirectory(prefix="ganpipe-ttf-") as workdir:
        home = Path.cwd()
        os.chdir(workdir)
        try:
            params = validate(base_params(args, Path(workdir) / "checkpoints"))
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                download(params["data"])
                preprocess(params)
                classifier = train_and_evaluate(params)
                compute_train_reference(params)
            setup_s = time.perf_counter() - started
            # Alternate configs, reversing the order every other seed, so that load changes and
            # warm-up fall on all of them alike.
            for index, seed in enumerate(args.seeds):
                for config in args.configs if index % 2 == 0 else args.configs[::-1]:
                    metrics, timeline = train_with_timeline(run_params(params, config, seed))
                    runs[config].append({"seed": seed, "metrics": metrics, "timeline": timeline})
                    print(
                        f"{config} seed {seed}: FID by epoch {[r['fid'] for r in timeline]}, "
                        f"{timeline[-1]['train_s']:.1f} s training",
                        flush=True,
                    )
        finally:
            os.chdir(home)

    reference = runs[args.configs[0]]
    if args.threshold is not None:
        threshold, threshold_source = args.threshold, "--threshold"
    else:
        threshold = max(run["timeline"][threshold_epoch - 1]["fid"] for run in reference)
        threshold_source = f"worst seed of {args.configs[0]} at epoch {threshold_epoch}"
    budget = min(statistics.fmean(run["timeline"][-1]["train_s"] for run in seeds) for seeds in runs.values())
    result = {
        "flags": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threshold": threshold,
        "threshold_source": threshold_source,
        "budget_train_s": round(budget, 3),
        "configs": summarise(runs, threshold, budget),
        "classifier_test_accuracy": classifier["test_accuracy"],
        "setup_s": round(setup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in (*load_before, *os.getloadavg())],
    }
    for config, figures in result["configs"].items():
        ttt, fid, at = figures["time_to_threshold_train_s"], figures["final_fid"], figures["fid_at_budget"]
        print(
            f"{config}: to FID < {threshold:.2f} in {ttt['mean']} ± {ttt['std']} s training "
            f"({figures['seeds_reached']} seeds); final FID {fid['mean']} ± {fid['std']}; "
            f"FID at {budget:.0f} s: {at['mean']} ± {at['std']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
