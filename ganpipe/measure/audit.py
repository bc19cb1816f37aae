"""The privacy stage: the measures of ganpipe.measure.privacy on every feature space of
score.extractors, and the pixel copy search of ganpipe.measure.copies, for the generated samples and
for their null, written to metrics/privacy.json with the protocol, the verdict and the figures (copy
gallery, DCR histograms).

The sets:
- train: every image of data/processed/train, the images the GAN trained on (data.limit is applied
  by preprocess already); its stratified `privacy.num_train` subset, the members, serves where a
  statistic compares balanced sets (the membership AUCs, α-precision and β-recall, C_T's cells);
- held-out: the val split, which the GAN never sees (not test: PathMNIST's test split comes from
  another clinical centre, and would make every held-out distance longer than a sample's);
- null: other val images, disjoint from the held-out ones, treated as if they were samples.

The verdict: each statistic is checked against its null's value, with a margin from the null's own
spread (privacy.flag_z standard errors of the difference, never less than the floors).
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
from ganpipe.measure.copies import CopySearch
from ganpipe.measure.features import create_extractor, extract_features
from ganpipe.measure.privacy import (
    HELDOUT_PERCENTILE,
    Check,
    FlagRule,
    PrivacyReference,
    auc_check,
    critic_auc,
    ct_check,
    share_check,
)
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


def flag_rule(params: dict[str, Any]) -> FlagRule:
    cfg = params["privacy"]
    return FlagRule(cfg["flag_z"], cfg["min_share_margin"], cfg["min_auc_margin"], cfg["min_ct_margin"])


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


class AuditReference:
    """The real side of the audit, built once: the training split, the held-out and null sets, their
    features and PrivacyReference in every feature space, and the pixel copy search with the held-out
    copy distances. `measure` then audits any number of sample sets against it."""

    def __init__(
        self,
        params: dict[str, Any],
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        device: torch.device,
    ) -> None:
        cfg = params["privacy"]
        self.params, self.device, self.rule = params, device, flag_rule(params)
        (self.train, train_labels), (val_images, val_labels) = train, val
        self.subsets = audit_subsets(train_labels, val_labels, cfg["num_train"], cfg["num_heldout"])
        if len(self.subsets["heldout"]) < cfg["ct_min_cell"]:
            raise GanpipeError(
                f"{paths.PROCESSED_VAL}: {len(val_labels)} val images leave {len(self.subsets['heldout'])} "
                f"held-out ones, fewer than privacy.ct_min_cell = {cfg['ct_min_cell']}; lower "
                "privacy.ct_min_cell or raise data.limit"
            )
        self.heldout, self.null = val_images[self.subsets["heldout"]], val_images[self.subsets["null"]]
        self.labels = {
            "train": train_labels[self.subsets["train"]],
            "heldout": val_labels[self.subsets["heldout"]],
            "null": val_labels[self.subsets["null"]],
        }
        self.extractors = []
        self.references: dict[str, PrivacyReference] = {}
        self.null_measures: dict[str, dict[str, Any]] = {}
        self.null_dcr: dict[str, np.ndarray] = {}
        for extractor, weights in tqdm(
            active_extractors(params), desc="privacy: real features", disable=progress_disabled()
        ):
            module = create_extractor(extractor, weights, device)
            feats = self._features(extractor, module, (self.train, self.heldout, self.null))
            reference = PrivacyReference(
                feats[0],
                feats[1],
                self.subsets["train"],
                cfg["pca_dims"],
                cfg["ct_cells"],
                cfg["ct_min_cell"],
                DATASET_SEED,
            )
            self.null_measures[extractor.key], null_to_train = reference.measure(feats[2])
            self.null_dcr[extractor.key] = null_to_train.distances[:, 0]
            self.references[extractor.key] = reference
            self.extractors.append((extractor, module))
        self.copies = CopySearch(self.train, cfg["copy_shift"], tuple(cfg["copy_flips"]))
        heldout_copy = self.copies.nearest(self.heldout).distances
        self.copy_threshold = float(np.percentile(heldout_copy, HELDOUT_PERCENTILE))
        self.null_copy_share = float(np.mean(self.copies.nearest(self.null).distances < self.copy_threshold))

    def _features(
        self, extractor: Any, module: torch.nn.Module, sets: tuple[np.ndarray, ...]
    ) -> list[np.ndarray]:
        everything = np.concatenate(sets)
        rows = extract_features(module, everything, self.params["score"]["batch_size"], self.device)
        rows = rows[extractor.feature_layer].numpy()
        bounds = np.cumsum([0] + [len(images) for images in sets])
        return [rows[bounds[i] : bounds[i + 1]] for i in range(len(sets))]

    def measure(self, samples: np.ndarray, figures: bool = False) -> tuple[dict[str, Any], list[Check]]:
        """Every measure of `samples` in every feature space and in pixels, with its null (flat keys,
        each space's prefix, the null's with `null_`), and the checks of the verdict. `figures`: also
        draw the copy gallery and the DCR histograms of the domain space."""
        n, n_null = len(samples), len(self.null)
        n_members, n_heldout = len(self.subsets["train"]), len(self.heldout)
        out: dict[str, Any] = {}
        checks: list[Check] = []
        for extractor, module in self.extractors:
            reference, null = self.references[extractor.key], self.null_measures[extractor.key]
            measured, to_train = reference.measure(self._features(extractor, module, (samples,))[0])
            prefix, space = extractor.prefix, extractor.key
            out[f"{prefix}dcr_threshold"] = reference.dcr_threshold
            out.update({prefix + key: value for key, value in measured.items()})
            out.update({f"{prefix}null_{key}": value for key, value in null.items()})
            rule = self.rule
            # Copying raises the DCR share and lowers authenticity.
            for key, direction in (("dcr_share", +1), ("authenticity", -1)):
                checks.append(
                    share_check(f"{space} {key}", measured[key], n, null[key], n_null, direction, rule)
                )
            checks.append(
                auc_check(
                    f"{space} blackbox_auc",
                    measured["blackbox_auc"],
                    null["blackbox_auc"],
                    n_members,
                    n_heldout,
                    rule,
                )
            )
            ct = ct_check(f"{space} ct", measured, null, rule)
            checks += [ct] if ct is not None else []
            if figures and space == "domain":
                dcr, nearest = to_train.distances[:, 0], to_train.indices[:, 0]
                threshold = reference.dcr_threshold
                gallery = self.params["privacy"]["gallery"]
                plot_copy_gallery(samples, self.train, dcr, nearest, threshold, gallery)
                plot_dcr_histogram(dcr, reference.heldout_dcr, self.null_dcr[space], threshold, space)
        copy = self.copies.nearest(samples).distances
        out["copy_threshold"] = self.copy_threshold
        out["copy_share"] = float(np.mean(copy < self.copy_threshold))
        out["copy_distance_p5"] = float(np.percentile(copy, 5))
        out["null_copy_share"] = self.null_copy_share
        checks.append(
            share_check("pixel copy_share", out["copy_share"], n, self.null_copy_share, n_null, +1, self.rule)
        )
        return out, checks

    def logan(self) -> dict[str, Any]:
        """The LOGAN white-box AUC of the run's critic (members vs held-out) and its null (the null set vs
        held-out: the critic saw neither). Not in the verdict: it is the risk of releasing the critic,
        which the export does not."""
        critic = critic_from_checkpoint(load_torch(paths.CRITIC)).to(self.device)
        images = {"train": self.train[self.subsets["train"]], "heldout": self.heldout, "null": self.null}
        scores = {
            name: critic_scores(critic, images[name], self.labels[name], self.device) for name in images
        }
        return {
            "logan_auc": critic_auc(scores["train"], scores["heldout"]),
            "null_logan_auc": critic_auc(scores["null"], scores["heldout"]),
        }

    def protocol(self, num_generated: int) -> dict[str, Any]:
        cfg = self.params["privacy"]
        return {
            "num_train": len(self.train),
            "num_members": len(self.subsets["train"]),
            "num_heldout": len(self.heldout),
            "num_null": len(self.null),
            "num_generated": num_generated,
            "train_split": f"{paths.PROCESSED_TRAIN} (what the GAN trained on; data.limit "
            f"= {self.params['data']['limit']}), searched whole",
            "members": "stratified subset of train (stream privacy.train, seed "
            f"{DATASET_SEED}) for the membership AUCs, alpha-precision, beta-recall and C_T's cells",
            "heldout_split": f"{paths.PROCESSED_VAL} (never seen by the GAN; test is not used: PathMNIST's "
            "comes from another clinical centre)",
            "null": "other val images, disjoint from the held-out ones, measured as if they were samples",
            "feature_spaces": [extractor.key for extractor, _ in self.extractors],
            "distance": "Euclidean on the extractor's features (C_T: in the PCA space)",
            "copy_search": f"pixels, shifts up to {cfg['copy_shift']} px, flips {list(cfg['copy_flips'])}, "
            "any brightness or contrast (docs/privacy.md)",
            "pca_dims": {key: reference.pca_dims for key, reference in self.references.items()},
            "ct_cells": {key: reference.cells for key, reference in self.references.items()},
            "ct_min_cell": cfg["ct_min_cell"],
            "dcr_share_percentile": HELDOUT_PERCENTILE,
            "logan": "critic score, members vs held-out",
        }


def verdict(checks: list[Check], rule: FlagRule) -> dict[str, Any]:
    """Flagged when any check is: the reasons, and every check's value, null and margin."""
    reasons = [check.reason() for check in checks if check.flagged]
    return {
        "flagged": bool(reasons),
        "reasons": reasons,
        "checks": [{**asdict(check), "flagged": check.flagged} for check in checks],
        "rule": asdict(rule),
    }


def audit(params: dict[str, Any]) -> dict[str, Any]:
    """The privacy stage: metrics/privacy.json (flat keys per feature space with its prefix, the
    null's with `null_`, the pixel copy search, the LOGAN AUC, the protocol and the verdict) and
    plots/privacy/."""
    info = read_info()
    generated = load_samples()
    if generated.shape[1:] != (info["channels"], info["size"], info["size"]):
        raise run_first(paths.SAMPLES, "sample", f"holds images of shape {generated.shape[1:]}")
    reference = AuditReference(
        params, read_split(paths.PROCESSED_TRAIN), read_split(paths.PROCESSED_VAL), resolve_device()
    )
    out, checks = reference.measure(generated, figures=True)
    out.update(reference.logan())
    out["verdict"] = verdict(checks, reference.rule)
    out["flagged"] = out["verdict"]["flagged"]
    out["protocol"] = reference.protocol(len(generated))
    write_json(paths.PRIVACY_METRICS, out)
    return out
