"""Domain FID of `data.limit` experiments against real images they never saw, on a full-data yardstick.

Under `data.limit` the pipeline measures a GAN with a domain classifier trained on the same few
images it learned from, against reference statistics of those images. A generator that reproduces
its training images scores well on that yardstick, which rewards the memorisation DiffAugment fights.
The DiffAugment paper's low-data FIDs are not taken that way: its CIFAR-10 10% / 20% models are
scored against the test set, with an extractor that never saw the data (data-efficient-gans,
DiffAugment-biggan-cifar/inception_tf.py). This script scores each finished experiment's samples
(`data/samples/samples.npz`) three ways and prints them beside the pipeline's `fid`:
- `own`: its own classifier against its own training images (the pipeline's yardstick; a check
  that it reproduces `fid`);
- `full_vs_train`: the classifier of an experiment on all of the source's images, against the
  experiment's training images;
- `full_vs_heldout`: that classifier against the rest of the source's train split, images the
  GAN never saw.
Rows are grouped by model, conditioning, width (arch.ngf/arch.ndf), DiffAugment, data.limit and
critic steps (mean over the seeds). The last line is JSON.

    python research/heldout_fid.py [--repo DIR] [--full-rev REV] [REV ...]

REV: experiments in the repository (`dvc exp show` names or git revisions); default, every
experiment with `data.limit` set and finished samples. `--full-rev` is the experiment whose
classifier and train split are the full-data yardstick; default, one with the same data params
except `data.limit: null`. Files are read with `dvc.api` from the repository's cache.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import dvc.api
import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ganpipe.measure.extractors import EXTRACTORS  # noqa: E402
from ganpipe.measure.features import create_extractor, extract_features  # noqa: E402
from ganpipe.measure.score import fid_between  # noqa: E402
from ganpipe.pipeline import paths  # noqa: E402
from ganpipe.report.settings import width  # noqa: E402

DOMAIN = EXTRACTORS["domain"]
BATCH = 500


def experiment_refs(repo: Path) -> dict[str, str]:
    """Every experiment's name -> its git ref (refs/exps/.../<name>)."""
    listed = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {ref.rsplit("/", 1)[1]: ref for ref in listed if ref.count("/") == 4}


class Experiment:
    """One experiment's params and DVC outputs, read from the repository's cache."""

    def __init__(self, repo: Path, name: str, rev: str) -> None:
        self.repo, self.name, self.rev = repo, name, rev
        self.params = yaml.safe_load(self.git_show("params.yaml"))
        self.stages = yaml.safe_load(self.git_show("dvc.lock"))["stages"]

    def git_show(self, path: str) -> str:
        shown = subprocess.run(
            ["git", "show", f"{self.rev}:{path}"], cwd=self.repo, capture_output=True, text=True
        )
        if shown.returncode != 0:
            raise SystemExit(f"{self.rev}:{path} not found in {self.repo}: {shown.stderr.strip()}")
        return shown.stdout

    def read(self, path: Path) -> bytes:
        with dvc.api.open(str(path), repo=str(self.repo), rev=self.rev, mode="rb") as handle:
            return handle.read()

    def npz(self, path: Path, key: str) -> np.ndarray:
        with np.load(io.BytesIO(self.read(path))) as data:
            return data[key]

    def group(self) -> tuple[Any, ...]:
        model = self.params["model"]
        train = self.params["train"]
        return (
            model,
            self.params["models"][model].get("conditional", "none"),
            width(self.params),
            ",".join(train["augment"]) or "none",
            self.params["data"]["limit"],
            train["max_steps"],
        )


def features(module: Any, images: np.ndarray) -> torch.Tensor:
    return extract_features(module, images, BATCH, torch.device("cpu"), progress=False)[DOMAIN.feature_layer]


def classifier(name: str, weights: bytes, folder: Path) -> Any:
    path = folder / f"{name}.pt"
    path.write_bytes(weights)
    return create_extractor(DOMAIN, path, torch.device("cpu"))


def digests(images: np.ndarray) -> list[str]:
    return [hashlib.md5(image.tobytes()).hexdigest() for image in images]


def full_data_experiment(repo: Path, every: list[Experiment], like: Experiment) -> Experiment:
    """The yardstick's experiment: one of `every` with `like`'s data params but data.limit null."""
    wanted = {**like.params["data"], "limit": None}
    for candidate in every:
        if candidate.params["data"] == wanted and "classifier" in candidate.stages:
            return candidate
    raise SystemExit(
        f"no experiment in {repo} has data {wanted}: run one on all images, or name one with --full-rev"
    )


class Yardsticks:
    """The three scorings of one experiment's samples; features shared by the seeds of one subset."""

    def __init__(self, full: Experiment, folder: Path) -> None:
        self.folder = folder
        self.full_module = classifier(full.name, full.read(paths.CLASSIFIER_WEIGHTS), folder)
        self.all_train = full.npz(paths.PROCESSED_TRAIN, "images")
        self.all_digests = digests(self.all_train)
        self.cached: dict[str, tuple[Any, ...]] = {}

    def real(self, experiment: Experiment) -> tuple[Any, ...]:
        """(own classifier, its features of the training images, the full classifier's features of
        the training images and of the held-out ones, the held-out count)."""
        own_train = experiment.npz(paths.PROCESSED_TRAIN, "images")
        own_weights = experiment.read(paths.CLASSIFIER_WEIGHTS)
        key = hashlib.md5(own_train.tobytes() + own_weights).hexdigest()
        if key not in self.cached:
            seen = set(digests(own_train))
            heldout = [i for i, digest in enumerate(self.all_digests) if digest not in seen]
            own_module = classifier(experiment.name, own_weights, self.folder)
            self.cached[key] = (
                own_module,
                features(own_module, own_train),
                features(self.full_module, own_train),
                features(self.full_module, self.all_train[heldout]),
                len(heldout),
            )
        return self.cached[key]

    def score(self, experiment: Experiment) -> dict[str, Any]:
        own_module, own_real, full_train, full_heldout, heldout_count = self.real(experiment)
        samples = experiment.npz(paths.SAMPLES, "images")
        generated = features(self.full_module, samples)
        return {
            "experiment": experiment.name,
            "seed": experiment.params["seed"],
            "fid": json.loads(experiment.read(paths.SCORES))["fid"],
            "own": fid_between(features(own_module, samples).numpy(), own_real.numpy()),
            "full_vs_train": fid_between(generated.numpy(), full_train.numpy()),
            "full_vs_heldout": fid_between(generated.numpy(), full_heldout.numpy()),
            "train_images": len(own_real),
            "heldout_images": heldout_count,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("revs", nargs="*", help="experiments (default: every data.limit one with samples)")
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument(
        "--full-rev", help="the full-data experiment whose classifier and train split are the yardstick"
    )
    args = parser.parse_args()
    refs = experiment_refs(args.repo)

    def named(name: str) -> Experiment:
        return Experiment(args.repo, name, refs.get(name, name))

    every = None if args.revs and args.full_rev else [named(name) for name in refs]  # each parsed once
    if args.revs:
        experiments = [named(name) for name in args.revs]
    else:
        experiments = [e for e in every if e.params["data"]["limit"] is not None and "sample" in e.stages]
    if not experiments:
        raise SystemExit(
            f"no finished data.limit experiment in {args.repo}: run one with -S data.limit=N first"
        )
    full = named(args.full_rev) if args.full_rev else full_data_experiment(args.repo, every, experiments[0])
    torch.set_num_threads(1)
    rows: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as folder:
        yardsticks = Yardsticks(full, Path(folder))
        print(
            f"yardstick: the classifier and the {len(yardsticks.all_train)} train images of {full.name}",
            flush=True,
        )
        for experiment in experiments:
            row = yardsticks.score(experiment)
            rows[experiment.group()].append(row)
            print(
                f"{experiment.name} {experiment.group()}: fid {row['fid']:.1f}, own {row['own']:.1f}, "
                f"full vs train {row['full_vs_train']:.1f}, "
                f"full vs held-out {row['full_vs_heldout']:.1f}",
                flush=True,
            )
    print(
        "\nmodel, conditional, width (ngf/ndf), augment, limit, steps: mean over the seeds of "
        "fid / full_vs_train / full_vs_heldout"
    )
    summary = []
    for group in sorted(rows, key=str):
        means = {
            key: float(np.mean([row[key] for row in rows[group]]))
            for key in ("fid", "full_vs_train", "full_vs_heldout")
        }
        seeds = sorted(row["seed"] for row in rows[group])
        print(f"{group} seeds {seeds}: " + " / ".join(f"{value:.1f}" for value in means.values()))
        summary.append({"group": list(group), "seeds": seeds, **means, "runs": rows[group]})
    print(json.dumps({"full_rev": full.name, "groups": summary}))


if __name__ == "__main__":
    main()
