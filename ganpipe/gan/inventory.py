"""`ganpipe checkpoints`: the resume points on disk, and whether any run can ever use one again.

A checkpoint folder is named by its run key (ganpipe.gan.train.run_key): a hash of the params, the
device type, the training data's md5 and the train stage's code. A run can come back to it only if
some setting that may still run gives that key with the current code. The settings that may still
run are the ones `dvc exp show` lists: the workspace's params.yaml, the commit's, and every
experiment's (queued, running, failed ones to re-queue, finished ones). Params do not give the
device type and the data's md5; the folder's record (run.json, written by the run) holds them, so
each setting's key is recomputed exactly as that run computed it.

A folder is stale when no setting gives its key (a param or the code changed since), or when it
holds no checkpoint (its run died before the first save). `--prune` deletes stale folders, never
one whose lock is held: a run is training there. Not detected: the same params over changed data
(a local data.source edited in place); such a folder stays listed as resumable until pruned by hand.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganpipe.gan.checkpoint import CHECKPOINT_FILE, LOCK_FILE, RECORD_FILE, resolve_checkpoint_dir
from ganpipe.gan.train import TRAIN_SCRIPT, run_key
from ganpipe.pipeline import locks
from ganpipe.pipeline.deps import code_digest
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.exp_show import WORKSPACE, file_data
from ganpipe.pipeline.params import PARAMS_FILE

RESUMABLE, IN_USE, STALE = "resumable", "in use", "stale"


@dataclass(frozen=True)
class Checkpoint:
    """One run key's folder as `ganpipe checkpoints` lists it."""

    folder: Path
    size: int  # bytes of every file in the folder
    age_s: float  # since the last checkpoint was saved (or the folder was made, when none was)
    state: str  # RESUMABLE, IN_USE or STALE
    why: str  # the setting it belongs to, who trains in it, or why it is stale


def settings_from_exp_show(
    document: list[dict[str, Any]], validate: Callable[[Any], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{label: params} of every row of `dvc exp show --json` whose params.yaml the current code accepts.

    `validate`: the check of a whole params mapping (ganpipe.config.validate, which sits above this
    layer).
    """
    rows: list[tuple[str, dict[str, Any]]] = []
    for commit in document:
        rev = commit.get("rev") or ""
        rows.append(("params.yaml" if rev == WORKSPACE else f"commit {rev[:7]}", commit))
        for experiment in commit.get("experiments") or []:
            for entry in experiment.get("revs") or []:
                rows.append((f"experiment {experiment.get('name') or entry.get('name') or '?'}", entry))
    settings: dict[str, dict[str, Any]] = {}
    for label, entry in rows:
        params = file_data((entry.get("data") or {}).get("params")).get(PARAMS_FILE)
        try:
            settings.setdefault(label, validate(params))
        except ParamsError:  # an older schema: the current code cannot run it
            continue
    return settings


def _record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"device", "data_md5", "code"} <= set(record) else None


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def _describe(record: dict[str, Any]) -> str:
    params = record.get("params") or {}
    return f"{params.get('model', '?')} seed {params.get('seed', '?')}"


def list_checkpoints(settings: dict[str, dict[str, Any]], root: Path = Path(".")) -> list[Checkpoint]:
    """Every run-key folder under the checkpoint folders of `settings`, newest first.

    `root`: the repository whose code is current (its train stage's import closure keys the runs).
    """
    code = code_digest(TRAIN_SCRIPT, root.resolve())
    folders = {resolve_checkpoint_dir(params["train"]["checkpoint_dir"]) for params in settings.values()}
    keys: dict[tuple[str, str], dict[str, str]] = {}  # (device, data md5) -> {key: setting label}
    found: list[Checkpoint] = []
    now = time.time()
    for folder in sorted(f for parent in folders if parent.is_dir() for f in parent.iterdir() if f.is_dir()):
        checkpoint, record = folder / CHECKPOINT_FILE, _record(folder)
        age = now - (checkpoint if checkpoint.exists() else folder).stat().st_mtime
        if locks.is_locked(folder / LOCK_FILE):
            pid, _ = locks.holder(folder / LOCK_FILE)
            state, why = IN_USE, f"pid {pid} is training here"
        elif not checkpoint.exists():
            state, why = STALE, "no checkpoint: its run stopped before the first save"
        elif record is None:
            state, why = STALE, f"no {RECORD_FILE}: written by an older ganpipe, whose code differs"
        else:
            wanted = (record["device"], record["data_md5"])
            if wanted not in keys:
                device = torch.device(record["device"])
                keys[wanted] = {
                    run_key(params, device, record["data_md5"], code): label
                    for label, params in reversed(settings.items())  # the first label wins
                }
            label = keys[wanted].get(folder.name)
            if label is not None:
                state, why = RESUMABLE, f"{_describe(record)}, {label}"
            elif record["code"] != code:
                state, why = STALE, f"{_describe(record)}; the train stage's code changed since"
            else:
                state, why = STALE, f"{_describe(record)}; its settings are in no params.yaml or experiment"
        found.append(Checkpoint(folder, _size(folder), age, state, why))
    return sorted(found, key=lambda entry: entry.age_s)


def prune(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """Delete the stale folders (not locked when listed, and checked again just before); return them."""
    removed = []
    for entry in checkpoints:
        if entry.state == STALE and not locks.is_locked(entry.folder / LOCK_FILE):
            shutil.rmtree(entry.folder, ignore_errors=True)
            removed.append(entry)
    return removed


def human_size(size: int) -> str:
    value, unit = float(size), "B"
    for bigger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def human_age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"
