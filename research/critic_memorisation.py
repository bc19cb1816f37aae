"""Has the critic memorised its training images? Its scores on them vs on real images it never saw.

DiffAugment exists because a critic trained on a small set learns to tell *those* images apart from
every other image, real ones included (Zhao et al. 2020, Fig. 1). This reads a finished run's critic
(`data/train/critic.pt`), scores up to `--count` images of the processed train split (what it trained
on) and of the val split (real images it never saw), and prints:
- the gap between the two mean scores, in pooled standard deviations (0: no memorisation);
- how often a threshold at the median score puts an image on its own side (0.5: chance).
A conditional critic scores each image with its own label. The last line is JSON.

    python research/critic_memorisation.py RUN_DIR [RUN_DIR ...] [--count 500]

RUN_DIR is a repository, or a copy of one, in which `dvc repro train` (or `dvc exp run`) has run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ganpipe.gan.arch.dcgan import Critic  # noqa: E402
from ganpipe.measure.classifier import DomainClassifier  # noqa: E402
from ganpipe.pipeline import paths  # noqa: E402
from ganpipe.pipeline.processed import read_split  # noqa: E402


def critic_scores(critic: Critic, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The critic's raw score of each uint8 image, on the [-1, 1] scale it trained on."""
    x = DomainClassifier.normalize(torch.from_numpy(images))
    y = torch.from_numpy(labels) if critic.config["conditional"] != "none" else None
    with torch.no_grad():
        return critic(x, y)[0].numpy()


def memorisation(run_dir: Path, count: int) -> dict[str, float | str]:
    saved = torch.load(run_dir / paths.CRITIC, map_location="cpu", weights_only=False)
    critic = Critic(**saved["config"])
    critic.load_state_dict(saved["state_dict"])
    critic.eval()
    seen = critic_scores(critic, *(a[:count] for a in read_split(run_dir / paths.PROCESSED_TRAIN)))
    unseen = critic_scores(critic, *(a[:count] for a in read_split(run_dir / paths.PROCESSED_VAL)))
    gap = (seen.mean() - unseen.mean()) / np.sqrt((seen.var() + unseen.var()) / 2)
    both = np.concatenate([seen, unseen])
    is_seen = np.r_[np.ones(len(seen)), np.zeros(len(unseen))]
    median_split = float(((both > np.median(both)) == is_seen).mean())
    return {
        "run": str(run_dir),
        "train_images": len(seen),
        "unseen_images": len(unseen),
        "gap_sd": round(float(gap), 3),
        "median_split_accuracy": round(median_split, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--count", type=int, default=500, help="images per split (default 500)")
    args = parser.parse_args()
    results = []
    for run_dir in args.runs:
        if not (run_dir / paths.CRITIC).exists():
            raise SystemExit(f"{run_dir / paths.CRITIC} not found: run `dvc repro train` there first")
        result = memorisation(run_dir, args.count)
        print(
            f"{run_dir}: gap {result['gap_sd']:+.2f} sd, the median tells train from unseen "
            f"{result['median_split_accuracy']:.2f} of the time",
            flush=True,
        )
        results.append(result)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
