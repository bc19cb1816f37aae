"""How long the privacy audit takes for 10,000 generated images against a 90,000-image training split
(PathMNIST's size and shape: 3 x 28 x 28) on the CPU.

The audit's parts, timed one by one with the stage's own code and the default params (privacy.*:
2,000 held-out images plus 2,000 for the null, 10,000 members, shifts up to 2 px and both flips):
1. the real side (`AuditReference`): domain features of the 90,000 training and 4,000 val images,
   the feature-space reference (DCR threshold, C_T's PCA and cells), the null's measures, and the
   pixel copy search with the held-out and null copy distances;
2. the 10,000 samples (`AuditReference.measure`): their features, every feature-space measure
   against the whole training split, and the copy search;
3. the LOGAN critic scores of the members, held-out and null images (the default 64-wide critic).

Images: PathMNIST-shaped synthetic textures (tests/planted.py; PathMNIST itself is not on this
machine), the "generated" ones unseen textures with 20% copies of training images. Timing does not
depend on what the images show, so the printed privacy numbers are not findings. The classifier is
trained for one epoch on 10,000 images and the critic is left at its initial weights (setup, not
timed): a forward pass costs the same whatever the weights.

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
sys.path.insert(0, str(REPO / "tests"))
N_TRAIN, N_VAL, N_GENERATED = 90_000, 4_000, 10_000
COPIED = 0.2


def main() -> None:
    from planted import textures

    from ganpipe.config import load_params
    from ganpipe.gan.models import build_models
    from ganpipe.measure.audit import AuditReference, critic_scores, verdict
    from ganpipe.measure.classifier import save_classifier, train_classifier
    from ganpipe.pipeline import paths

    os.environ.setdefault("CI", "1")  # no progress bars in the figures
    params = load_params(REPO / "params.yaml")
    images, labels = textures(N_TRAIN + N_VAL + N_GENERATED, seed=0)
    train = images[:N_TRAIN], labels[:N_TRAIN]
    val = images[N_TRAIN : N_TRAIN + N_VAL], labels[N_TRAIN : N_TRAIN + N_VAL]
    generated = images[N_TRAIN + N_VAL :].copy()
    rng = np.random.default_rng(0)
    copied = round(COPIED * N_GENERATED)
    generated[:copied] = train[0][rng.choice(N_TRAIN, copied, replace=False)]
    cpu = torch.device("cpu")
    print(f"torch threads: {torch.get_num_threads()}; train {N_TRAIN}, val {N_VAL}, generated {N_GENERATED}")
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        model = train_classifier(
            train[0][:10_000], train[1][:10_000], 9, epochs=1, batch_size=256, lr=1e-3, seed=0
        )
        save_classifier(paths.CLASSIFIER_WEIGHTS, model.model)
        start, cpu_start = time.perf_counter(), time.process_time()
        reference = AuditReference(params, train, val, cpu)
        reference_s = time.perf_counter() - start
        start = time.perf_counter()
        measured, checks = reference.measure(generated)
        measure_s = time.perf_counter() - start

    _, critic = build_models(params["models"]["dcgan"], params["arch"], 3, 28)
    critic.eval()
    start = time.perf_counter()
    members = reference.subsets["train"]
    for name, sample in (
        ("train", train[0][members]),
        ("heldout", reference.heldout),
        ("null", reference.null),
    ):
        critic_scores(critic, sample, reference.labels[name], cpu)
    critic_s = time.perf_counter() - start
    total_s = reference_s + measure_s + critic_s
    # CPU seconds of this process over the three parts: on a machine shared with other jobs the wall
    # time depends on their load, this much less (at most 2 threads: wall >= cpu / 2).
    cpu_s = time.process_time() - cpu_start
    result = verdict(checks, reference.rule)
    scored = len(members) + 2 * len(reference.heldout)
    print(f"real side (features, references, copy search, null): {reference_s:.1f} s")
    print(f"{N_GENERATED} samples (features, measures, copy search): {measure_s:.1f} s")
    print(f"LOGAN critic scores of {scored} images: {critic_s:.1f} s")
    print(f"privacy audit total: {total_s:.1f} s wall, {cpu_s:.1f} s CPU")
    print(f"flagged: {result['flagged']} ({'; '.join(result['reasons'])})")
    print(
        json.dumps(
            {
                "benchmark": "privacy_speed",
                "num_train": N_TRAIN,
                "num_generated": N_GENERATED,
                "num_heldout": len(reference.heldout),
                "num_members": len(members),
                "copied_share": COPIED,
                "torch_threads": torch.get_num_threads(),
                "reference_s": round(reference_s, 2),
                "measure_s": round(measure_s, 2),
                "critic_s": round(critic_s, 2),
                "total_s": round(total_s, 2),
                "cpu_s": round(cpu_s, 2),
                "copy_share": measured["copy_share"],
                "null_copy_share": measured["null_copy_share"],
                "flagged": result["flagged"],
            }
        )
    )


if __name__ == "__main__":
    main()
