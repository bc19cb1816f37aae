"""Training throughput: ganpipe's loop against a naive seed-style loop, and its model FLOP rate.

Both loops train the same WGAN-GP (DCGAN-28: nz 100, ngf = ndf = 64, 3 channels, batch 64,
n_critic 5) on the same real images and report critic images per second over training steps
(generator steps included, model construction excluded); each code path is warmed up once first:

- ganpipe: the real `ganpipe.gan.train.train(params)` (params.yaml plus this benchmark's overrides),
  run inside a temporary directory that holds `data/processed/`. Its `critic_images_per_s`
  metric is timed over training steps only; on CUDA that includes capturing its CUDA graphs.
- naive: the way the original experiments were written: a Dataset of PIL images through
  torchvision's ToTensor + Normalize, a shuffling DataLoader, the generator's forward recomputed
  with autograd on every critic step (its output detached for the critic), separate critic
  forwards for real and fake, and a generator step that also computes unused critic gradients.
- ganpipe lazy: the same `train()` with the lazy gradient penalty (`gp_every`, default 4: the
  penalty on every 4th critic step at 4 times the weight); "ganpipe" above is `gp_every: 1`.

The FLOP rate is that of ganpipe's loop with model wgan (weight clipping, no gradient penalty):
FlopCounterMode counts the FLOPs of `train()` run for exactly one iteration (n_critic critic steps
+ one generator step), minus those of the end-of-epoch sample grid it draws; a timed `train()` run
gives the seconds per iteration. The reference is the best of several 2048³ fp32 matmuls.

Usage (from the repository root, with ganpipe installed or PYTHONPATH=.):
    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps N] [--threads N]
                                          [--repeats N] [--workers N] [--data NPZ]
                                          [--gp-every K] [--skip-flop-rate]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from ganpipe.gan.losses import LOSSES
from ganpipe.gan.models import build_models
from ganpipe.gan.train import FIXED_NOISE_COUNT, train
from ganpipe.pipeline import paths

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mnist_t10k.npz"
DEFAULT_STEPS = {"cpu": 60, "cuda": 2000}
BATCH = 64
SIZE = 28
CHANNELS = 3
MATMUL_SIDE = 2048


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="critic steps timed per loop, rounded up to a multiple of n_critic "
        f"(default {DEFAULT_STEPS['cpu']} on cpu, {DEFAULT_STEPS['cuda']} on cuda)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="MedMNIST-layout npz whose train_images are used (sklearn digits if missing)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternate the two loops this many times and keep each one's best",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the naive loop")
    parser.add_argument(
        "--gp-every",
        type=int,
        default=4,
        help="gp_every of the lazy-penalty ganpipe run (the other runs use 1)",
    )
    parser.add_argument(
        "--skip-flop-rate",
        action="store_true",
        help="skip the wgan runs, FLOP count and matmul (a cheaper run on a shared machine)",
    )
    return parser.parse_args(argv)


def load_images(path: Path) -> tuple[np.ndarray, str]:
    """Real uint8 images (N, 3, 28, 28) from a MedMNIST-layout npz, else sklearn digits resized to 28."""
    if path.exists():
        with np.load(path) as arrays:
            images = arrays["train_images"]
        source = str(path)
    else:
        from sklearn.datasets import load_digits

        digits = (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)
        images = np.stack(
            [np.asarray(Image.fromarray(d).resize((SIZE, SIZE), Image.BILINEAR)) for d in digits]
        )
        source = "sklearn digits (resized to 28)"
    if images.ndim == 3:  # grayscale: repeat to 3 channels
        images = np.repeat(images[:, None], CHANNELS, axis=1)
    else:  # N, H, W, C
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images, dtype=np.uint8), source


def write_processed(images: np.ndarray) -> None:
    """The files `train()` reads, relative to the current directory."""
    paths.PROCESSED_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(paths.PROCESSED_TRAIN, images=images, labels=np.zeros(len(images), dtype=np.int64))
    info = {
        "name": "benchmark",
        "n_classes": 1,
        "channels": CHANNELS,
        "size": SIZE,
        "n_train": len(images),
        "n_test": 0,
    }
    paths.PROCESSED_INFO.write_text(json.dumps(info))


def benchmark_params(device: str, checkpoint_dir: Path, gp_every: int = 4) -> dict[str, Any]:
    """The repository's params.yaml with the benchmark's overrides.

    `wgan_gp` is the exact recipe (the penalty on every critic step), whatever params.yaml's default,
    and `wgan_gp_lazy` the same model with the penalty on every `gp_every`-th critic step.
    """
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["model"] = "wgan_gp"
    params["models"]["wgan_gp"]["gp_every"] = 1
    params["models"]["wgan_gp_lazy"] = {**params["models"]["wgan_gp"], "gp_every": gp_every}
    params["data"].update(channels=CHANNELS, image_size=SIZE)
    params["arch"].update(nz=100, ngf=64, ndf=64)
    params["train"].update(
        device=device,
        batch_size=BATCH,
        checkpoint_every=10**9,
        checkpoint_dir=str(checkpoint_dir),
        eval_every=None,
        bf16=False,
        compile=False,
        tensorboard=False,
    )
    return params


def run_ganpipe(params: dict[str, Any], model: str, steps: int) -> dict[str, Any]:
    """`train()` for `steps` critic steps of `model`; its chatter is swallowed, its metrics returned."""
    params = copy.deepcopy(params)
    params["model"] = model
    params["train"].update(epochs=steps, max_steps=steps)  # max_steps is the binding limit
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return train(params)


class PILImages(Dataset):
    """Seed-style dataset: one PIL image per item, converted by torchvision transforms."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images.transpose(0, 2, 3, 1)  # N, H, W, C as PIL wants
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize([0.5] * CHANNELS, [0.5] * CHANNELS)]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), 0


def seed_gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The seed code's WGAN-GP penalty (same math as ganpipe's): per-sample gradient norm over all dims."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed)[0].sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def run_naive(
    params: dict[str, Any], images: np.ndarray, device: torch.device, steps: int, workers: int, warmup: int
) -> tuple[float, float]:
    """Critic images per second of the seed-style WGAN-GP loop over `steps` critic steps after `warmup`
    ones: per wall-clock second and per CPU second of this process (see `cpu_rate`)."""
    cfg = params["models"]["wgan_gp"]
    nz, gp_lambda, n_critic = params["arch"]["nz"], cfg["gp_lambda"], cfg["n_critic"]
    loss = LOSSES[cfg["loss"]]
    torch.manual_seed(params["seed"])
    generator, critic = build_models(cfg, params["arch"], CHANNELS, SIZE)
    generator, critic = generator.to(device), critic.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg["lr_g"], betas=tuple(cfg["betas"]))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg["lr_d"], betas=tuple(cfg["betas"]))
    loader = DataLoader(
        PILImages(images), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers
    )

    batches = iter(loader)
    start = cpu_start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
        try:
            real, _ = next(batches)
        except StopIteration:  # next epoch
            batches = iter(loader)
            real, _ = next(batches)
        real = real.to(device)

        opt_d.zero_grad(set_to_none=False)
        fake = generator(torch.randn(BATCH, nz, device=device))
        score_real, _ = critic(real)
        score_fake, _ = critic(fake.detach())
        penalty = seed_gradient_penalty(critic, real, fake.detach())
        loss_d = loss.critic(score_real, score_fake, 0.0) + gp_lambda * penalty
        loss_d.backward()
        opt_d.step()

        if (step + 1) % n_critic == 0:
            opt_g.zero_grad(set_to_none=False)
            loss_g = loss.generator(critic(generator(torch.randn(BATCH, nz, device=device)))[0])
            loss_g.backward()
            opt_g.step()
    synchronize(device)
    return steps * BATCH / (time.perf_counter() - start), steps * BATCH / (time.process_time() - cpu_start)


def cpu_rate(steps: int, run: Any) -> tuple[dict[str, Any], float]:
    """`run()`'s result and critic images per CPU second of this process while it ran.

    On a shared CPU a process that is descheduled does not advance its CPU time, so with --threads 1
    this rate barely moves with contention while the wall-clock rate drops several-fold. It covers the
    whole `train()` call (model construction, the epoch-end sample grid and checkpoint, the outputs),
    so it slightly understates ganpipe's rate against the naive loop's, timed over its steps only.
    """
    start = time.process_time()
    result = run()
    return result, steps * BATCH / (time.process_time() - start)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock intervals cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_wgan_iteration_flops(params: dict[str, Any]) -> int:
    """FLOPs of one iteration of ganpipe's loop with model wgan (n_critic critic steps + 1 generator step).

    Counts `train()` run for exactly n_critic steps, minus the generator forward on the fixed noise
    that its end-of-epoch sample grid runs (FLOPs depend only on shapes, so the subtraction is exact).
    It counts on the CPU: the FLOPs are the same on every device, and a CUDA graph replay would
    dispatch no operators for the counter to see.
    """
    params = copy.deepcopy(params)
    params["train"]["device"] = "cpu"
    n_critic = params["models"]["wgan"]["n_critic"]
    with FlopCounterMode(display=False) as counter:
        run_ganpipe(params, "wgan", n_critic)
    total = counter.get_total_flops()
    generator, _ = build_models(params["models"]["wgan"], params["arch"], CHANNELS, SIZE)
    with FlopCounterMode(display=False) as grid_counter, torch.no_grad():
        generator.eval()(torch.zeros(FIXED_NOISE_COUNT, params["arch"]["nz"]))
    return total - grid_counter.get_total_flops()


def matmul_gflops(device: torch.device, repeats: int = 5) -> float:
    """Best fp32 rate of a 2048³ matmul (TF32 off) in GFLOP/s."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    best = float("inf")
    with _fp32_matmul():
        for _ in range(repeats + 1):  # the first call warms up
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE**3 / best / 1e9


@contextlib.contextmanager
def _fp32_matmul() -> Iterator[None]:
    """Full fp32 for CUDA matmuls (no TF32) while the reference rate is measured."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    images, source = load_images(args.data.resolve())
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="ganpipe-bench-") as workdir:
        home = Path.cwd()
        os.chdir(workdir)
        try:
            write_processed(images)
            params = benchmark_params(args.device, Path(workdir) / "checkpoints", args.gp_every)
            n_critic = params["models"]["wgan_gp"]["n_critic"]
            steps = args.steps or DEFAULT_STEPS[device.type]
            steps = -(-steps // n_critic) * n_critic

            # Warm up each code path once (kernel selection, allocator); the naive loop warms up
            # inside each run. Then alternate the timed runs and keep each one's best.
            wgan_n_critic = params["models"]["wgan"]["n_critic"]
            run_ganpipe(params, "wgan_gp", n_critic)
            run_ganpipe(params, "wgan_gp_lazy", n_critic)
            if not args.skip_flop_rate:
                run_ganpipe(params, "wgan", wgan_n_critic)
            ganpipe_runs, lazy_runs, naive_runs, wgan_runs, matmul_runs = [], [], [], [], []
            cpu_runs: dict[str, list[float]] = {"ganpipe": [], "lazy": [], "naive": []}
            for _ in range(args.repeats):
                ganpipe_loops = (("ganpipe", "wgan_gp", ganpipe_runs), ("lazy", "wgan_gp_lazy", lazy_runs))
                for name, model, runs in ganpipe_loops:
                    metrics, cpu_ips = cpu_rate(steps, lambda model=model: run_ganpipe(params, model, steps))
                    runs.append(metrics["critic_images_per_s"])
                    cpu_runs[name].append(round(cpu_ips, 1))
                naive = run_naive(params, images, device, steps, args.workers, warmup=n_critic)
                naive_runs.append(naive[0])
                cpu_runs["naive"].append(round(naive[1], 1))
                if not args.skip_flop_rate:
                    wgan_runs.append(run_ganpipe(params, "wgan", steps)["critic_images_per_s"])
                    matmul_runs.append(matmul_gflops(device))
            ganpipe_ips, lazy_ips, naive_ips = max(ganpipe_runs), max(lazy_runs), max(naive_runs)
            if not args.skip_flop_rate:
                matmul = max(matmul_runs)
                iteration_s = wgan_n_critic * BATCH / max(wgan_runs)
                flops = count_wgan_iteration_flops(params)
        finally:
            os.chdir(home)

    figures: dict[str, Any] = {
        "ganpipe_ips": round(ganpipe_ips, 1),
        "naive_ips": round(naive_ips, 1),
        "ratio": round(ganpipe_ips / naive_ips, 3),
        "gp_every": args.gp_every,
        "lazy_ips": round(lazy_ips, 1),
        "lazy_vs_exact": round(lazy_ips / ganpipe_ips, 3),
        "lazy_vs_naive": round(lazy_ips / naive_ips, 3),
        "runs": {"ganpipe": ganpipe_runs, "lazy": lazy_runs, "naive": [round(r, 1) for r in naive_runs]},
    }
    if device.type == "cpu":  # per CPU second of this process: robust to other processes' load
        best_cpu = {name: max(rates) for name, rates in cpu_runs.items()}
        figures.update(
            {
                "cpu_ips": best_cpu,
                "cpu_runs": cpu_runs,
                "cpu_ratio": round(best_cpu["ganpipe"] / best_cpu["naive"], 3),
                "cpu_lazy_vs_exact": round(best_cpu["lazy"] / best_cpu["ganpipe"], 3),
                "cpu_lazy_vs_naive": round(best_cpu["lazy"] / best_cpu["naive"], 3),
            }
        )
    if not args.skip_flop_rate:
        flop_rate = flops / iteration_s / 1e9
        figures.update(
            {
                "wgan_gflop_per_iteration": round(flops / 1e9, 3),
                "wgan_iteration_s": round(iteration_s, 6),
                "wgan_ips": max(wgan_runs),
                "flop_rate_gflops": round(flop_rate, 2),
                "matmul_gflops": round(matmul, 2),
                "flop_pct": round(100 * flop_rate / matmul, 1),
            }
        )
    figures.update(
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "repeats": args.repeats,
            "cuda_graphs": bool(params["train"].get("cuda_graphs")) and device.type == "cuda",
            "cudnn_tf32": torch.backends.cudnn.allow_tf32 and device.type == "cuda",
            "loadavg": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        }
    )
    print(
        f"data: {source}, {len(images)} images {CHANNELS}x{SIZE}x{SIZE}; device {figures['device']}, "
        f"{figures['threads']} threads, {steps} critic steps x {args.repeats} repeats"
    )
    print(f"ganpipe loop (wgan_gp): {ganpipe_ips:9.1f} critic images/s  (runs: {ganpipe_runs})")
    print(
        f"naive loop   (wgan_gp): {naive_ips:9.1f} critic images/s  "
        f"(runs: {[round(r, 1) for r in naive_runs]})"
    )
    print(f"ratio ganpipe / naive:  {figures['ratio']:9.2f}x")
    print(
        f"ganpipe lazy (gp_every {args.gp_every}): {lazy_ips:9.1f} critic images/s  (runs: {lazy_runs}); "
        f"{figures['lazy_vs_exact']:.2f}x gp_every 1, {figures['lazy_vs_naive']:.2f}x naive"
    )
    if "cpu_ips" in figures:
        print(
            f"per CPU second of this process: ganpipe {figures['cpu_ips']['ganpipe']}, lazy "
            f"{figures['cpu_ips']['lazy']}, naive {figures['cpu_ips']['naive']} critic images; lazy "
            f"{figures['cpu_lazy_vs_exact']:.2f}x gp_every 1, {figures['cpu_lazy_vs_naive']:.2f}x naive, "
            f"ganpipe {figures['cpu_ratio']:.2f}x naive"
        )
    if not args.skip_flop_rate:
        print(
            f"wgan iteration ({wgan_n_critic} critic + 1 generator step): {flops / 1e9:.2f} GFLOP "
            f"in {iteration_s * 1e3:.1f} ms = {flop_rate:.1f} GFLOP/s"
        )
        print(
            f"fp32 {MATMUL_SIDE}^3 matmul: {matmul:.1f} GFLOP/s; "
            f"model FLOP rate = {figures['flop_pct']:.1f}% of it"
        )
    print(f"load average before / after: {figures['loadavg'][:3]} / {figures['loadavg'][3:]}")
    if device.type == "cpu" and load_before[0] > 0.5 + (os.cpu_count() or 1) - figures["threads"]:
        advice = "rerun on a quiet machine"
        if figures["threads"] > 1:  # OpenMP threads spin-wait for a busy core: 5-10x slower, not 2x
            advice += ", with --threads 1, or with OMP_WAIT_POLICY=PASSIVE in the environment"
        print(
            f"warning: load average {load_before[0]:.2f} on {os.cpu_count()} CPUs before the run: other "
            f"processes compete for the cores it used, so its CPU figures are unreliable; {advice}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
