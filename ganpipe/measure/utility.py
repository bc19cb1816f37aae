"""Does the synthetic data help? Train on synthetic, test on real (Classification Accuracy Score,
Ravuri & Vinyals 2019), against train on real, test on real.

The recipe, one for every arm: the domain classifier's network and training (`ganpipe.measure.classifier`:
a small CNN, AdamW with a one-cycle schedule, shift augmentation, label smoothing, the `classifier.*`
settings) for `utility.epochs` epochs. It is the project's tuned small CNN, cheap enough on a CPU to
train 5 arms × 3 seeds in minutes, and it already selects its weights on a validation split.

The arms (real images always come from the processed splits):
- `trtr`: the real training split;
- `tstr`: synthetic images only, as many as the real training split has (or all there are);
- `mixed`: the real training split plus `utility.synthetic_ratio` × its size of synthetic images (or
  all there are: a one-line warning says when the samples fall short of either count);
- `low`: a stratified `utility.low_data_fraction` of the real training split;
- `low_mixed`: that fraction plus the same synthetic images as `mixed`.
Every arm selects its weights on the real val split and is tested on the real test split; neither
ever reaches training. Synthetic subsets are stratified by their conditioning labels. Each arm runs
`utility.seeds` times, with seeds derived from the experiment seed (stream "utility.seed").
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ganpipe.measure.classifier import evaluate, train_classifier
from ganpipe.pipeline import paths
from ganpipe.pipeline.device import resolve_device
from ganpipe.pipeline.errors import run_first
from ganpipe.pipeline.io import save_figure, write_json, write_text
from ganpipe.pipeline.processed import check_images, read_info, read_split, stratified_subset
from ganpipe.pipeline.streams import numpy_rng, stream_seed

ARMS = ("trtr", "tstr", "mixed", "low", "low_mixed")
ARM_TITLES = {
    "trtr": "real",
    "tstr": "synthetic only",
    "mixed": "real + synthetic",
    "low": "low-data real",
    "low_mixed": "low-data real + synthetic",
}
MEASURES = ("accuracy", "balanced_accuracy", "auc")

Arrays = tuple[np.ndarray, np.ndarray]


def load_synthetic() -> Arrays | None:
    """Generated images and their conditioning labels, or None when the generator is unconditional."""
    try:
        with np.load(paths.SAMPLES) as data:
            if "labels" not in data:
                return None
            images, labels = data["images"], data["labels"].astype(np.int64)
    except FileNotFoundError:
        raise run_first(paths.SAMPLES, "sample") from None
    check_images(images, str(paths.SAMPLES))
    return images, labels


def synthetic_counts(n_real: int, synthetic_ratio: float) -> tuple[int, int]:
    """(tstr, added): the synthetic images the TSTR arm asks for (as many as the real training split)
    and those the mixed arms add (`synthetic_ratio` × that); an arm takes all there are when fewer."""
    return n_real, round(synthetic_ratio * n_real)


def arm_data(
    real: Arrays, synthetic: Arrays, n_classes: int, params: dict[str, Any], run: int
) -> dict[str, Arrays]:
    """The training images and labels of every arm for one run (seeded by the experiment seed and the
    run index). Only the real training split and the synthetic images are used."""
    cfg = params["utility"]
    real_images, real_labels = real
    syn_images, syn_labels = synthetic
    rng = numpy_rng(params["seed"], "utility.subset", run)
    n_real = len(real_labels)

    def synthetic_subset(count: int) -> Arrays:
        chosen = stratified_subset(syn_labels, count, rng)
        return syn_images[chosen], syn_labels[chosen]

    def join(*parts: Arrays) -> Arrays:
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    n_low = max(n_classes, round(cfg["low_data_fraction"] * n_real))
    low_index = stratified_subset(real_labels, n_low, rng)
    low = (real_images[low_index], real_labels[low_index])
    n_tstr, n_added = synthetic_counts(n_real, cfg["synthetic_ratio"])
    added = synthetic_subset(n_added)
    return {
        "trtr": real,
        "tstr": synthetic_subset(n_tstr),
        "mixed": join(real, added),
        "low": low,
        "low_mixed": join(low, added),
    }


def _summary(values: list[float | None]) -> dict[str, float | None]:
    """Mean and sample std (ddof 1; 0 for one run) over runs; None where a measure is undefined."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": round(float(np.mean(present)), 6), "std": round(std, 6)}


def _empty_metrics(params: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """The metrics file's keys, all null: the same keys whether the stage ran or was skipped."""
    metrics: dict[str, Any] = {"skipped": reason, "seeds": params["utility"]["seeds"], "tstr_ratio": None}
    for arm in ARMS:
        metrics[f"{arm}_n_train"] = None
        for measure in MEASURES:
            metrics[f"{arm}_{measure}_mean"] = None
            metrics[f"{arm}_{measure}_std"] = None
    return metrics


def plot_arms(metrics: dict[str, Any]) -> None:
    """Test accuracy and balanced accuracy of every arm, mean ± std over the seeds."""
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    ax = figure.add_subplot()
    if metrics["skipped"]:
        ax.text(0.5, 0.5, f"utility skipped:\n{metrics['skipped']}", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    else:
        positions = np.arange(len(ARMS))
        bars = ((-0.2, "accuracy", "tab:blue"), (0.2, "balanced_accuracy", "tab:green"))
        for offset, measure, color in bars:
            means = [metrics[f"{arm}_{measure}_mean"] or 0.0 for arm in ARMS]
            stds = [metrics[f"{arm}_{measure}_std"] or 0.0 for arm in ARMS]
            ax.bar(positions + offset, means, 0.4, yerr=stds, capsize=4, color=color, label=measure)
        labels = [f"{ARM_TITLES[arm]}\n(n={metrics[f'{arm}_n_train']})" for arm in ARMS]
        ax.set_xticks(positions, labels, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("real test split")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right")
        ratio = metrics["tstr_ratio"]
        ax.set_title(
            f"Train on synthetic, test on real: TSTR / TRTR accuracy = {ratio:.3f} ({metrics['seeds']} seeds)"
        )
    save_figure(paths.UTILITY_FIGURE, figure)


def _arms_tsv(metrics: dict[str, Any]) -> str:
    rows = ["arm\taccuracy\taccuracy_std\tbalanced_accuracy\tauc"]
    for arm in ARMS:
        values = [
            metrics[f"{arm}_{m}"]
            for m in ("accuracy_mean", "accuracy_std", "balanced_accuracy_mean", "auc_mean")
        ]
        rows.append("\t".join([arm, *("" if v is None else f"{v:.6f}" for v in values)]))
    return "\n".join(rows) + "\n"


def measure_utility(params: dict[str, Any]) -> dict[str, Any]:
    """The utility stage: train every arm `utility.seeds` times; write metrics/utility.json and the
    figure. An unconditional generator has no labels: the stage writes why it skipped, with null
    metrics, instead of failing."""
    synthetic = load_synthetic()
    if synthetic is None:
        metrics = _empty_metrics(
            params,
            f"model {params['model']!r} is unconditional: its samples carry no labels to train on; "
            "set models.<model>.conditional to measure utility",
        )
    else:
        metrics = _run_arms(params, synthetic)
    write_json(paths.UTILITY_METRICS, metrics)
    write_text(paths.UTILITY_TSV, _arms_tsv(metrics))
    plot_arms(metrics)
    return metrics


def _warn_if_short(n_synthetic: int, n_real: int, synthetic_ratio: float) -> None:
    """Say so, in one line, when the arms must make do with fewer synthetic images than they ask for
    (each arm's `*_n_train` in metrics/utility.json records what it trained on)."""
    wanted = max(synthetic_counts(n_real, synthetic_ratio))
    if n_synthetic < wanted:
        print(
            f"warning: {paths.SAMPLES}: {n_synthetic} generated images, fewer than the {wanted} the "
            f"utility arms ask for (as many as the {n_real} real training images, and synthetic_ratio "
            f"{synthetic_ratio} × that); they train on all {n_synthetic}; raise sample.num_samples to "
            f"at least {wanted} for equal counts",
            file=sys.stderr,
            flush=True,
        )


def _run_arms(params: dict[str, Any], synthetic: Arrays) -> dict[str, Any]:
    info = read_info()
    n_classes = int(info["n_classes"])
    real = read_split(paths.PROCESSED_TRAIN)
    val_images, val_labels = read_split(paths.PROCESSED_VAL)
    test_images, test_labels = read_split(paths.PROCESSED_TEST)
    if synthetic[0].shape[1:] != real[0].shape[1:]:
        raise run_first(
            paths.SAMPLES,
            "sample",
            f"holds images of shape {synthetic[0].shape[1:]}, the data's are {real[0].shape[1:]}",
        )
    cfg, recipe = params["utility"], params["classifier"]
    _warn_if_short(len(synthetic[1]), len(real[1]), cfg["synthetic_ratio"])
    device = resolve_device()
    results: dict[str, list[dict[str, float | None]]] = {arm: [] for arm in ARMS}
    metrics = _empty_metrics(params, None)
    for run in range(cfg["seeds"]):
        for arm, (images, labels) in arm_data(real, synthetic, n_classes, params, run).items():
            trained = train_classifier(
                images,
                labels,
                n_classes,
                val_images=val_images if len(val_images) else None,
                val_labels=val_labels if len(val_labels) else None,
                epochs=cfg["epochs"],
                batch_size=recipe["batch_size"],
                lr=recipe["lr"],
                weight_decay=recipe["weight_decay"],
                dropout=recipe["dropout"],
                label_smoothing=recipe["label_smoothing"],
                augment=recipe["augment"],
                seed=stream_seed(params["seed"], "utility.seed", run),
                device=device,
            )
            results[arm].append(evaluate(trained.model, test_images, test_labels, device))
            metrics[f"{arm}_n_train"] = len(labels)
    for arm in ARMS:
        for measure in MEASURES:
            summary = _summary([run[measure] for run in results[arm]])
            metrics[f"{arm}_{measure}_mean"] = summary["mean"]
            metrics[f"{arm}_{measure}_std"] = summary["std"]
    metrics["tstr_ratio"] = tstr_ratio(metrics)
    return metrics


def tstr_ratio(metrics: dict[str, Any]) -> float | None:
    """Train-on-synthetic over train-on-real mean test accuracy (plain, not balanced, accuracy; None
    without a real-data accuracy), to 6 decimals (docs/utility.md)."""
    trtr, tstr = metrics["trtr_accuracy_mean"], metrics["tstr_accuracy_mean"]
    return round(tstr / trtr, 6) if trtr else None
