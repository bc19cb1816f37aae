"""A queued experiment whose train process dies resumes when it is queued again (issue 33).

Real `dvc exp run --queue` and `dvc queue start`: the train stage runs in DVC's temporary copy
(`.dvc/tmp/exps/tmp*`), which DVC deletes when the experiment fails. This file imports nothing from
ganpipe, so that it runs unchanged against older code (on commit 520fa71 it fails: the checkpoint
went with the copy and the second run started from step 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import (
    RESUMABLE,
    assert_same_weights_as_uninterrupted,
    checkpointed_train_process,
    dvc,
    experiment_sha,
    one_thread_env,
    run,
    tiny_params,
    write_params,
)


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "dvc", *args], repo, env=one_thread_env(repo))


def _queue(repo: Path, name: str) -> None:
    overrides = [arg for key, value in RESUMABLE.items() for arg in ("-S", f"{key}={value}")]
    _dvc(repo, "exp", "run", "--queue", "-n", name, *overrides, "train")
    # Not through pipes: the worker it starts inherits them, and reading them would wait for its end.
    command = [sys.executable, "-m", "dvc", "queue", "start"]
    subprocess.run(command, cwd=repo, env=one_thread_env(repo), stdout=subprocess.DEVNULL, check=True)


def _checkpoints(repo: Path) -> list[Path]:
    """checkpoint.pt files in the repository or in any of its temporary copies."""
    return [
        *repo.glob(".ganpipe/checkpoints/*/checkpoint.pt"),
        *repo.glob(".dvc/tmp/exps/*/.ganpipe/checkpoints/*/checkpoint.pt"),
    ]


def _state(repo: Path, name: str) -> str:
    """The experiment's state in `dvc queue status`: Queued, Running, Success or Failed."""
    for line in _dvc(repo, "queue", "status").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == name:
            return fields[-1]
    return "?"


def _train_pid_after_first_checkpoint(repo: Path) -> int:
    """The train process in one of the repo's temporary copies, once it wrote its first checkpoint.

    The run ended without either when its temporary copy is gone again.
    """
    copy_seen = False

    def ended() -> str | None:
        nonlocal copy_seen
        copies = list(repo.glob(".dvc/tmp/exps/tmp*"))
        if copy_seen and not copies:
            return _dvc(repo, "queue", "logs", "killed").stdout
        copy_seen = copy_seen or bool(copies)
        return None

    return checkpointed_train_process(
        repo / ".dvc" / "tmp" / "exps", lambda _pid: bool(_checkpoints(repo)), ended
    )


def _wait_until_done(repo: Path, name: str) -> str:
    """Poll for the end of the run cheaply; ask `dvc queue status` (seconds of CPU a call) only when
    a sign says it may have ended (its ref appeared, or its temporary copy came and went) or every
    10 s, so the polling does not slow the run it waits for."""
    deadline = time.monotonic() + 600
    copy_seen = False
    last_asked = time.monotonic()
    while time.monotonic() < deadline:
        copies = list(repo.glob(".dvc/tmp/exps/tmp*"))
        ended_sign = experiment_sha(repo, name) is not None or (copy_seen and not copies)
        copy_seen = copy_seen or bool(copies)
        if ended_sign or time.monotonic() - last_asked > 10:
            last_asked = time.monotonic()
            state = _state(repo, name)
            if state in ("Success", "Failed"):
                return state
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {name} to end")


def test_requeued_experiment_resumes_from_the_killed_runs_checkpoint(repo_copy: Path) -> None:
    repo = repo_copy
    write_params(repo, tiny_params(train__eval_every=None))  # no FID during training: faster
    # The stages before train, once, committed: both queued runs check them out instead of rerunning.
    dvc(repo, "repro", "-q", "train_reference")
    run(["git", "add", "params.yaml", "dvc.lock"], repo)
    run(["git", "commit", "-q", "-m", "data, classifier and train reference"], repo)

    _queue(repo, "killed")
    pid = _train_pid_after_first_checkpoint(repo)
    os.kill(pid, signal.SIGKILL)  # as an OOM kill or a lost machine ends it: no handler, no cleanup
    assert _wait_until_done(repo, "killed") == "Failed"

    _queue(repo, "resumed")
    state = _wait_until_done(repo, "resumed")
    log = _dvc(repo, "queue", "logs", "resumed").stdout
    assert state == "Success", log
    assert f"resuming from {repo}/.ganpipe/checkpoints/" in log, log

    assert_same_weights_as_uninterrupted(repo, "resumed")
