"""How long the score stage's domain metrics take for 10,000 generated vs 10,000 real images on CPU.

Two figures: with the reference statistics reused (what every experiment pays: extract the generated
side, then FID/IS/KID/precision/recall/coverage) and with them recomputed (extracting the real side
too, as a pipeline without the reference stage would). The real images are the 10,000 MNIST test
digits from ../shared/data/mnist_t10k.npz (train+val+test) when present, else scikit-learn's digits
upsampled to 28 px and shifted to 10,000 images. The "generated" images are the real ones, each
shifted by up to one pixel, in another order: realistic features, and not identical to the real set.

Setup (not timed): a classifier is trained on the first 8,000 images (5 epochs) and its test
accuracy on the last 1,000 is printed. Run from the repository root:

    python benchmarks/score_speed.py

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MNIST_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist_t10k.npz"
N = 10_000


def shift(images: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Each image rolled by -1..1 pixels on both axes."""
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(rng.randint(-1, 2, size=(len(images), 2))):
        out[i] = np.roll(images[i], (dy, dx), axis=(-2, -1))
    return out


def load_real() -> tuple[np.ndarray, np.ndarray, str]:
    if MNIST_NPZ.exists():
        with np.load(MNIST_NPZ) as data:
            images = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])[:, None]
            labels = np.concatenate([data[f"{s}_labels"] for s in ("train", "val", "test")]).reshape(-1)
        return images, labels.astype(np.int64), f"MNIST test set ({MNIST_NPZ.name}, 10,000 images)"
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)
    big = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    base = big.round().clamp(0, 255).to(torch.uint8).numpy()
    reps = -(-N // len(base))
    rng = np.random.RandomState(1)
    images = shift(np.tile(base, (reps, 1, 1, 1)), rng)[:N]
    labels = np.tile(digits.target, reps)[:N].astype(np.int64)
    order = rng.permutation(N)
    return images[order], labels[order], "sklearn digits upsampled to 28 px, tiled and shifted to 10,000"


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    from ganpipe.measure.classifier import accuracy, save_classifier, train_classifier
    from ganpipe.measure.features import EXTRACTORS, create_extractor, extract_features
    from ganpipe.measure.score import compute_reference, score_samples
    from ganpipe.pipeline import paths
    from ganpipe.pipeline.io import save_npz, write_json

    os.environ.setdefault("CI", "1")  # no progress bars in the figures
    images, labels, source = load_real()
    generated = shift(images, np.random.RandomState(0))[np.random.RandomState(2).permutation(N)]
    params = {
        "seed": 0,
        # compute_reference sizes the real-vs-real noise floor by the score's N.
        "sample": {"num_samples": N},
        "score": {
            "num_real": N,
            "train_samples": 2000,
            "extractors": ["domain"],
            "weights": {},
            "batch_size": 250,
        },
    }
    print(f"real images: {source}; torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        model, train_s = timed(
            lambda: (
                train_classifier(
                    images[:8000], labels[:8000], 10, epochs=5, batch_size=128, lr=1e-3, seed=0
                ).model
            )
        )
        test_accuracy = accuracy(model, images[9000:], labels[9000:], "cpu")
        print(f"setup: classifier trained in {train_s:.1f} s, test accuracy {test_accuracy:.4f}")
        save_classifier(paths.CLASSIFIER_WEIGHTS, model)
        save_npz(paths.PROCESSED_TRAIN, images=images, labels=labels)
        write_json(
            paths.PROCESSED_INFO,
            {
                "name": "bench",
                "n_classes": 10,
                "channels": 1,
                "size": 28,
                "n_train": N,
                "n_test": 0,
                "label_names": [str(i) for i in range(10)],
            },
        )
        save_npz(paths.SAMPLES, images=generated)

        _, reference_s = timed(compute_reference, params)
        scores, reuse_s = timed(score_samples, params)
        recompute_s = reference_s + reuse_s
        module = create_extractor(EXTRACTORS["domain"], paths.CLASSIFIER_WEIGHTS, torch.device("cpu"))
        _, extract_s = timed(extract_features, module, generated, 250, torch.device("cpu"))
    print(f"reference statistics (real side, 10,000 images): {reference_s:.1f} s")
    print(f"score with the reference reused:                 {reuse_s:.1f} s")
    print(f"  of which feature extraction (generated side):  {extract_s:.1f} s")
    print(f"score recomputing the reference:                 {recompute_s:.1f} s")
    print(
        f"fid {scores['fid']:.3f}, is {scores['is_mean']:.3f}, kid {scores['kid_mean']:.4f}, "
        f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "score_speed",
                "real_source": source,
                "num_generated": scores["num_generated"],
                "num_real": scores["num_real"],
                "torch_threads": torch.get_num_threads(),
                "classifier_train_s": round(train_s, 2),
                "classifier_test_accuracy": test_accuracy,
                "reference_s": round(reference_s, 2),
                "score_reuse_s": round(reuse_s, 2),
                "score_recompute_s": round(recompute_s, 2),
                "extract_generated_s": round(extract_s, 2),
                "fid": scores["fid"],
                "kid_mean": scores["kid_mean"],
                "precision": scores["precision"],
                "recall": scores["recall"],
            }
        )
    )


if __name__ == "__main__":
    main()
