"""GPU leases for parallel queue workers (ganpipe.gan.ddp), on a simulated GPU count.

The workers are forked processes, as `dvc queue start -j N` runs stages in separate processes; each
takes a lease through the real flock code. No GPU is needed: GANPIPE_GPU_COUNT simulates them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from ganpipe.pipeline import leases
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError

FORK = multiprocessing.get_context("fork")  # the parent has torch imported already: forking is quick


@pytest.fixture(autouse=True)
def lock_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "gpu-locks"
    monkeypatch.setenv(leases.LOCK_DIR_ENV, str(folder))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(leases.LEASE_ENV, raising=False)
    return folder


def _worker(gpus: list[str], results: multiprocessing.Queue) -> None:
    """A queue worker: lease a GPU, report it, then hold it until killed."""
    indices, _descriptors = leases.acquire_gpus(1, gpus, poll=0.05)
    results.put((os.getpid(), indices[0]))
    time.sleep(120)


def _start(gpus: list[str], results: multiprocessing.Queue) -> multiprocessing.Process:
    process = FORK.Process(target=_worker, args=(gpus, results), daemon=True)
    process.start()
    return process


def test_parallel_workers_get_distinct_gpus_wait_when_all_are_taken_and_survive_kill_9(capfd) -> None:
    gpus = ["0", "1", "2"]
    results = FORK.Queue()
    workers = [_start(gpus, results) for _ in gpus]
    try:
        leases = dict(results.get(timeout=30) for _ in gpus)  # pid -> GPU index
        assert sorted(leases.values()) == [0, 1, 2]  # one GPU each, none doubled up

        waiter = _start(gpus, results)
        workers.append(waiter)
        time.sleep(1.0)
        assert results.empty()  # every GPU is leased: the fourth worker waits instead of sharing
        assert "GPU lease: all 3 GPUs are in use" in capfd.readouterr().err

        # kill -9 the worker on GPU 1: the kernel drops its flock, the waiter takes exactly that GPU.
        victim = next(pid for pid, index in leases.items() if index == 1)
        os.kill(victim, signal.SIGKILL)
        pid, index = results.get(timeout=10)
        assert (pid, index) == (waiter.pid, 1)
        assert "GPU lease: GPU 1 (cuda:1) after waiting" in capfd.readouterr().err
    finally:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGKILL)
            worker.join(timeout=5)


def test_lease_names_the_gpu_for_the_device_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(leases.GPU_COUNT_ENV, "2")
    other_worker, held = leases.acquire_gpus(1, leases.visible_gpus())  # takes GPU 0
    try:
        with leases.gpu_lease() as leased:
            assert other_worker == [0] and leased == [1]
            assert os.environ[leases.LEASE_ENV] == "1"
            with monkeypatch.context() as patch:
                patch.setattr(torch.cuda, "is_available", lambda: True)
                assert resolve_device("auto") == torch.device("cuda", 1)
                assert resolve_device("cuda") == torch.device("cuda", 1)
                assert resolve_device("cpu") == torch.device("cpu")
            # A process started inside the lease inherits it and takes no second GPU.
            with leases.gpu_lease() as inherited:
                assert inherited == [1]
    finally:
        leases.release_gpus(held)
    assert leases.LEASE_ENV not in os.environ
    with leases.gpu_lease() as again:  # both released: the lowest GPU is free again
        assert again == [0]


@pytest.mark.parametrize("count", ["0", "1"])
def test_one_gpu_or_none_leases_nothing(count: str, monkeypatch, lock_folder: Path) -> None:
    monkeypatch.setenv(leases.GPU_COUNT_ENV, count)
    with leases.gpu_lease() as leased, leases.gpu_lease() as also:
        assert leased == also == []
        assert leases.LEASE_ENV not in os.environ
    assert not lock_folder.exists()
    assert resolve_device("cpu") == torch.device("cpu")


def test_cpu_stage_leases_nothing(monkeypatch, lock_folder: Path) -> None:
    monkeypatch.setenv(leases.GPU_COUNT_ENV, "4")
    with leases.gpu_lease(enabled=False) as leased:
        assert leased == []
    assert not lock_folder.exists()


def test_multi_gpu_leases_are_all_or_nothing(monkeypatch) -> None:
    gpus = ["0", "1", "2"]
    leases._prepare_lock_dir()
    held = leases._try_lock("1")  # another worker holds GPU 1
    try:
        indices, descriptors = leases.acquire_gpus(2, gpus, poll=0.01)
        assert indices == [0, 2]
        leases.release_gpus(descriptors)
    finally:
        leases.release_gpus([held])
    with pytest.raises(GanpipeError, match="4 GPUs wanted but this machine has 3"):
        leases.acquire_gpus(4, gpus)


def test_multi_gpu_lease_waits_holding_nothing_until_enough_are_free() -> None:
    """Two GPUs wanted, one free: the worker waits without keeping the free one (another worker can
    take it meanwhile), and succeeds once two are released."""
    gpus = ["0", "1", "2"]
    leases._prepare_lock_dir()
    others = {gpu: leases._try_lock(gpu) for gpu in ("1", "2")}  # other workers hold GPUs 1 and 2
    outcome: dict[str, list[int]] = {}

    def waiter() -> None:
        indices, descriptors = leases.acquire_gpus(2, gpus, poll=0.01)
        outcome["indices"] = indices
        leases.release_gpus(descriptors)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    try:
        thread.join(timeout=0.5)
        assert thread.is_alive() and not outcome  # one free GPU of two wanted: it waits
        # All or nothing: the waiter lets GPU 0 go between attempts, so a third worker gets it.
        deadline, taken = time.monotonic() + 10, None
        while taken is None and time.monotonic() < deadline:
            taken = leases._try_lock("0")
        assert taken is not None, "the waiting worker kept GPU 0 while it could not have two"
        others["0"] = taken
        leases.release_gpus([others.pop("1"), others.pop("2")])
        thread.join(timeout=10)
        assert outcome == {"indices": [1, 2]}
    finally:
        leases.release_gpus([fd for fd in others.values() if fd is not None])
        thread.join(timeout=10)


def test_locks_are_named_by_the_visible_devices_physical_ids(monkeypatch, lock_folder: Path) -> None:
    # A worker restricted to physical GPUs 2 and 3 locks "2.lock"/"3.lock", as an unrestricted one would.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv(leases.GPU_COUNT_ENV, "2")
    assert leases.visible_gpus() == ["2", "3"]
    with leases.gpu_lease() as leased:
        assert leased == [0]  # torch index 0 of this process = physical GPU 2
        assert sorted(p.name for p in lock_folder.iterdir()) == ["2.lock"]
        assert (lock_folder / "2.lock").read_text().split()[0] == str(os.getpid())
    monkeypatch.setenv(leases.GPU_COUNT_ENV, "two")
    with pytest.raises(GanpipeError, match="GANPIPE_GPU_COUNT='two' is not an integer"):
        leases.visible_gpus()
