"""`ganpipe sweep --engine ray`: each trial a Ray task, results back through the git and DVC remotes.

A task (`run_trial`, on whichever node Ray picks) is one `dvc exp run` in a clean clone of the git
remote at the sweep's commit:

1. clone into `<work dir>/<trial name>` and check out the commit;
2. point the clone's checkpoint folder (`train.checkpoint_dir`, when relative) at the shared
   checkpoint folder, by a symlink: every attempt of the trial, on any node, finds the checkpoint of
   the attempt before (the folder is keyed by everything that shapes the weights, ganpipe.gan.train);
3. `dvc exp run --pull -n <name> -S ...`: the shared stages' outputs come from the DVC remote;
4. `dvc push`, then `dvc exp push --no-cache origin <name>`. Outputs first, the git ref last and
   alone: the ref is pushed whole or not at all, so an experiment on the remote always has its
   outputs, and a task killed anywhere leaves no half-pushed experiment.

Ray retries a task whose worker dies (max_retries); the retry resumes from the checkpoint. Before it
starts, it kills what is left of the attempt before on its node (processes whose working folder is
in the trial's clone), so an orphaned train stage cannot hold the checkpoint's lock. Start nodes with
RAY_process_group_cleanup_enabled=1, so that Ray itself kills a dead worker's processes on every node.

The driver (`sweep`) prints one line per trial as it starts, ends or fails, pulls each finished
trial (`dvc exp pull`), and on Ctrl-C cancels the tasks that have not finished.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ganpipe.pipeline.errors import GanpipeError
from ganpipe.sweep.plan import Trial, dvc_command, experiment_names, gpus_per_trial

POLL_SECONDS = 0.5  # between looks at the tasks and their start events
CANCEL_WAIT_SECONDS = 30.0  # how long Ctrl-C waits for the cancelled tasks to stop before killing them
LOCAL_CLUSTER_ENV = {"RAY_process_group_cleanup_enabled": "1"}  # a dead worker's processes die too


@dataclass(frozen=True)
class TrialSpec:
    """What a task needs to run one trial on any node."""

    name: str
    overrides: tuple[str, ...]
    targets: tuple[str, ...]
    git_url: str
    sha: str
    work_dir: str  # on the worker's node; "" is <tmp>/ganpipe-sweep there
    checkpoints: str  # the checkpoint folder every node shares
    checkpoint_dir: str  # the trial's train.checkpoint_dir
    author: tuple[str, str]  # git user.name and user.email for the experiment's commit ("" unset)


@dataclass(frozen=True)
class Options:
    """The Ray side of `ganpipe sweep`: where the cluster is and what each task gets."""

    address: str | None  # None: RAY_ADDRESS, else a new local cluster on this machine
    remote: str  # the git remote the workers clone from and push to
    checkpoints: Path
    work_dir: str
    cpus: float
    max_retries: int


class TrialFailed(Exception):
    """A step of a trial ended with an error; the message is its last error line."""


def last_error_line(text: str) -> str:
    """The line that says why: ganpipe's `error: ...` if there is one, else DVC's `ERROR: ...`, else
    the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("error:", "ERROR"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1]
    return lines[-1] if lines else "no output"


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=30)


def _stop_leftovers(clone: Path) -> None:
    """Kill the processes of an earlier attempt of this trial on this node: those working in its clone."""
    leftovers = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info["cwd"]
        if cwd and process.pid != os.getpid() and Path(cwd).is_relative_to(clone):
            leftovers.append(process)
    _kill(leftovers)


def _step(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """Run one command of a trial, its output appended to `log`; TrialFailed with its error line.

    Interrupted (Ray's cancel raises KeyboardInterrupt in the task), it kills the command and
    everything the command started, and lets the interrupt go on.
    """
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # Polled, not process.wait(): Ray's cancel raises the interrupt between bytecodes, which
            # a blocking wait would not reach before the command ends.
            while (code := process.poll()) is None:
                time.sleep(POLL_SECONDS)
        except BaseException:
            with suppress(psutil.NoSuchProcess):
                _kill([*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)])
            raise
    if code != 0:
        tail = log.read_text(errors="replace").rsplit("$ ", 1)[-1]
        raise TrialFailed(last_error_line(tail))


def _link_checkpoints(clone: Path, spec: TrialSpec) -> None:
    """The clone's (relative) checkpoint folder as a symlink to the shared one."""
    if Path(spec.checkpoint_dir).is_absolute():
        return  # the user's own folder, used as it is
    link = clone / spec.checkpoint_dir
    link.parent.mkdir(parents=True, exist_ok=True)
    Path(spec.checkpoints).mkdir(parents=True, exist_ok=True)
    link.symlink_to(spec.checkpoints, target_is_directory=True)


def run_trial(spec: TrialSpec, events: Any) -> dict[str, Any]:
    """The Ray task: one trial, start to push (module doc). Returns {"ok", "seconds" or "error",
    "node", "log"}; a failed step is reported, not raised, so Ray retries only a dead worker. The
    log (every command's output, of the last attempt) stays in the work folder."""
    import ray

    # Ray cancels a running task by a KeyboardInterrupt, which needs Python's SIGINT handler; a worker
    # of the driver's local cluster inherits SIGINT ignored (see `sweep`).
    with suppress(ValueError):  # only the main thread may set it; tasks run there
        signal.signal(signal.SIGINT, signal.default_int_handler)
    node = ray.util.get_node_ip_address()
    events.put((spec.name, node))
    work_dir = Path(spec.work_dir or Path(tempfile.gettempdir()) / "ganpipe-sweep")
    clone, log = work_dir / spec.name, work_dir / f"{spec.name}.log"
    work_dir.mkdir(parents=True, exist_ok=True)
    _stop_leftovers(clone)
    shutil.rmtree(clone, ignore_errors=True)
    log.unlink(missing_ok=True)
    python = str(Path(sys.executable).parent)
    env = dict(os.environ, PYTHONPATH=str(clone), PATH=f"{python}{os.pathsep}{os.environ.get('PATH', '')}")
    started = time.monotonic()
    try:
        _step(["git", "clone", "-q", "--no-checkout", spec.git_url, str(clone)], work_dir, env, log)
        _step(["git", "checkout", "-q", spec.sha], clone, env, log)
        for key, value in zip(("user.name", "user.email"), spec.author):
            if value:
                _step(["git", "config", key, value], clone, env, log)
        _link_checkpoints(clone, spec)
        overrides = [argument for value in spec.overrides for argument in ("-S", value)]
        _step(
            dvc_command("exp", "run", "--pull", "-n", spec.name, *overrides, *spec.targets), clone, env, log
        )
        _step(dvc_command("push"), clone, env, log)
        _step(dvc_command("exp", "push", "--no-cache", "origin", spec.name), clone, env, log)
    except TrialFailed as exc:
        return {"ok": False, "error": str(exc), "node": node, "log": str(log)}
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    return {"ok": True, "seconds": time.monotonic() - started, "node": node, "log": str(log)}


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class Progress:
    """One line per event: `[finished/total, F failed] what happened; ETA ...`."""

    def __init__(self, total: int) -> None:
        self.total, self.ended, self.failed = total, 0, 0
        self.since = time.monotonic()

    def say(self, event: str) -> None:
        finished = self.ended + self.failed
        if finished == self.total:
            eta = "done"
        elif finished:
            eta = "ETA " + _duration((time.monotonic() - self.since) / finished * (self.total - finished))
        else:
            eta = "ETA when the first trial ends"
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"[{finished}/{self.total}{failed}] {event}; {eta}", flush=True)


def _pull(repo: Path, remote: str, name: str) -> None:
    """`dvc exp pull`, shielded from Ctrl-C: its own session gets no SIGINT, and an interrupt is
    raised only once the pull is whole."""
    process = subprocess.Popen(
        dvc_command("exp", "pull", remote, name),
        cwd=repo,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    interrupted = False
    while True:
        try:
            output, _ = process.communicate()
            break
        except KeyboardInterrupt:
            interrupted = True
    if process.returncode != 0:
        raise GanpipeError(f"{name}: `dvc exp pull {remote} {name}` failed: {last_error_line(output)}")
    if interrupted:
        raise KeyboardInterrupt


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GanpipeError(
            "--engine ray needs Ray: pip install -r requirements-ray.txt -c constraints.txt"
        ) from None
    return ray


def _git_config(repo: Path, key: str) -> str:
    """A git setting of `repo`, "" when unset."""
    return subprocess.run(["git", "config", key], cwd=repo, capture_output=True, text=True).stdout.strip()


def _skip_done(repo: Path, trials: list[Trial], sha: str, remote: str) -> list[Trial]:
    """The trials still to run; each already an experiment of this commit (here or on the remote)
    is said to be a duplicate, and pulled when only the remote has it."""
    here, there = experiment_names(repo), experiment_names(repo, remote)
    todo = []
    for trial in trials:
        if trial.name not in here | there:
            todo.append(trial)
            continue
        if trial.name not in here:
            _pull(repo, remote, trial.name)
        print(
            f"skipped {trial.name} ({trial.label}): already an experiment of {sha[:7]}, not run again; "
            f"`dvc exp remove -g {remote} {trial.name}` and `dvc exp remove {trial.name}` to rerun it",
            flush=True,
        )
    return todo


def sweep(repo: Path, trials: list[Trial], targets: list[str], sha: str, url: str, options: Options) -> None:
    """Run `trials` on the Ray cluster; GanpipeError when any failed or the sweep was interrupted."""
    ray = _import_ray()
    todo = _skip_done(repo, trials, sha, options.remote)
    if not todo:
        print(f"all {len(trials)} trials are experiments already; `dvc exp show` lists them")
        return
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address is None:
        os.environ.update({key: os.environ.get(key, value) for key, value in LOCAL_CLUSTER_ENV.items()})
        # Ctrl-C reaches the whole foreground process group: the local cluster's processes, started
        # with SIGINT ignored, keep ignoring it, and stay up while the driver cancels the tasks.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        _run(ray, repo, todo, targets, sha, url, options)
    finally:
        ray.shutdown()


def _run(
    ray: Any, repo: Path, todo: list[Trial], targets: list[str], sha: str, url: str, options: Options
) -> None:
    from ray.util.queue import Queue

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = {trial.name: gpus_per_trial(trial.params, cluster_gpus) for trial in todo}
    events = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(run_trial)
    author = (_git_config(repo, "user.name"), _git_config(repo, "user.email"))
    pending = {}
    for trial in todo:
        spec = TrialSpec(
            trial.name, trial.overrides, tuple(targets), url, sha, options.work_dir,
            str(options.checkpoints), trial.params["train"]["checkpoint_dir"], author,
        )  # fmt: skip
        resources = {
            "num_cpus": options.cpus,
            "num_gpus": gpus[trial.name],
            "max_retries": options.max_retries,
        }
        pending[task.options(name=trial.name, **resources).remote(spec, events)] = trial
    progress, failures, starts = Progress(len(todo)), [], {}
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"{len(todo)} trials submitted to Ray ({cpus:g} CPUs, {cluster_gpus:g} GPUs)", flush=True)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), timeout=POLL_SECONDS)
            for name, node in events.get_nowait_batch(events.qsize()):
                starts[name] = starts.get(name, 0) + 1
                again = f" again (attempt {starts[name]}: its worker died)" if starts[name] > 1 else ""
                label = next(trial.label for trial in todo if trial.name == name)
                progress.say(f"started {name} ({label}) on {node}{again}")
            for ref in ready:
                trial = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more often than max_retries
                    result = {
                        "ok": False,
                        "error": last_error_line(str(exc)),
                        "node": "?",
                        "log": "Ray's logs",
                    }
                if result["ok"]:
                    _pull(repo, options.remote, trial.name)
                    progress.ended += 1
                    took = _duration(result["seconds"])
                    progress.say(f"ended {trial.name} ({trial.label}) in {took} on {result['node']}")
                else:
                    progress.failed += 1
                    failures.append(f"{trial.name}: {result['error']}")
                    progress.say(
                        f"FAILED {trial.name} ({trial.label}) on {result['node']}: {result['error']} "
                        f"(whole log: {result['log']})"
                    )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cancelling short
        for ref in pending:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: it kills its commands (_step)
        _, stuck = ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_SECONDS)
        for ref in stuck:
            ray.cancel(ref, force=True)  # its worker killed; Ray kills the worker's process group
        cancelled = f"{len(pending)} unfinished trial{'' if len(pending) == 1 else 's'} cancelled"
        raise GanpipeError(
            f"interrupted: {cancelled}, {progress.ended} pulled; none was pushed in part. Rerun the "
            "same sweep to pull any that pushed meanwhile and run the rest (they resume from their "
            "checkpoints)"
        ) from None
    print(f"{progress.ended} of {len(todo)} trials ran; `dvc exp show` and `ganpipe compare` list them")
    if failures:
        raise GanpipeError(f"{len(failures)} of {len(todo)} trials failed: {'; '.join(failures)}")
