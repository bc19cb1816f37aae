"""Training throughput: ganpipe's loop in fp32 and bf16 against a naive seed-style loop, and each
step's FLOP rate against the machine's GEMM roof of its precision.

For two models, wgan_gp (the seed recipe, the penalty on every critic step) and hinge (spectral norm,
n_critic 1), all loops train DCGAN-28 (nz 100, ngf = ndf = 64, 3 channels, batch 64) on the same
real images and report critic images per second over training steps (generator steps included,
model construction excluded); each code path is warmed up once first:

- fp32: the real `ganpipe.gan.train.train(params)` (params.yaml plus this benchmark's overrides),
  run inside a temporary directory that holds `data/processed/`. Its `critic_images_per_s`
  metric is timed over training steps only; on CUDA that includes capturing its CUDA graphs.
- bf16: the same with `train.precision: bf16`. Where the device has no bf16 arithmetic (a CPU
  without AMX-BF16 or AVX512-BF16) this arm is skipped and the JSON says why: torch would emulate
  bf16 there, far slower than fp32, which says nothing of the feature's speed.
- naive: the way the original experiments were written: a Dataset of PIL images through
  torchvision's ToTensor + Normalize, a shuffling DataLoader, the generator's forward recomputed
  with autograd on every critic step (its output detached for the critic), separate critic
  forwards for real and fake, and a generator step that also computes unused critic gradients.
- lazy: wgan_gp's fp32 `train()` with the lazy gradient penalty (`gp_every`, default 4: the
  penalty on every 4th critic step at 4 times the weight).

Ratios are named `*_ratio` (for example `bf16_vs_naive_ratio`). The FLOP rate of each ganpipe arm:
`FlopCount` (torch's flop formulas, at the dispatcher) counts the FLOPs of `train()` run for exactly
one iteration (n_critic critic steps + one generator step), minus those of the end-of-epoch sample
grid it draws; the timed run gives the seconds per iteration. Each rate is set against the roof of
its precision: the best of several 2048³ matmuls in fp32 and in bf16 (the bf16 one only where the
device has bf16 arithmetic: emulated, one took 400 s on a Zen 1 EPYC).

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
import math
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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import flop_registry
from torchvision import transforms

from ganpipe.gan.losses import LOSSES
from ganpipe.gan.models import build_models
from ganpipe.gan.train import FIXED_NOISE_COUNT, train
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.precision import check_precision, cpu_bf16_support

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mnist_t10k.npz"
DEFAULT_STEPS = {"cpu": 60, "cuda": 2000}
BATCH = 64
SIZE = 28
CHANNELS = 3
MATMUL_SIDE = 2048
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # train.precision -> the GEMM roof's dtype
MODELS = ("wgan_gp", "hinge")  # the seed recipe (penalty on every critic step), and hinge


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
        help="skip the FLOP counts and the matmul roofs (a cheaper run on a shared machine)",
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
        precision="fp32",
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
    params: dict[str, Any],
    model: str,
    images: np.ndarray,
    device: torch.device,
    steps: int,
    workers: int,
    warmup: int,
) -> tuple[float, float]:
    """Critic images per second of the seed-style loop of `model` over `steps` critic steps after
    `warmup` ones: per wall-clock second and per CPU second of this process (see `cpu_rate`)."""
    cfg = params["models"][model]
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
        loss_d = loss.critic(score_real, score_fake, cfg["label_smoothing"])
        if gp_lambda > 0:
            loss_d = loss_d + gp_lambda * seed_gradient_penalty(critic, real, fake.detach())
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


class FlopCount(TorchDispatchMode):
    """FLOPs of the operators run inside it, by torch's own formulas (torch.utils.flop_counter).

    FlopCounterMode itself cannot run the gradient penalty: its module tracker hooks the backward,
    and autograd.grad on the interpolates then fails ("A leaf node was passed to
    _will_engine_execute_node"). Counting at the dispatcher alone has no such hooks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_iteration_flops(params: dict[str, Any], model: str) -> int:
    """FLOPs of one iteration of ganpipe's loop with `model` (n_critic critic steps + 1 generator step).

    Counts `train()` run for exactly n_critic steps, minus the generator forward on the fixed noise
    that its end-of-epoch sample grid runs (FLOPs depend only on shapes, so the subtraction is exact).
    It counts on the CPU in fp32: the FLOPs are the same on every device and in either precision, and
    a CUDA graph replay would dispatch no operators for the counter to see.
    """
    params = copy.deepcopy(params)
    params["train"].update(device="cpu", precision="fp32")
    n_critic = params["models"][model]["n_critic"]
    with FlopCount() as counter:
        run_ganpipe(params, model, n_critic)
    generator, _ = build_models(params["models"][model], params["arch"], CHANNELS, SIZE)
    with FlopCount() as grid_counter, torch.no_grad():
        generator.eval()(torch.zeros(FIXED_NOISE_COUNT, params["arch"]["nz"]))
    return counter.flops - grid_counter.flops


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best rate of a 2048³ matmul in `dtype` (TF32 off for fp32) in GFLOP/s: the GEMM roof."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=dtype)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=dtype)
    best = float("inf")
    with _fp32_matmul():
        for _ in range(repeats + 1):  # the first call warms up
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE**3 / best / 1e9


def bf16_unavailable(device: torch.device) -> str | None:
    """Why `train.precision: bf16` cannot run at the hardware's speed on `device`; None where it can."""
    try:
        check_precision("bf16", device)
    except ParamsError as refused:
        return str(refused)
    return None


@contextlib.contextmanager
def _fp32_matmul() -> Iterator[None]:
    """Full fp32 for CUDA matmuls (no TF32) while the reference rate is measured."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or denominator is None else round(numerator / denominator, 3)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    images, source = load_images(args.data.resolve())
    load_before = os.getloadavg()
    bf16_skipped = bf16_unavailable(device)
    precisions = ("fp32",) if bf16_skipped else ("fp32", "bf16")
    # (model, precision) of every ganpipe arm; the lazy arm is wgan_gp_lazy in fp32.
    arms = [(model, precision) for model in MODELS for precision in precisions] + [("wgan_gp_lazy", "fp32")]
    rates: dict[tuple[str, str], list[float]] = {arm: [] for arm in [*arms, *((m, "naive") for m in MODELS)]}
    cpu_rates: dict[tuple[str, str], list[float]] = {arm: [] for arm in rates}

    with tempfile.TemporaryDirectory(prefix="ganpipe-bench-") as workdir:
        home = Path.cwd()
        os.chdir(workdir)
        try:
            write_processed(images)
            base = benchmark_params(args.device, Path(workdir) / "checkpoints", args.gp_every)
            by_precision = {p: {**base, "train": {**base["train"], "precision": p}} for p in precisions}
            n_critics = {model: base["models"][model]["n_critic"] for model in MODELS}
            # A multiple of every model's n_critic, so each timed run ends on a generator step.
            lcm = math.lcm(*n_critics.values())
            steps = -(-(args.steps or DEFAULT_STEPS[device.type]) // lcm) * lcm

            # Warm up each code path once (kernel selection, allocator); the naive loop warms up
            # inside each run. Then alternate the timed runs and keep each one's best.
            for model, precision in arms:
                run_ganpipe(by_precision[precision], model, base["models"][model]["n_critic"])
            for _ in range(args.repeats):
                for model, precision in arms:
                    params = by_precision[precision]
                    metrics, cpu_ips = cpu_rate(steps, lambda m=model, p=params: run_ganpipe(p, m, steps))
                    rates[model, precision].append(metrics["critic_images_per_s"])
                    cpu_rates[model, precision].append(round(cpu_ips, 1))
                for model in MODELS:
                    naive = run_naive(
                        base, model, images, device, steps, args.workers, warmup=n_critics[model]
                    )
                    rates[model, "naive"].append(round(naive[0], 1))
                    cpu_rates[model, "naive"].append(round(naive[1], 1))
            if not args.skip_flop_rate:
                # Only where the arithmetic exists: on a Zen 1 EPYC one emulated bf16 2048^3 matmul
                # took 400 s (0.04 GFLOP/s), which is no roof of anything.
                roofs = {p: matmul_gflops(device, DTYPES[p]) for p in precisions}
                flops = {model: count_iteration_flops(base, model) for model in MODELS}
        finally:
            os.chdir(home)

    best = {arm: max(runs) for arm, runs in rates.items()}
    figures: dict[str, Any] = {
        "cpu_bf16": cpu_bf16_support(),
        "bf16": "measured" if bf16_skipped is None else f"skipped: {bf16_skipped}",
    }
    for model in MODELS:
        fp32, bf16, naive = best[model, "fp32"], best.get((model, "bf16")), best[model, "naive"]
        row: dict[str, Any] = {
            "fp32_ips": fp32,
            "bf16_ips": bf16,
            "naive_ips": naive,
            "fp32_vs_naive_ratio": ratio(fp32, naive),
            "bf16_vs_naive_ratio": ratio(bf16, naive),
            "bf16_vs_fp32_ratio": ratio(bf16, fp32),
            "runs": {arm[1]: runs for arm, runs in rates.items() if arm[0] == model},
        }
        if device.type == "cpu":  # per CPU second of this process: robust to other processes' load
            best_cpu = {arm[1]: max(runs) for arm, runs in cpu_rates.items() if arm[0] == model}
            row["cpu_ips"] = best_cpu
            row["cpu_fp32_vs_naive_ratio"] = ratio(best_cpu["fp32"], best_cpu["naive"])
            row["cpu_bf16_vs_naive_ratio"] = ratio(best_cpu.get("bf16"), best_cpu["naive"])
        if not args.skip_flop_rate:
            row["gflop_per_iteration"] = round(flops[model] / 1e9, 3)
            for precision in precisions:
                iteration_s = n_critics[model] * BATCH / best[model, precision]
                gflops = flops[model] / iteration_s / 1e9
                row[f"{precision}_gflops"] = round(gflops, 2)
                row[f"{precision}_roof_pct"] = round(100 * gflops / roofs[precision], 1)
        figures[model] = row
    lazy = best["wgan_gp_lazy", "fp32"]
    figures["lazy"] = {
        "gp_every": args.gp_every,
        "lazy_ips": lazy,
        "lazy_vs_exact_ratio": ratio(lazy, best["wgan_gp", "fp32"]),
        "lazy_vs_naive_ratio": ratio(lazy, best["wgan_gp", "naive"]),
        "runs": rates["wgan_gp_lazy", "fp32"],
    }
    if not args.skip_flop_rate:
        figures["gemm_fp32_gflops"] = round(roofs["fp32"], 2)
        figures["gemm_bf16_gflops"] = round(roofs["bf16"], 2) if "bf16" in roofs else None
    figures.update(
        {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "repeats": args.repeats,
            "cuda_graphs": bool(base["train"].get("cuda_graphs")) and device.type == "cuda",
            "cudnn_tf32": torch.backends.cudnn.allow_tf32 and device.type == "cuda",
            "loadavg": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        }
    )
    report(figures, source, len(images))
    print(json.dumps(figures))


def report(figures: dict[str, Any], source: str, n_images: int) -> None:
    """The figures as lines a person reads (the JSON line after them holds them all)."""
    print(
        f"data: {source}, {n_images} images {CHANNELS}x{SIZE}x{SIZE}; device {figures['device']}, "
        f"{figures['threads']} threads, {figures['steps']} critic steps x {figures['repeats']} repeats; "
        f"CPU bf16 arithmetic: {figures['cpu_bf16']}"
    )
    if figures["bf16"] != "measured":
        print(f"bf16 arm {figures['bf16']}")
    for model in MODELS:
        row = figures[model]
        bf16 = "skipped" if row["bf16_ips"] is None else f"{row['bf16_ips']:.1f}"
        print(
            f"{model}: critic images/s fp32 {row['fp32_ips']:.1f}, bf16 {bf16}, "
            f"naive {row['naive_ips']:.1f}; "
            f"fp32/naive {row['fp32_vs_naive_ratio']}x"
            + ("" if row["bf16_vs_naive_ratio"] is None else f", bf16/naive {row['bf16_vs_naive_ratio']}x")
        )
        if "cpu_ips" in row:
            print(
                f"  per CPU second of this process: {row['cpu_ips']}; "
                f"fp32/naive {row['cpu_fp32_vs_naive_ratio']}x"
            )
        if "gflop_per_iteration" in row:
            for precision in ("fp32", "bf16"):
                if f"{precision}_gflops" in row:
                    print(
                        f"  {precision}: {row['gflop_per_iteration']} GFLOP per iteration at "
                        f"{row[f'{precision}_gflops']} GFLOP/s = {row[f'{precision}_roof_pct']}% of the "
                        f"{precision} GEMM roof"
                    )
    lazy = figures["lazy"]
    print(
        f"wgan_gp lazy (gp_every {lazy['gp_every']}): {lazy['lazy_ips']:.1f} critic images/s; "
        f"{lazy['lazy_vs_exact_ratio']}x gp_every 1, {lazy['lazy_vs_naive_ratio']}x naive"
    )
    if "gemm_fp32_gflops" in figures:
        bf16 = figures["gemm_bf16_gflops"]
        print(
            f"GEMM roofs ({MATMUL_SIDE}^3 matmul): fp32 {figures['gemm_fp32_gflops']} GFLOP/s, "
            f"bf16 {'not measured (no bf16 arithmetic)' if bf16 is None else f'{bf16} GFLOP/s'}"
        )
    load_before, threads = figures["loadavg"][0], figures["threads"]
    print(f"load average before / after: {figures['loadavg'][:3]} / {figures['loadavg'][3:]}")
    if figures["device"] == "cpu" and load_before > 0.5 + (os.cpu_count() or 1) - threads:
        advice = "rerun on a quiet machine"
        if threads > 1:  # OpenMP threads spin-wait for a busy core: 5-10x slower, not 2x
            advice += ", with --threads 1, or with OMP_WAIT_POLICY=PASSIVE in the environment"
        print(
            f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs before the run: other "
            f"processes compete for the cores it used, so its CPU figures are unreliable; {advice}"
        )


if __name__ == "__main__":
    main()
