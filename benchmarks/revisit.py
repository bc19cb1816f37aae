"""Time a revisit: `dvc exp run` of params already run, which the run cache must serve without running
any stage command.

In a temporary git + DVC copy of the repo it runs the offline digits demo (README) with model A, then
with model B, then with model A again, and prints the wall time of each `dvc exp run`, the stages each
one ran, and a final JSON line. The goal (issue 11) is a third run that runs no stage and takes ≤ 15 s.

    python benchmarks/revisit.py [--models dcgan lsgan] [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore", "stages", "ganpipe")
DEMO = {  # the offline demo of README.md and docs/getting-started.md
    "data.name": "digits",
    "data.channels": 1,
    "train.eval_every": 10,
    "sample.num_samples": 2000,
    "score.num_real": 1437,
}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="1", PYTHONPATH=str(cwd))
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, repo / name)
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "bench@ganpipe.invalid"], repo)
    _run(["git", "config", "user.name", "ganpipe benchmark"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "pipeline"], repo)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs=2, default=["dcgan", "lsgan"], metavar=("A", "B"))
    parser.add_argument("--epochs", type=int, default=40, help="train.epochs (the demo's 40 by default)")
    args = parser.parse_args()
    settings = {**DEMO, "train.epochs": args.epochs}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = _repo(Path(tmp))
        for model in (args.models[0], args.models[1], args.models[0]):
            overrides = [f"{key}={value}" for key, value in {**settings, "model": model}.items()]
            command = [sys.executable, "-m", "dvc", "exp", "run"] + [a for o in overrides for a in ("-S", o)]
            start = time.perf_counter()
            result = _run(command, repo)
            seconds = time.perf_counter() - start
            ran = re.findall(r"Running stage '([^']+)'", result.stdout)
            runs.append({"model": model, "seconds": round(seconds, 1), "stages_run": ran})
            print(f"dvc exp run -S model={model}: {seconds:.1f} s, ran {ran or 'no stage'}", flush=True)
    revisit = runs[-1]
    print(
        json.dumps(
            {
                "runs": runs,
                "revisit_s": revisit["seconds"],
                "revisit_ran": revisit["stages_run"],
                "epochs": args.epochs,
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
