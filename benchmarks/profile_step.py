"""Where one training step's time goes: torch.profiler over ganpipe's own critic and generator updates.

For each model (one per loss: wgan, wgan_gp, lsgan, dcgan, hinge) it builds the real `Run` and
`Steps` of ganpipe.gan.train on train_throughput.py's setting (DCGAN-28, nz 100, ngf = ndf = 64,
3 channels, batch 64; wgan_gp with its penalty on every critic step), warms up one iteration, then
profiles `--iterations` iterations (n_critic critic steps + 1 generator step each) and prints the
operators that take the most self CPU time, with their share of the total.

Usage (from the repository root, with ganpipe installed or PYTHONPATH=.):
    python benchmarks/profile_step.py [--precision fp32|bf16] [--threads N] [--iterations N]
                                      [--top N] [--models wgan_gp,hinge,...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import (
    BATCH,
    CHANNELS,
    DEFAULT_DATA,
    SIZE,
    benchmark_params,
    load_images,
    write_processed,
)

from ganpipe.gan.train import Run, Steps, epoch_order
from ganpipe.pipeline.precision import cpu_bf16_support

LOSS_MODELS = ("wgan", "wgan_gp", "lsgan", "dcgan", "hinge")  # one model per loss, as params.yaml has them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--iterations", type=int, default=1, help="iterations profiled per model")
    parser.add_argument("--top", type=int, default=8, help="operators listed per model")
    parser.add_argument("--models", default=",".join(LOSS_MODELS), help="comma-separated models")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="MedMNIST-layout npz whose train_images are used (sklearn digits if missing)",
    )
    return parser.parse_args(argv)


def iterate(run: Run, steps: Steps, order: torch.Tensor, n_critic: int) -> None:
    """One iteration of the loop in ganpipe.gan.train.train: n_critic critic steps, one generator step."""
    for _ in range(n_critic):
        position = run.step % (len(order) // BATCH)
        steps.critic_step(order[position * BATCH : (position + 1) * BATCH])
        run.step += 1
    steps.generator_step()
    steps.read_losses()  # the loop's one sync per generator step


def profile_model(
    params: dict[str, Any], images: np.ndarray, model: str, iterations: int, top: int
) -> dict[str, Any]:
    params = {**params, "model": model}
    images = torch.from_numpy(images)
    labels = torch.zeros(len(images), dtype=torch.int64)
    run = Run(params, torch.device("cpu"), CHANNELS, SIZE, torch.ones(1))
    steps = Steps(run, params, images, labels)
    order = epoch_order(params["seed"], 0, len(images), torch.device("cpu"))
    n_critic = params["models"][model]["n_critic"]
    iterate(run, steps, order, n_critic)  # warm-up: lazy optimizer state, oneDNN primitive caches
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(iterations):
            iterate(run, steps, order, n_critic)
    events = profiler.key_averages()
    total_us = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:top]
    return {
        "model": model,
        "loss": params["models"][model]["loss"],
        "iteration_ms": round(total_us / iterations / 1e3, 1),
        "top": [
            {
                "op": event.key,
                "share_pct": round(100 * event.self_cpu_time_total / total_us, 1),
                "calls_per_iteration": event.count // iterations,
            }
            for event in ranked
        ],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images, source = load_images(args.data.resolve())
    support = cpu_bf16_support()
    print(f"data: {source}; precision {args.precision}, {torch.get_num_threads()} threads")
    if args.precision == "bf16" and support == "none":
        # Run and Steps do not check the capability (train() does): here torch emulates bf16.
        print("warning: this CPU has no bf16 arithmetic: bf16 is emulated, its times are no measure of bf16")
    with tempfile.TemporaryDirectory(prefix="ganpipe-profile-") as workdir:
        os.chdir(workdir)
        write_processed(images)
        params = benchmark_params("cpu", Path(workdir) / "checkpoints")
        params["train"]["precision"] = args.precision
        results = []
        for model in args.models.split(","):
            with contextlib.redirect_stderr(io.StringIO()):
                result = profile_model(params, images, model, args.iterations, args.top)
            results.append(result)
            print(
                f"{model} ({result['loss']}): {result['iteration_ms']} ms of operator self time per iteration"
            )
            for row in result["top"]:
                print(f"  {row['share_pct']:5.1f}%  {row['calls_per_iteration']:4d} calls  {row['op']}")
    threads = torch.get_num_threads()
    print(
        json.dumps({"precision": args.precision, "cpu_bf16": support, "threads": threads, "models": results})
    )


if __name__ == "__main__":
    main()
