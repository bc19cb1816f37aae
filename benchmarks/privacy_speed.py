"""How long the privacy stage takes for 10,000 generated vs 10,000 real training images on the CPU.

The stage's three parts, timed one by one with the stage's own functions and the default params
(privacy.num_heldout 2,000 held-out images plus 2,000 for the null; PCA to 64 dims, 10 cells):
1. domain features of every image (10,000 train + 2,000 held-out + 2,000 null + 10,000 generated);
2. the measures (DCR, NNDR, C_T, α-precision, β-recall, authenticity, black-box AUC) for the
   generated samples and for the null, on those 128-d features;
3. the LOGAN critic scores of the train, held-out and null images (the default 64-wide critic).

Images: the 10,000 MNIST test digits (../shared/data/mnist_t10k.npz) as the training set; held-out,
null and "generated" images are those digits shifted by one pixel plus noise (MNIST has no other real
images here). The timing does not depend on what the images show, so the printed privacy numbers
are not findings. The classifier is trained for one epoch and the critic is left at its initial
weights (setup, not timed): the cost of a forward pass does not depend on the weights.

    python benchmarks/privacy_speed.py

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist_t10k.npz"
N = 10_000
N_HELDOUT = 2_000


def near_copies(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = np.roll(images, 1, axis=-1).astype(np.float32) + rng.normal(0, 8, images.shape)
    return noisy.clip(0, 255).round().astype(np.uint8)


def main() -> None:
    from ganpipe.config import load_params
    from ganpipe.gan.models import build_models
    from ganpipe.measure.audit import critic_scores
    from ganpipe.measure.classifier import save_classifier, train_classifier
    from ganpipe.measure.features import EXTRACTORS, create_extractor, extract_features
    from ganpipe.measure.privacy import PrivacyReference

    os.environ.setdefault("CI", "1")  # no progress bars in the figures
    params = load_params(REPO / "params.yaml")
    cfg = params["privacy"]
    with np.load(MNIST_NPZ) as data:
        images = np.concatenate([data[f"{s}_images"] for s in ("train", "val", "test")])[:, None]
        labels = np.concatenate([data[f"{s}_labels"] for s in ("train", "val", "test")]).reshape(-1)
    labels = labels.astype(np.int64)
    rng = np.random.default_rng(0)
    sets = {
        "train": images,
        "heldout": near_copies(images[:N_HELDOUT], rng),
        "null": near_copies(images[N_HELDOUT : 2 * N_HELDOUT], rng),
        "generated": near_copies(images[rng.permutation(N)], rng),
    }
    cpu = torch.device("cpu")
    print(f"torch threads: {torch.get_num_threads()}; sizes: { ({k: len(v) for k, v in sets.items()}) }")
    with tempfile.TemporaryDirectory() as workdir:
        model = train_classifier(images, labels, 10, epochs=1, batch_size=128, lr=1e-3, seed=0).model
        weights = Path(workdir) / "classifier.pt"
        save_classifier(weights, model)
        start = time.perf_counter()
        module = create_extractor(EXTRACTORS["domain"], weights, cpu)
        everything = np.concatenate(list(sets.values()))
        rows = extract_features(module, everything, params["score"]["batch_size"], cpu)["features"].numpy()
        extract_s = time.perf_counter() - start
    bounds = np.cumsum([0] + [len(v) for v in sets.values()])
    feats = {name: rows[bounds[i] : bounds[i + 1]] for i, name in enumerate(sets)}

    start = time.perf_counter()
    reference = PrivacyReference(
        feats["train"], feats["heldout"], cfg["pca_dims"], cfg["ct_cells"], cfg["ct_min_cell"], 0
    )
    reference_s = time.perf_counter() - start
    generated, _ = reference.measure(feats["generated"])
    null, _ = reference.measure(feats["null"])
    measures_s = time.perf_counter() - start

    _, critic = build_models(params["models"]["dcgan"], params["arch"], 1, 28)
    critic.eval()
    start = time.perf_counter()
    for name in ("train", "heldout", "null"):
        critic_scores(critic, sets[name], labels[: len(sets[name])], cpu)
    critic_s = time.perf_counter() - start
    total_s = extract_s + measures_s + critic_s
    print(f"domain features of {len(everything)} images:   {extract_s:.1f} s")
    print(f"measures, generated and null:       {measures_s:.1f} s (real side alone {reference_s:.1f} s)")
    print(f"LOGAN critic scores of {N + 2 * N_HELDOUT} images: {critic_s:.1f} s")
    print(f"privacy stage total:                {total_s:.1f} s")
    print(
        json.dumps(
            {
                "benchmark": "privacy_speed",
                "num_train": N,
                "num_generated": N,
                "num_heldout": N_HELDOUT,
                "num_null": N_HELDOUT,
                "torch_threads": torch.get_num_threads(),
                "extract_s": round(extract_s, 2),
                "reference_s": round(reference_s, 2),
                "measures_s": round(measures_s, 2),
                "critic_s": round(critic_s, 2),
                "total_s": round(total_s, 2),
                "dcr_share": generated["dcr_share"],
                "null_dcr_share": null["dcr_share"],
            }
        )
    )


if __name__ == "__main__":
    main()
