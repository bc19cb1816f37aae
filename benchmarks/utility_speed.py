"""Time the utility stage on the MNIST npz: 5 arms × `utility.seeds` classifier trainings.

In a temporary folder it runs the download and preprocess stage functions on
`../shared/data/mnist_t10k.npz` (8,000 train / 1,000 val / 1,000 test, 1 channel), writes a labelled
stand-in for generated samples (the real training images with their labels, as many as
`sample.num_samples`: the stage's cost depends on counts, not on content), then times
`ganpipe.measure.utility.measure_utility` with params.yaml's `utility` and `classifier` settings. The target
(issue 9) is ≤ 3 min for 3 seeds on the 2-core CPU. The last line is JSON.

    python benchmarks/utility_speed.py [--seeds 3] [--data ../shared/data/mnist_t10k.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ganpipe.data import download, preprocess  # noqa: E402
from ganpipe.measure.utility import measure_utility  # noqa: E402
from ganpipe.pipeline import paths  # noqa: E402
from ganpipe.pipeline.io import save_npz  # noqa: E402
from ganpipe.pipeline.processed import read_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist_t10k.npz"))
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="local", source=str(Path(args.data).resolve()), channels=1, limit=None)
    params["utility"]["seeds"] = args.seeds
    os.environ.setdefault("CI", "1")
    load_before = os.getloadavg()[0]  # another busy process on 2 cores distorts the timing
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        download(params["data"])
        preprocess(params)
        images, labels = read_split(paths.PROCESSED_TRAIN)
        count = min(params["sample"]["num_samples"], len(images))
        save_npz(paths.SAMPLES, images=images[:count], labels=labels[:count])
        start = time.perf_counter()
        metrics = measure_utility(params)
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "utility_seconds": round(seconds, 1),
                "seeds": args.seeds,
                "epochs": params["utility"]["epochs"],
                "arms_n_train": {key: value for key, value in metrics.items() if key.endswith("_n_train")},
                "trtr_accuracy_mean": metrics["trtr_accuracy_mean"],
                "cpu_count": os.cpu_count(),
                "load_average_before": load_before,
            }
        )
    )


if __name__ == "__main__":
    main()
