"""Which memory format trains faster in fp32: the nets' weights NCHW (contiguous) or NHWC (channels_last).

ganpipe stores the ResNet nets channels_last in fp32 too, and the DCGAN nets contiguous (bf16 runs are
channels_last for both). This measures why, in one run, as a ratio: for each architecture it builds
ganpipe's real `Run` and `Steps` (train_throughput.py's setting: 28 px, 3 channels, nz 100,
ngf = ndf = 64, batch 64), then times `--iterations` training iterations (n_critic critic steps + one
generator step) with the weights in each format, alternated `--repeats` times, and keeps each
format's best. The optimizer keeps its parameters across a conversion (`Module.to` replaces their
data in place), so both formats train the same parameters from the same state.

Usage (from the repository root, with ganpipe installed or PYTHONPATH=.):
    python benchmarks/memory_format.py [--threads N] [--iterations N] [--repeats N] [--model hinge]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from profile_step import iterate
from train_throughput import (
    BATCH,
    CHANNELS,
    DEFAULT_DATA,
    SIZE,
    benchmark_params,
    load_images,
    write_processed,
)

from ganpipe.gan.catalog import ARCHITECTURES
from ganpipe.gan.train import Run, Steps, epoch_order

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--iterations", type=int, default=10, help="iterations timed per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two formats")
    parser.add_argument("--model", default="hinge", help="the model (loss recipe) of params.yaml to train")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="MedMNIST-layout npz (digits if missing)"
    )
    return parser.parse_args(argv)


def time_formats(
    params: dict[str, Any], images: torch.Tensor, iterations: int, repeats: int
) -> dict[str, float]:
    """Best ms per iteration of each memory format, the formats alternated on one Run."""
    labels = torch.zeros(len(images), dtype=torch.int64)
    run = Run(params, torch.device("cpu"), CHANNELS, SIZE, torch.ones(1))
    steps = Steps(run, params, images, labels)
    order = epoch_order(params["seed"], 0, len(images), torch.device("cpu"))
    n_critic = params["models"][params["model"]]["n_critic"]
    best = dict.fromkeys(FORMATS, float("inf"))
    for _ in range(repeats):
        for name, memory_format in FORMATS.items():
            for net in (run.generator, run.critic):
                net.to(memory_format=memory_format)
            iterate(run, steps, order, n_critic)  # warm-up: this format's oneDNN primitives
            start = time.perf_counter()
            for _ in range(iterations):
                iterate(run, steps, order, n_critic)
            best[name] = min(best[name], (time.perf_counter() - start) / iterations * 1e3)
    return {name: round(ms, 1) for name, ms in best.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images, source = load_images(args.data.resolve())
    print(f"data: {source}; fp32, {torch.get_num_threads()} threads, model {args.model}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="ganpipe-memory-format-") as workdir:
        os.chdir(workdir)
        write_processed(images)
        params = benchmark_params("cpu", Path(workdir) / "checkpoints")
        params["model"] = args.model
        for arch in ARCHITECTURES:
            params["arch"]["name"] = arch
            with contextlib.redirect_stderr(io.StringIO()):
                ms = time_formats(params, torch.from_numpy(images), args.iterations, args.repeats)
            ratio = round(ms["contiguous"] / ms["channels_last"], 3)
            results[arch] = {**{f"{name}_ms": value for name, value in ms.items()}, "speedup": ratio}
            print(
                f"{arch}: {ms['contiguous']} ms per iteration contiguous, {ms['channels_last']} ms "
                f"channels_last: channels_last {ratio}x as fast (batch {BATCH})"
            )
    print(json.dumps({"threads": torch.get_num_threads(), "model": args.model, "archs": results}))


if __name__ == "__main__":
    main()
