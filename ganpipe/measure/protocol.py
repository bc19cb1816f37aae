"""The benchmark protocol: which split does what, and the counts, recorded in every metrics/scores.json.

Plain data (no torch), so that the results page can print it and the score stage can record it.

- The GAN trains on the processed train split, and the scoring reference is drawn from the same split.
- No split selects a checkpoint: the score is of the final generator weights (the EMA weights where
  the model has `ema_decay`). FID during training (train.eval_every) is logged, never used to pick.
- The val split is the one the GAN never sees: `heldout_fid` compares the generated images with it.
  Not the test split: PathMNIST's test set comes from another clinical centre (CRC-VAL-HE-7K against
  the training pool NCT-CRC-HE-100K, of which val is a random 9:1 split), so a test FID would mix
  memorisation with a shift of centre. The domain classifier, the instrument, keeps the epoch with
  the best val accuracy, and the utility stage selects on val too (Classification Accuracy Score):
  neither is the GAN.
- N: every generated image (sample.num_samples) against min(score.num_real, images in the split) real
  ones, the same rule for the train reference and the held-out one; FID is biased by N, so each N is
  recorded beside the numbers.
"""

from __future__ import annotations

from typing import Any

TRAIN_SPLIT = "train"  # trains the GAN; the scoring reference is drawn from it
SELECTION_SPLIT = "none"  # no split selects a checkpoint
HELDOUT_SPLIT = "val"  # never seen by the GAN: the held-out FID's reference
CHECKPOINT = (
    "the final generator weights (their EMA, with batch-norm statistics of its own, where the run's "
    "ema_decay is set: models.<m> or its recipe)"
)
N_RULE = "all sample.num_samples generated images against min(score.num_real, the split's images) real"
HELDOUT_REASON = (
    "val, not test: PathMNIST's test split comes from another clinical centre (CRC-VAL-HE-7K, against "
    "NCT-CRC-HE-100K for train and val), so a test FID would mix a change of centre into it"
)


def protocol_record(params: dict[str, Any]) -> dict[str, Any]:
    """The protocol's flat keys for scores.json (DVC metrics: plain values, stable keys)."""
    return {
        "protocol_train_split": TRAIN_SPLIT,
        "protocol_reference_split": TRAIN_SPLIT,
        "protocol_selection_split": SELECTION_SPLIT,
        "protocol_checkpoint": CHECKPOINT,
        "protocol_heldout_split": HELDOUT_SPLIT,
        "protocol_n_rule": N_RULE,
        "protocol_seed": params["seed"],
        # The budget as set: training stops at train.max_steps critic steps, else after train.epochs;
        # the steps it took are train.json's `steps`.
        "protocol_max_steps": params["train"]["max_steps"],
        "protocol_epochs": params["train"]["epochs"],
    }


def protocol_lines() -> list[str]:
    """The protocol as Markdown bullets, for the results page."""
    return [
        f"- The GAN trains on the `{TRAIN_SPLIT}` split; the domain FID's reference is drawn from it "
        "(stratified, the dataset seed).",
        f"- No split selects a checkpoint (`{SELECTION_SPLIT}`): scored are {CHECKPOINT}.",
        f"- Held out: the `{HELDOUT_SPLIT}` split, which the GAN never sees; `heldout_fid` compares the "
        f"generated images with it. {HELDOUT_REASON[0].upper()}{HELDOUT_REASON[1:]}.",
        f"- N: {N_RULE} (`num_generated`; scores.json records both N).",
        "- Extractors and resizer: the domain classifier (the classifier stage, trained on the dataset) "
        "at the data's own size; scores.json's `resizer` and `extractors` name them.",
        "- Seed and budget: scores.json's `protocol_seed`, `protocol_max_steps` and `protocol_epochs`; "
        "the steps taken are the `steps` column.",
    ]
