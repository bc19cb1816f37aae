"""GPU leases: which GPU a stage may use when several experiments share one machine.

`dvc queue start -j N` runs N experiments at once but assigns no GPU: without help every worker
would take `cuda:0` while the other GPUs idle. The GPU-using stages therefore enter `gpu_lease()`,
which takes one free GPU by an exclusive `fcntl.flock` on a lock file per GPU:

- The kernel releases a flock when its process dies, however it dies (kill -9 included), so a
  crashed worker never leaves a GPU locked; a lock file left on disk is free unless held
  (ganpipe.pipeline.locks).
- A worker that finds every GPU leased waits (and says so) instead of doubling up on one, so no
  GPU is ever oversubscribed while another is idle.
- Locks live in one folder per machine (`GANPIPE_GPU_LOCK_DIR`, default `<tmp>/ganpipe-gpu-locks`),
  not under the repository: queued experiments run in temporary copies of the repo
  (`.dvc/tmp/exps/tmp*`), so a repo-relative folder would give every worker its own locks, and GPUs
  are shared by every repository and user on the machine anyway.
- Lock files are named by the GPU's id as the driver sees it (its `CUDA_VISIBLE_DEVICES` entry, or
  its index when that is unset), so workers with different visible sets still agree on a GPU.
- The leased GPU is handed to the device policy as its torch index (`GANPIPE_CUDA_DEVICE`, read by
  `ganpipe.pipeline.device.resolve_device`, inherited by child processes) and made the current CUDA device,
  so code that says plain "cuda" lands on it too. This works whenever CUDA was initialised, unlike
  rewriting `CUDA_VISIBLE_DEVICES`, which CUDA reads only once, at initialisation.

With one GPU or none nothing is locked: behaviour is unchanged. `GANPIPE_GPU_COUNT` overrides the
number of GPUs seen (the tests simulate several GPUs with it on a CPU machine; it may also keep
ganpipe off some GPUs).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from ganpipe.pipeline import locks
from ganpipe.pipeline.device import LEASE_ENV
from ganpipe.pipeline.errors import GanpipeError

LOCK_DIR_ENV = "GANPIPE_GPU_LOCK_DIR"
GPU_COUNT_ENV = "GANPIPE_GPU_COUNT"
# LEASE_ENV (GANPIPE_CUDA_DEVICE): the torch index of the leased GPU, read by resolve_device
POLL_SECONDS = 1.0  # between attempts while every GPU is leased
REPORT_SECONDS = 60.0  # how often a waiting worker repeats that it is waiting


def lock_dir() -> Path:
    """The machine-wide folder of GPU lock files."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "ganpipe-gpu-locks"


def visible_gpus() -> list[str]:
    """The ids of the GPUs this process may use, in torch index order.

    Ids are `CUDA_VISIBLE_DEVICES` entries when it is set (physical indices or UUIDs), else the
    indices themselves; `GANPIPE_GPU_COUNT` keeps the first that many (or simulates that many).
    """
    override = os.environ.get(GPU_COUNT_ENV)
    try:
        count = torch.cuda.device_count() if override is None else max(int(override), 0)
    except ValueError:
        raise GanpipeError(f"{GPU_COUNT_ENV}={override!r} is not an integer; unset it") from None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [entry.strip() for entry in (visible or "").split(",") if entry.strip()]
    return [ids[i] if visible is not None and i < len(ids) else str(i) for i in range(count)]


def _lock_file(gpu: str) -> Path:
    # A UUID or MIG id may hold characters a file name should not.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu)
    return lock_dir() / f"{safe}.lock"


def _try_lock(gpu: str) -> int | None:
    """The descriptor holding GPU `gpu`'s lock, or None when another process holds it."""
    return locks.try_lock(_lock_file(gpu), shared=True)  # every user's workers share the GPUs


def _holder(gpu: str) -> str:
    return locks.holder(_lock_file(gpu))[0]


def _prepare_lock_dir() -> None:
    folder = lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with suppress(PermissionError):
            folder.chmod(0o1777)  # shared like /tmp: every user may add locks, none delete others'
    except OSError as exc:
        raise GanpipeError(
            f"GPU lock folder {folder}: cannot be created ({exc.strerror}); set {LOCK_DIR_ENV} to a "
            "writable folder on this machine"
        ) from None


def acquire_gpus(
    wanted: int = 1, gpus: list[str] | None = None, poll: float = POLL_SECONDS
) -> tuple[list[int], list[int]]:
    """Block until `wanted` GPUs are free; return their torch indices and the held descriptors.

    All or nothing: a worker that gets only some of what it wants lets them go and waits, so two
    multi-GPU workers can never each hold half of what the other needs.
    """
    gpus = visible_gpus() if gpus is None else gpus
    if not 1 <= wanted <= len(gpus):
        raise GanpipeError(f"{wanted} GPUs wanted but this machine has {len(gpus)}; lower the request")
    _prepare_lock_dir()
    started = last_report = None
    while True:
        held: list[tuple[int, int]] = []
        for index, gpu in enumerate(gpus):  # lowest free index first: a stable, simple policy
            fd = _try_lock(gpu)
            if fd is not None:
                held.append((index, fd))
                if len(held) == wanted:
                    # One line per stage, so `dvc queue logs <exp>` says which GPU an experiment used.
                    names = ", ".join(f"GPU {gpus[i]} (cuda:{i})" for i, _ in held)
                    waited = "" if started is None else f" after waiting {time.monotonic() - started:.0f} s"
                    print(f"GPU lease: {names}{waited}", file=sys.stderr, flush=True)
                    return [i for i, _ in held], [fd for _, fd in held]
        for _, fd in held:
            locks.release(fd)
        now = time.monotonic()
        if last_report is None or now - last_report >= REPORT_SECONDS:
            holders = ", ".join(f"GPU {gpu}: pid {_holder(gpu)}" for gpu in gpus)
            waited = "" if started is None else f" (waiting {now - started:.0f} s)"
            print(
                f"GPU lease: all {len(gpus)} GPUs are in use ({holders}); waiting for one to be free{waited}",
                file=sys.stderr,
                flush=True,
            )
            started = now if started is None else started
            last_report = now
        time.sleep(poll)


def release_gpus(descriptors: list[int]) -> None:
    for fd in descriptors:
        locks.release(fd)


@contextmanager
def gpu_lease(enabled: bool = True, wanted: int = 1) -> Iterator[list[int]]:
    """Hold `wanted` free GPUs for the body; yield their torch indices ([] when nothing is leased).

    Nothing is leased (and nothing changes) when `enabled` is false (a stage set to run on the CPU)
    or the machine has fewer than two GPUs. The first leased GPU becomes `resolve_device`'s and
    torch's current CUDA device. A process started inside a lease (it inherits GANPIPE_CUDA_DEVICE)
    uses its parent's GPUs: the parent holds them, and a second lease would take another GPU.
    """
    inherited = os.environ.get(LEASE_ENV)
    if enabled and inherited:
        yield [int(index) for index in inherited.split(",")]
        return
    gpus = visible_gpus() if enabled else []
    if len(gpus) < 2:
        yield []
        return
    indices, descriptors = acquire_gpus(wanted, gpus)
    os.environ[LEASE_ENV] = ",".join(map(str, indices))
    try:
        if torch.cuda.is_available() and indices[0] < torch.cuda.device_count():
            torch.cuda.set_device(indices[0])
        yield indices
    finally:
        os.environ.pop(LEASE_ENV, None)
        release_gpus(descriptors)
