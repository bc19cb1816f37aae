"""Privacy of the generated samples: do they copy the training images, and do they leak who was in it?

Every measure is computed twice: for the generated samples, and for the null, real held-out images
treated as if they were samples (a generator that never saw the training images). A number means
something only against its null (Stein et al. 2023: no single metric separates memorisation from
underfitting). The measures, on feature vectors (rows):

- DCR, distance to closest record: each sample's distance to its nearest training image. Reported as
  quantiles, and as the share of samples closer than the held-out 5th percentile (held-out images'
  own DCRs), which is 0.05 under the null. NNDR: nearest over second-nearest training distance.
- C_T (Meehan, Chaudhuri & Dasgupta 2020, as layer6ai-labs/dgm-eval `ct.py`): PCA to 64 dims fitted on
  train, k-means cells on train; per cell a Mann-Whitney U test of sample-to-train against
  held-out-to-train nearest distances, as a Z score; C_T is the mean Z weighted by the held-out share
  of each cell. Strongly negative: copying; strongly positive: underfitting; near 0 under the null.
- α-precision, β-recall (Alaa et al. 2022, their reference formulas on the raw features, without the
  one-class embedding) and authenticity: the share of samples farther from their nearest real image j
  than j is from its own nearest real neighbour (dgm-eval `authpct.py`'s indexing; the reference code
  indexes j's distances by the sample's index instead).
- GAN-Leaks full black-box AUC (Chen et al. 2020): members (train) vs non-members (held-out), scored
  by minus the distance to the nearest sample. 0.5: nothing leaks.

The LOGAN white-box AUC (Hayes et al. 2019) needs the critic, not features: `critic_auc`.

Nearest neighbours are exact (float32 search, float64 distances), in row chunks of bounded size
(`CHUNK_ELEMENTS`), so 100k x 10k runs in a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

# Distance-matrix elements per chunk: 2^24 float32 = 64 MiB, whatever the sizes of the two sets.
CHUNK_ELEMENTS = 1 << 24
HELDOUT_PERCENTILE = 5.0  # the DCR share's threshold: the held-out DCRs' 5th percentile (SDMetrics)
ALPHA_STEPS = 30  # Alaa et al.'s reference code evaluates the α and β curves at 30 levels


@dataclass(frozen=True)
class Neighbours:
    """The k nearest reference rows of each query row: distances (Nq, k), ascending, and indices."""

    distances: np.ndarray
    indices: np.ndarray


def _exact(queries: np.ndarray, reference: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Euclidean distances in float64 of each query row to its chosen reference rows (Nq, k), in
    chunks of at most CHUNK_ELEMENTS differences."""
    out = np.empty(indices.shape)
    rows = max(1, CHUNK_ELEMENTS // (indices.shape[1] * queries.shape[1]))
    for start in range(0, len(queries), rows):
        block = np.asarray(queries[start : start + rows], dtype=np.float64)[:, None, :]
        difference = block - np.asarray(reference, dtype=np.float64)[indices[start : start + rows]]
        out[start : start + rows] = np.sqrt(np.einsum("ijk,ijk->ij", difference, difference))
    return out


def nearest_neighbours(
    queries: np.ndarray, reference: np.ndarray, k: int = 1, exclude_self: bool = False
) -> Neighbours:
    """Exact Euclidean k nearest neighbours of every query row among the reference rows.

    `exclude_self`: the queries are the reference itself, and a row is not its own neighbour (its
    duplicates still are). The search ranks |r|^2 - 2 q.r in float32 (one sgemm per chunk of at most
    CHUNK_ELEMENTS, twice as fast as float64) and takes k row-wise argmins (numpy's argmin
    along rows is many times faster than argpartition or a column argmin); the chosen neighbours'
    distances are then recomputed in float64 from the inputs, so an exact copy is at distance 0.
    """
    search_queries = np.ascontiguousarray(queries, dtype=np.float32)
    search_reference = np.ascontiguousarray(reference, dtype=np.float32)
    if len(reference) < k + int(exclude_self):
        raise ValueError(f"{k} nearest neighbours need more than {len(reference)} reference rows")
    # argmin over r of |q - r|^2 = |q|^2 + |r|^2 - 2 q.r needs neither |q|^2 nor a separate scaling
    # pass: one sgemm with -2 r and one add of |r|^2 per chunk.
    reference_norms = np.einsum("ij,ij->i", search_reference, search_reference)
    scaled_reference_t = np.ascontiguousarray((-2.0 * search_reference).T)
    rows = max(1, CHUNK_ELEMENTS // len(reference))
    indices = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), rows):
        block = search_queries[start : start + rows]
        within = np.arange(len(block))
        squared = block @ scaled_reference_t
        squared += reference_norms[None, :]
        if exclude_self:
            squared[within, within + start] = np.inf
        for rank in range(k):
            nearest = np.argmin(squared, axis=1)
            indices[start : start + len(block), rank] = nearest
            squared[within, nearest] = np.inf  # the next rank's argmin finds the next neighbour
    distances = _exact(queries, reference, indices)
    order = np.argsort(distances, axis=1, kind="stable")  # float32 ties may have swapped two ranks
    return Neighbours(
        np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)
    )


def authenticity(sample_to_real: Neighbours, real_to_real: np.ndarray) -> tuple[float, np.ndarray]:
    """Share of samples farther from their nearest real row j than j is from its nearest real row.

    `real_to_real`: each real row's distance to its nearest other real row. Returns the share and the
    per-sample verdict (True: authentic).
    """
    nearest_real = sample_to_real.indices[:, 0]
    authentic = sample_to_real.distances[:, 0] > real_to_real[nearest_real]
    return float(authentic.mean()), authentic


def alpha_precision_beta_recall(
    real: np.ndarray, samples: np.ndarray, real_to_real: np.ndarray, real_to_sample: Neighbours
) -> tuple[float, float]:
    """Alaa et al.'s integrated α-precision and β-recall (their reference formulas, raw features).

    α-precision(α): share of samples within the α-quantile ball of real distances to the real mean;
    β-recall(β): share of real rows whose nearest sample is within the real row's own k-NN radius
    and inside the β-quantile ball of those nearest samples around the sample mean. Each curve
    is summarised as 1 - 2 * (area between it and the diagonal): 1 is ideal.
    """
    alphas = np.linspace(0.0, 1.0, ALPHA_STEPS)
    real_center, sample_center = real.mean(axis=0), samples.mean(axis=0)
    real_radii = np.quantile(np.linalg.norm(real - real_center, axis=1), alphas)
    sample_to_center = np.linalg.norm(samples - real_center, axis=1)
    closest_sample = samples[real_to_sample.indices[:, 0]]
    closest_to_center = np.linalg.norm(closest_sample - sample_center, axis=1)
    closest_radii = np.quantile(closest_to_center, alphas)
    within_knn = real_to_sample.distances[:, 0] <= real_to_real
    precision_curve = np.array([np.mean(sample_to_center <= radius) for radius in real_radii])
    recall_curve = np.array([np.mean(within_knn & (closest_to_center <= radius)) for radius in closest_radii])
    step = alphas[1] - alphas[0]
    alpha_precision = 1.0 - 2.0 * np.sum(np.abs(alphas - precision_curve)) * step
    beta_recall = 1.0 - 2.0 * np.sum(np.abs(alphas - recall_curve)) * step
    return float(alpha_precision), float(beta_recall)


def mann_whitney_z(sample_distances: np.ndarray, heldout_distances: np.ndarray) -> float:
    """Z of the Mann-Whitney U of sample vs held-out distances (normal approximation, no continuity
    correction): negative when the samples are the closer ones."""
    m, n = len(sample_distances), len(heldout_distances)
    u = mannwhitneyu(sample_distances, heldout_distances, alternative="two-sided").statistic
    return float((u - m * n / 2.0) / np.sqrt(m * n * (m + n + 1) / 12.0))


def blackbox_auc(train_to_samples: np.ndarray, heldout_to_samples: np.ndarray) -> float:
    """GAN-Leaks full black-box ROC AUC: a query closer to its nearest sample is called a member."""
    truth = np.r_[np.ones(len(train_to_samples)), np.zeros(len(heldout_to_samples))]
    return float(roc_auc_score(truth, -np.r_[train_to_samples, heldout_to_samples]))


def nearest_other(reference: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each chosen reference row's distance to its nearest other reference row (a duplicate counts)."""
    found = nearest_neighbours(reference[rows], reference, k=2)
    itself = found.indices[:, 0] == rows
    return np.where(itself, found.distances[:, 1], found.distances[:, 0])


class PrivacyReference:
    """The real side of one feature space, computed once and reused for the samples and the null.

    Distances to training images (DCR, NNDR, authenticity, C_T) go to every training row. The
    `members`, a class-balanced subset of them, are the real set only where a statistic compares
    sets: the membership AUC (members vs held-out), α-precision and β-recall, and C_T's PCA and
    k-means fit (fitted on the members, then applied to every training row).
    """

    def __init__(
        self,
        train: np.ndarray,
        heldout: np.ndarray,
        members: np.ndarray,
        pca_dims: int,
        cells: int,
        min_cell: int,
        seed: int,
    ) -> None:
        self.train = np.asarray(train)
        self.heldout = np.asarray(heldout)
        self.members = self.train[members]
        self.min_cell = min_cell
        self.members_to_members = nearest_neighbours(self.members, self.members, exclude_self=True).distances[
            :, 0
        ]
        self.heldout_dcr = nearest_neighbours(self.heldout, self.train).distances[:, 0]
        self.dcr_threshold = float(np.percentile(self.heldout_dcr, HELDOUT_PERCENTILE))
        self.pca_dims = min(pca_dims, self.train.shape[1], len(self.members))
        self.pca = PCA(n_components=self.pca_dims, random_state=seed).fit(self.members)
        # Each cell needs min_cell held-out rows on average, or most would be dropped.
        self.cells = max(1, min(cells, len(self.heldout) // min_cell, len(self.members)))
        self.kmeans = KMeans(n_clusters=self.cells, n_init=3, random_state=seed).fit(
            self.pca.transform(self.members)
        )
        self.train_projected = self.pca.transform(self.train)
        heldout_projected = self.pca.transform(self.heldout)
        self.heldout_cells = self.kmeans.predict(heldout_projected)
        self.heldout_ct_distances = nearest_neighbours(heldout_projected, self.train_projected).distances[
            :, 0
        ]

    def data_copying(self, samples: np.ndarray) -> dict[str, Any]:
        """C_T of `samples`, its standard error under the null (each cell's Z is N(0, 1) there, so the
        weighted mean's is sqrt(sum w^2) / sum w), the number of cells and the cells dropped (fewer than
        `min_cell` samples or held-out rows: too few for a U test)."""
        projected = self.pca.transform(samples)
        sample_cells = self.kmeans.predict(projected)
        distances = nearest_neighbours(projected, self.train_projected).distances[:, 0]
        scores, weights = [], []
        for cell in range(self.cells):
            in_sample, in_heldout = sample_cells == cell, self.heldout_cells == cell
            if min(in_sample.sum(), in_heldout.sum()) < self.min_cell:
                continue
            scores.append(mann_whitney_z(distances[in_sample], self.heldout_ct_distances[in_heldout]))
            weights.append(in_heldout.mean())
        ct = float(np.dot(weights, scores) / np.sum(weights)) if scores else None
        se = float(np.sqrt(np.sum(np.square(weights))) / np.sum(weights)) if scores else None
        return {"ct": ct, "ct_se": se, "ct_cells": self.cells, "ct_cells_dropped": self.cells - len(scores)}

    def measure(self, samples: np.ndarray) -> tuple[dict[str, Any], Neighbours]:
        """Every feature-space measure of `samples` (rows); also each sample's two nearest training rows."""
        samples = np.asarray(samples)
        to_train = nearest_neighbours(samples, self.train, k=2)
        dcr = to_train.distances[:, 0]
        second = to_train.distances[:, 1]
        # Two equally near training rows (duplicates) give 0 / 0: as close to a copy as it gets.
        nndr = np.divide(dcr, second, out=np.zeros_like(dcr), where=second > 0)
        # Authenticity needs the real-real distance of only the training rows nearest some sample.
        nearest_rows = np.unique(to_train.indices[:, 0])
        train_to_train = np.full(len(self.train), np.nan)
        train_to_train[nearest_rows] = nearest_other(self.train, nearest_rows)
        members_to_sample = nearest_neighbours(self.members, samples)
        heldout_to_sample = nearest_neighbours(self.heldout, samples).distances[:, 0]
        alpha_precision, beta_recall = alpha_precision_beta_recall(
            self.members, samples, self.members_to_members, members_to_sample
        )
        out: dict[str, Any] = {
            "dcr_p5": float(np.percentile(dcr, 5)),
            "dcr_median": float(np.median(dcr)),
            "dcr_mean": float(dcr.mean()),
            "dcr_share": float(np.mean(dcr < self.dcr_threshold)),
            "nndr_median": float(np.median(nndr)),
            "nndr_mean": float(nndr.mean()),
            **self.data_copying(samples),
            "alpha_precision": alpha_precision,
            "beta_recall": beta_recall,
            "authenticity": authenticity(to_train, train_to_train)[0],
            "blackbox_auc": blackbox_auc(members_to_sample.distances[:, 0], heldout_to_sample),
        }
        return out, to_train


@dataclass(frozen=True)
class FlagRule:
    """When a statistic flags copying (privacy.* params): beyond its null by `flag_z` standard errors
    of the difference under the null, and never by less than the floor of its kind."""

    flag_z: float
    min_share_margin: float
    min_auc_margin: float
    min_ct_margin: float


@dataclass(frozen=True)
class Check:
    """One statistic of the verdict: flagged when `value` is beyond `null` by more than `margin`, in
    the direction copying moves it (+1: up, -1: down)."""

    statistic: str
    value: float
    null: float
    margin: float
    direction: int

    @property
    def flagged(self) -> bool:
        return self.direction * (self.value - self.null) > self.margin

    def reason(self) -> str:
        side = ">" if self.direction > 0 else "<"
        sign = "+" if self.direction > 0 else "-"
        return (
            f"{self.statistic} {self.value:.3f} {side} null {self.null:.3f} {sign} margin {self.margin:.3f}"
        )


def share_check(
    statistic: str, value: float, count: int, null: float, null_count: int, direction: int, rule: FlagRule
) -> Check:
    """A share (of `count` samples) against the null's share (of `null_count` images): the binomial
    standard error of their difference, from the pooled share."""
    pooled = (value * count + null * null_count) / (count + null_count)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / count + 1.0 / null_count))
    return Check(statistic, value, null, float(max(rule.flag_z * se, rule.min_share_margin)), direction)


def auc_check(
    statistic: str, value: float, null: float, positives: int, negatives: int, rule: FlagRule
) -> Check:
    """A ROC AUC against its null's, both on `positives` vs `negatives` scores: each AUC's standard
    error at 0.5 is sqrt((n1 + n0 + 1) / (12 n1 n0)) (the Mann-Whitney U's), their difference's
    sqrt(2) times that."""
    se = np.sqrt(2.0 * (positives + negatives + 1) / (12.0 * positives * negatives))
    return Check(statistic, value, null, float(max(rule.flag_z * se, rule.min_auc_margin)), +1)


def ct_check(statistic: str, measured: dict[str, Any], null: dict[str, Any], rule: FlagRule) -> Check | None:
    """C_T against its null's C_T (None when either dropped every cell)."""
    if measured["ct"] is None or null["ct"] is None:
        return None
    se = np.hypot(measured["ct_se"], null["ct_se"])
    return Check(statistic, measured["ct"], null["ct"], float(max(rule.flag_z * se, rule.min_ct_margin)), -1)


def critic_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """LOGAN white-box ROC AUC: the critic's score calls an image a member (higher: more 'real' for
    every loss in ganpipe). 0.5: the critic does not tell its training images from unseen ones."""
    truth = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(truth, np.r_[member_scores, nonmember_scores]))
