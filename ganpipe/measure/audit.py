"""The privacy stage: the measures of ganpipe.measure.privacy on every feature space of
score.extractors, for the generated samples and for their null, written to metrics/privacy.json with
the protocol, the verdict and the figures (copy gallery, DCR histograms).

The sets:
- train: a stratified subset of data/processed/train, the images the GAN trained on (data.limit is
  applied by preprocess already);
- held-out: the val split, which the GAN never sees (not test: PathMNIST's test split comes from
  another clinical centre, and would make every held-out distance longer than a sample's);
- null: other val images, disjoint from the held-out ones, treated as if they were samples.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from ganpipe.gan.models import critic_from_checkpoint
from ganpipe.measure.classifier import DomainClassifier
from ganpipe.measure.features import create_extractor, extract_features
from ganpipe.measure.privacy import PrivacyReference, Thresholds, critic_auc, flags
from ganpipe.measure.score import active_extractors, load_samples
from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.images import make_grid
from ganpipe.pipeline.io import load_torch, save_figure, write_json, write_text
from ganpipe.pipeline.processed import DATASET_SEED, read_info, read_split, stratified_subset
from ganpipe.pipeline.stage import progress_disabled
from ganpipe.pipeline.streams import numpy_rng

CRITIC_BATCH_SIZE = 500
HISTOGRAM_BINS = 40
GALLERY_COLUMNS = 8
GALLERY_PADDING = 4  # room between pairs for the distance labels
SETS = ("train", "heldout", "null", "generated")


def audit_subsets(
    train_labels: np.ndarray, val_labels: np.ndarray, num_train: int, num_heldout: int
) -> dict[str, np.ndarray]:
    """Indices of the train subset (into train) and of the held-out and null sets (into val): fixed
    per dataset (streams privacy.train / privacy.heldout, the dataset seed), stratified by class,
    held-out and null disjoint and of one size, at most half of val each."""
    train = stratified_subset(train_labels, num_train, numpy_rng(DATASET_SEED, "privacy.train"))
    count = min(num_heldout, len(val_labels) // 2)
    rng = numpy_rng(DATASET_SEED, "privacy.heldout")
    heldout = stratified_subset(val_labels, count, rng)
    rest = np.setdiff1d(np.arange(len(val_labels)), heldout)
    null = rest[stratified_subset(val_labels[rest], count, rng)]
    return {"train": train, "heldout": heldout, "null": null}


def thresholds(params: dict[str, Any]) -> Thresholds:
    cfg = params["privacy"]
    return Thresholds(
        cfg["max_dcr_share"], cfg["min_ct"], cfg["max_authenticity_drop"], cfg["max_blackbox_auc"]
    )


@torch.no_grad()
def critic_scores(
    critic: torch.nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> np.ndarray:
    """The critic's raw score of each uint8 image, on the [-1, 1] scale it trained on; a conditional
    critic scores each image with its true label."""
    conditional = critic.config.get("conditional", "none") != "none"
    out = []
    for start in range(0, len(images), CRITIC_BATCH_SIZE):
        x = DomainClassifier.normalize(torch.from_numpy(images[start : start + CRITIC_BATCH_SIZE])).to(device)
        y = torch.from_numpy(labels[start : start + CRITIC_BATCH_SIZE]).to(device) if conditional else None
        scores, _ = critic(x, y)  # (score, aux logits or None)
        out.append(scores.float().flatten().cpu())
    return torch.cat(out).numpy()


def _histogram_tsv(generated: np.ndarray, heldout: np.ndarray) -> tuple[str, np.ndarray]:
    edges = np.histogram_bin_edges(np.r_[generated, heldout], bins=HISTOGRAM_BINS)
    gen_hist = np.histogram(generated, edges)[0] / len(generated)
    held_hist = np.histogram(heldout, edges)[0] / len(heldout)
    centers = (edges[:-1] + edges[1:]) / 2
    rows = ["dcr\tgenerated\theldout"]
    rows += [f"{c:.6g}\t{g:.6f}\t{h:.6f}" for c, g, h in zip(centers, gen_hist, held_hist, strict=True)]
    return "\n".join(rows) + "\n", edges


def plot_dcr_histogram(
    generated: np.ndarray, heldout: np.ndarray, null: np.ndarray, threshold: float, space: str
) -> None:
    """DCR of the generated samples, the held-out images and the null set, with the 5th-percentile line."""
    tsv, edges = _histogram_tsv(generated, heldout)
    write_text(paths.DCR_HISTOGRAM_TSV, tsv)
    figure = Figure(figsize=(7, 4))
    ax = figure.subplots()
    for values, label, color in (
        (generated, f"generated (N={len(generated)})", "tab:red"),
        (heldout, f"held-out real (N={len(heldout)})", "tab:blue"),
        (null, f"null: other held-out real (N={len(null)})", "tab:gray"),
    ):
        ax.hist(
            values,
            edges,
            weights=np.full(len(values), 1 / len(values)),
            histtype="step",
            label=label,
            color=color,
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"held-out 5th percentile {threshold:.3g}")
    ax.set_xlabel(f"distance to the nearest training image ({space} features)")
    ax.set_ylabel("fraction")
    ax.set_title("DCR: generated vs held-out (more mass left of the line: closer to training images)")
    ax.legend(fontsize=8)
    save_figure(paths.DCR_HISTOGRAM_PNG, figure)


def plot_copy_gallery(
    samples: np.ndarray, train: np.ndarray, dcr: np.ndarray, nearest: np.ndarray, threshold: float, count: int
) -> None:
    """The `count` samples closest to a training image, each above that image, with the distance.

    One tiled image (make_grid) with text labels: a grid of axes per image takes seconds to lay out.
    """
    order = np.argsort(dcr, kind="stable")[:count]
    columns = min(GALLERY_COLUMNS, len(order))
    order = np.pad(order, (0, -len(order) % columns), constant_values=-1)  # -1: an empty slot
    blank = np.full_like(samples[:1], 255)
    tiles = []
    for block in order.reshape(-1, columns):  # a row of samples, then the row of their training images
        tiles += [samples[i : i + 1] if i >= 0 else blank for i in block]
        tiles += [train[nearest[i]][None] if i >= 0 else blank for i in block]
    grid = make_grid(np.concatenate(tiles), nrow=columns, padding=GALLERY_PADDING)
    side, step = samples.shape[-1], samples.shape[-1] + GALLERY_PADDING
    figure = Figure(figsize=(1.1 * columns, 1.3 * len(tiles) / columns))
    ax = figure.subplots()
    ax.imshow(grid[:, :, 0] if grid.shape[2] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    for slot, index in enumerate(order):
        if index < 0:
            continue
        block, col = divmod(slot, columns)
        mark = " <p5" if dcr[index] < threshold else ""
        x, y = GALLERY_PADDING + col * step + side / 2, GALLERY_PADDING + 2 * block * step
        ax.text(x, y - 0.5, f"{dcr[index]:.3g}{mark}", ha="center", va="bottom", fontsize=6, color="tab:red")
    ax.set_title(
        "Generated images closest to a training image (each above its nearest training image), with the\n"
        f"domain-feature distance; held-out 5th percentile of the same distance: {threshold:.3g}",
        fontsize=8,
    )
    save_figure(paths.COPY_GALLERY, figure)


def audit(params: dict[str, Any]) -> dict[str, Any]:
    """The privacy stage: metrics/privacy.json (flat keys per feature space with its prefix, the
    null's with `null_`, the LOGAN AUC, the protocol and the verdict) and plots/privacy/."""
    cfg = params["privacy"]
    info = read_info()
    generated = load_samples()
    if generated.shape[1:] != (info["channels"], info["size"], info["size"]):
        raise run_first(paths.SAMPLES, "sample", f"holds images of shape {generated.shape[1:]}")
    train_images, train_labels = read_split(paths.PROCESSED_TRAIN)
    val_images, val_labels = read_split(paths.PROCESSED_VAL)
    subsets = audit_subsets(train_labels, val_labels, cfg["num_train"], cfg["num_heldout"])
    if len(subsets["heldout"]) < cfg["ct_min_cell"]:
        raise GanpipeError(
            f"{paths.PROCESSED_VAL}: {len(val_labels)} val images leave {len(subsets['heldout'])} held-out "
            f"ones, fewer than privacy.ct_min_cell = {cfg['ct_min_cell']}; lower privacy.ct_min_cell or "
            "raise data.limit"
        )
    images = {
        "train": train_images[subsets["train"]],
        "heldout": val_images[subsets["heldout"]],
        "null": val_images[subsets["null"]],
        "generated": generated,
    }
    labels = {name: (train_labels if name == "train" else val_labels)[subsets[name]] for name in subsets}
    device = resolve_device()
    limits = thresholds(params)
    out: dict[str, Any] = {}
    reasons: list[str] = []
    pca_dims: dict[str, int] = {}
    cells: dict[str, int] = {}
    everything = np.concatenate([images[name] for name in SETS])
    bounds = np.cumsum([0] + [len(images[name]) for name in SETS])
    for extractor, weights in tqdm(active_extractors(params), desc="privacy", disable=progress_disabled()):
        module = create_extractor(extractor, weights, device)
        features = extract_features(module, everything, params["score"]["batch_size"], device)
        rows = features[extractor.feature_layer].numpy()
        feats = {name: rows[bounds[i] : bounds[i + 1]] for i, name in enumerate(SETS)}
        reference = PrivacyReference(
            feats["train"],
            feats["heldout"],
            cfg["pca_dims"],
            cfg["ct_cells"],
            cfg["ct_min_cell"],
            DATASET_SEED,
        )
        measured, to_train = reference.measure(feats["generated"])
        null, null_to_train = reference.measure(feats["null"])
        prefix = extractor.prefix
        out[f"{prefix}dcr_threshold"] = reference.dcr_threshold
        out.update({prefix + key: value for key, value in measured.items()})
        out.update({f"{prefix}null_{key}": value for key, value in null.items()})
        reasons += flags(extractor.key, measured, null, limits)
        pca_dims[extractor.key], cells[extractor.key] = reference.pca_dims, reference.cells
        if extractor.key == "domain":
            dcr, nearest = to_train.distances[:, 0], to_train.indices[:, 0]
            threshold = reference.dcr_threshold
            plot_copy_gallery(generated, images["train"], dcr, nearest, threshold, cfg["gallery"])
            plot_dcr_histogram(
                dcr, reference.heldout_dcr, null_to_train.distances[:, 0], threshold, extractor.key
            )

    critic = critic_from_checkpoint(load_torch(paths.CRITIC)).to(device)
    critic_on = {name: critic_scores(critic, images[name], labels[name], device) for name in subsets}
    out["logan_auc"] = critic_auc(critic_on["train"], critic_on["heldout"])
    # The null: the critic never saw either set, so telling "null" from held-out is chance.
    out["null_logan_auc"] = critic_auc(critic_on["null"], critic_on["heldout"])
    out["flagged"] = bool(reasons)
    out["protocol"] = {
        "num_train": len(subsets["train"]),
        "num_heldout": len(subsets["heldout"]),
        "num_null": len(subsets["null"]),
        "num_generated": len(generated),
        "train_split": f"{paths.PROCESSED_TRAIN} (what the GAN trained on; data.limit "
        f"= {params['data']['limit']})",
        "heldout_split": f"{paths.PROCESSED_VAL} (never seen by the GAN; test is not used: PathMNIST's "
        "comes from another clinical centre)",
        "null": "other val images, disjoint from the held-out ones, measured as if they were samples",
        "subsets": f"stratified, streams privacy.train and privacy.heldout, seed {DATASET_SEED}",
        "feature_spaces": [extractor.key for extractor, _ in active_extractors(params)],
        "distance": "Euclidean on the extractor's features (C_T: in the PCA space)",
        "pca_dims": pca_dims,
        "ct_cells": cells,
        "ct_min_cell": cfg["ct_min_cell"],
        "dcr_share_percentile": 5,
        "logan": "critic score, members = train subset, non-members = held-out",
    }
    out["verdict"] = {"flagged": bool(reasons), "reasons": reasons, "thresholds": asdict(limits)}
    write_json(paths.PRIVACY_METRICS, out)
    return out
