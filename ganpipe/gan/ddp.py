"""Data-parallel training: train.world_size ranks, launched by torchrun.

The train stage re-runs itself as `python -m torch.distributed.run --standalone
--nproc-per-node=<world_size> stages/train.py` (`launch`); each rank then calls `setup`, trains on
its slice of every global batch and rank 0 alone writes. With world size 1 the helpers the loop
calls are identities and it runs exactly as before (bit-identical outputs, checked). The loop only
asks this module "which slice am I, am I rank 0?".
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ganpipe.pipeline.device import LEASE_ENV, resolve_device
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.streams import stream_seed


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batch_slice(self, batch: int) -> slice:
        """This rank's rows of a global batch of `batch` (equal shares, in the global order)."""
        local = batch // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)


_RANKS = Ranks()  # set by setup(); read by the loop's helpers below


def ranks() -> Ranks:
    return _RANKS


def launched() -> bool:
    """Whether this process is a rank started by torchrun."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies. torchrun starts every rank in a session of
    its own, so a kill -9 of the stage's process group would otherwise leave the ranks running,
    still writing outputs after DVC has seen the stage die."""
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# torchrun, dying with its parent like the ranks (set in the child itself: no preexec_fn after fork).
_TORCHRUN = (
    "import sys, runpy; from ganpipe.gan.ddp import _die_with_parent; _die_with_parent(); "
    "sys.argv[0] = 'torchrun'; runpy.run_module('torch.distributed.run', run_name='__main__')"
)


def launch(world_size: int, script: str) -> int:
    """Run `script` as `world_size` ranks on this node with torchrun; return the group's exit status.

    Multi-node: start torchrun by hand on every node (docs/scaling-out.md); the ranks it starts skip
    this launch (`launched`). A rank that fails with a ganpipe error prints `error: ...`; that line
    alone is repeated here (once, not once per rank, and without torchrun's failure report), with
    the rank's exit status. The ranks' stderr is held until the end for that reason.
    """
    command = [sys.executable, "-c", _TORCHRUN, "--standalone", f"--nproc-per-node={world_size}", script]
    # torchrun runs the script by path, which puts stages/ first on sys.path: the repository root goes
    # before it, so the ranks import the ganpipe next to the script, as the stage itself does.
    root = str(Path(script).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False, env=env)
    errors = list(dict.fromkeys(line for line in result.stderr.splitlines() if line.startswith("error: ")))
    if result.returncode != 0 and errors:
        print("\n".join(errors), file=sys.stderr)
        codes = re.findall(r"exitcode\s*:\s*(\d+)", result.stderr)
        return int(codes[0]) if codes else result.returncode
    sys.stderr.write(result.stderr)
    return result.returncode


def setup(device_name: str, world_size: int) -> tuple[Ranks, torch.device]:
    """Join the torchrun group (NCCL on GPUs, gloo on CPU) of `world_size` ranks; this rank's device."""
    global _RANKS
    if not launched():
        raise GanpipeError(
            "train.world_size > 1 runs through the train stage (`dvc repro train` or "
            "`python stages/train.py`), which starts the ranks with torchrun"
        )
    _die_with_parent()  # a rank never outlives torchrun (it does not outlive the stage either)
    world = int(os.environ["WORLD_SIZE"])
    if world != world_size:  # a torchrun started by hand (multi-node) with another rank count
        raise ParamsError(
            f"params.yaml: train.world_size = {world_size} but torchrun started {world} ranks; "
            f"set train.world_size={world}"
        )
    _RANKS = Ranks(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    device = resolve_device(device_name)
    if device.type == "cuda":
        leased = os.environ.get(LEASE_ENV)
        indices = [int(i) for i in leased.split(",")] if leased else list(range(torch.cuda.device_count()))
        if _RANKS.local_rank >= len(indices):
            raise ParamsError(
                f"params.yaml: train.world_size = {world} needs {world} GPUs on this node, found "
                f"{len(indices)}; lower it or set train.device=cpu"
            )
        device = torch.device("cuda", indices[_RANKS.local_rank])
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _RANKS, device


def teardown() -> None:
    global _RANKS
    if dist.is_initialized():
        dist.destroy_process_group()
    _RANKS = Ranks()


def local_params(params: dict[str, Any]) -> dict[str, Any]:
    """params as one rank's training steps see them: its share of the batch, no CUDA graphs (a
    graph cannot hold DDP's gradient all-reduce)."""
    world = _RANKS.world_size
    batch = params["train"]["batch_size"]
    if params["train"]["compile"]:
        raise ParamsError(
            f"params.yaml: train.compile = true with train.world_size = {world} is not supported "
            "(DDP would wrap the uncompiled modules); set train.compile=false"
        )
    if params["train"]["augment"]:
        # Its random parameters cover real and fake rows of one batch (2 x batch), which the
        # contiguous per-rank slice of draw_ does not split the way a single device would.
        raise ParamsError(
            f"params.yaml: train.augment with train.world_size = {world} is not supported yet; set "
            "train.augment=[] or train.world_size=1"
        )
    if batch % world:
        raise ParamsError(
            f"params.yaml: train.batch_size = {batch} does not split into train.world_size = {world} "
            "equal shares; make it a multiple of the world size"
        )
    return {**params, "train": {**params["train"], "batch_size": batch // world, "cuda_graphs": False}}


def draw_(buffer: torch.Tensor, fill: Callable[[torch.Tensor], Any]) -> None:
    """Fill `buffer` (this rank's rows) with its slice of a draw for the whole global batch.

    Every rank draws the global batch from the same checkpointed stream and keeps its rows, so the
    union of the ranks' noise is exactly a single-device run's: results compare with it, and the
    stream stays identical on every rank. With one rank this is `fill(buffer)`, as ever.
    """
    if _RANKS.world_size == 1:
        fill(buffer)
        return
    whole = buffer.new_empty((buffer.shape[0] * _RANKS.world_size, *buffer.shape[1:]))
    fill(whole)
    buffer.copy_(whole[_RANKS.batch_slice(len(whole))])


class PhaseDDP(nn.Module):
    """A module that goes through DDP only in the phase where its own weights learn.

    G and D are separate DDP modules, and the loop switches `requires_grad` per phase. A DDP forward
    with grad enabled expects a gradient for every parameter, so the critic inside the generator
    step (critic frozen) and the generator inside the critic step (no_grad) run the plain module:
    no all-reduce waits for gradients that never come (DDP's "unused parameters" error), and
    `find_unused_parameters` (a graph walk per step) is not needed.

    `broadcast_buffers=False`: the critic runs twice per step (real+fake, then the penalty's
    interpolates) and DDP would overwrite its buffers (spectral norm's u and v) in place between
    the two forwards, under autograd. They need no broadcast: every rank starts from the same
    buffers and weights and applies the same all-reduced update, so its power iterations stay equal.
    The gradient penalty is `autograd.grad(create_graph=True)` on each rank's own interpolates; the
    ordinary backward of the critic loss after it is the one that all-reduces.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.ddp = DistributedDataParallel(module, broadcast_buffers=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        learning = torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters())
        return (self.ddp if learning else self.module)(*args, **kwargs)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, with the gradient summed back: each rank's input feeds every rank's loss."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def _global_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over the global batch: each rank's sums are all-reduced (differentiably), so the
    generator normalises exactly as on one device. torch's SyncBatchNorm does this on GPUs only."""
    if not self.training:
        return nn.modules.batchnorm._BatchNorm.forward(self, x)
    # The statistics in fp32 (a no-op on fp32 input): under bf16 autocast x comes in bf16, whose sums
    # of squares would lose the variance, and the fp32 running statistics could not take them.
    x = x.float()
    dims = [0, *range(2, x.dim())]
    channels = x.shape[1]
    count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
    sums = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    n = sums[-1]
    mean = sums[:channels] / n
    var = (sums[channels : 2 * channels] / n - mean * mean).clamp_min(0)
    with torch.no_grad():
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * n / (n - 1), self.momentum)
        self.num_batches_tracked += 1
    shape = [1, channels] + [1] * (x.dim() - 2)
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


def seed_rank(seed: int) -> None:
    """Seed the global RNGs (dropout masks) from this rank's own stream, so ranks do not repeat one
    another's masks. Derived by hashing (seed, "train.rank", rank), never seed + rank
    (ganpipe.pipeline.streams)."""
    value = stream_seed(seed, "train.rank", _RANKS.rank)
    torch.manual_seed(value)
    np.random.seed(value & 0xFFFF_FFFF)
    random.seed(value)


def wrap_models(steps: Any, generator: nn.Module, critic: nn.Module) -> None:
    """Make `steps` train G and D data-parallel: batch norm over the global batch in G (one device's
    normalisation), and each of G and D through DDP in its own phase (PhaseDDP)."""
    for module in generator.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = _global_batch_norm.__get__(module)
    steps.generator, steps.critic = PhaseDDP(generator), PhaseDDP(critic)


def mean_over_ranks(values: list[float | None]) -> list[float | None]:
    """The global-batch mean of per-rank means (equal shares); None stays None on every rank."""
    if _RANKS.world_size == 1:
        return values
    present = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(present)
    return [None if v is None else float(total) / _RANKS.world_size for v, total in zip(values, present)]


def gather_rng(state: Any) -> list[Any]:
    """Every rank's RNG `state`, in rank order (a collective: every rank calls it)."""
    gathered: list[Any] = [None] * _RANKS.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def checkpoint_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` (a Run's) with the world size and every rank's RNG states, which a resume restores per
    rank. A collective with more than one rank: every rank calls it, rank 0 writes the file."""
    state["world_size"] = _RANKS.world_size
    if _RANKS.world_size > 1:
        state["rank_rng"] = gather_rng(state["rng"])
    return state


def resume_state(state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """A loaded checkpoint as this rank restores it: refused for another world size; the RNG states
    are this rank's own. Checkpoints from before world sizes existed are single-process ones."""
    check_world_size(state.get("world_size", 1), checkpoint)
    if _RANKS.world_size > 1:
        state["rng"] = state["rank_rng"][_RANKS.rank]
    return state


def check_world_size(saved: int, checkpoint: Path) -> None:
    """Refuse to resume a checkpoint written with another world size: the data slices, the rank
    streams and the float order of the reductions all follow it, so resume would not be exact."""
    world = _RANKS.world_size
    if saved != world:
        raise ParamsError(
            f"{checkpoint}: written by a run with train.world_size = {saved}, but train.world_size = "
            f"{world}; set train.world_size={saved} to resume it, or delete {checkpoint.parent} to "
            "start afresh"
        )
