"""The PNG figures a person looks at after a run, written by the plots stage into plots/figures/.

`dvc plots show` renders the raw TSVs interactively; these figures are the at-a-glance view that
also works in a file browser, a report or a paper draft. Every figure is drawn on a bare
matplotlib Figure (no pyplot state, no display needed) and saved atomically.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.lib import format as npy_format

from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, run_first
from ganpipe.pipeline.images import make_grid
from ganpipe.pipeline.io import save_figure
from ganpipe.pipeline.params import model_config
from ganpipe.pipeline.processed import DATASET_SEED
from ganpipe.pipeline.streams import numpy_rng

LOSSES_PNG = "losses.png"
WASSERSTEIN_PNG = "wasserstein.png"
EPOCH_PROGRESSION_PNG = "epoch_progression.png"
SAMPLES_VS_REAL_PNG = "samples_vs_real.png"
FID_PNG = "fid.png"
CLASS_HISTOGRAM_PNG = "class_histogram.png"
CLASS_GRID_PNG = "class_grid.png"

GRID_IMAGES = 64  # images in each of the generated and real grids (8 x 8)
MAX_PROGRESSION_ROWS = 8  # epochs shown in the epoch comparison grid
CLASS_GRID_COLUMNS = 10  # samples per class in the class grid
GENERATOR_COLOR, CRITIC_COLOR = "tab:blue", "tab:red"


def read_tsv(path: Path) -> pd.DataFrame:
    """A TSV written by the train or score stage; a missing file is a stage not yet run."""
    _require(path)
    return pd.read_csv(path, sep="\t")


def _require(path: Path) -> None:
    if not path.exists():
        raise run_first(path, "plots")


def smooth(values: pd.Series, window: int | None = None) -> pd.Series:
    """Centered moving average; the default window (~2% of the run) keeps the trend, drops step noise."""
    window = window or max(1, len(values) // 50)
    return values.rolling(window, center=True, min_periods=1).mean()


def choose_epochs(count: int, most: int = MAX_PROGRESSION_ROWS) -> list[int]:
    """Indices of up to `most` evenly spaced epochs, always including the first and the last."""
    return sorted({round(i) for i in np.linspace(0, count - 1, min(most, count))})


def _show_grid(ax: Axes, grid: np.ndarray) -> None:
    """Draw a make_grid tile (H, W, C) without ticks; one channel is drawn in gray, not a false-color map."""
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_losses(losses: pd.DataFrame, path: Path, model: str) -> Path:
    """Generator (left axis) and critic (right axis) losses: their scales differ by orders of magnitude."""
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax_g = figure.add_subplot()
    ax_d = ax_g.twinx()
    lines = []
    for ax, column, label, color in (
        (ax_g, "loss_g", "generator", GENERATOR_COLOR),
        (ax_d, "loss_d", "critic", CRITIC_COLOR),
    ):
        ax.plot(losses["epoch"], losses[column], color=color, alpha=0.25, linewidth=0.8)
        lines += ax.plot(
            losses["epoch"],
            smooth(losses[column]),
            color=color,
            linewidth=2,
            label=f"{label} loss (smoothed)",
        )
        ax.set_ylabel(f"{label} loss", color=color)
        ax.tick_params(axis="y", labelcolor=color)
    ax_g.set_xlabel("epoch")
    ax_g.set_title(f"Generator and critic losses ({model})")
    ax_g.grid(alpha=0.3)
    ax_g.legend(lines, [line.get_label() for line in lines], loc="best")
    save_figure(path, figure)
    return path


def plot_wasserstein(losses: pd.DataFrame, path: Path, model: str, loss: str, clip: float | None) -> Path:
    """The critic gap E[D(real)] - E[D(fake)]: for WGAN losses the Wasserstein estimate, which should
    shrink as the generator improves; weight clipping bounds it, so the bound is written on the figure."""
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.add_subplot()
    gap = losses["wasserstein"]
    ax.plot(losses["epoch"], gap, color="tab:purple", alpha=0.25, linewidth=0.8, label="per step")
    ax.plot(losses["epoch"], smooth(gap), color="tab:purple", linewidth=2, label="smoothed")
    ax.axhline(0, color="black", linestyle="--", linewidth=1, label="zero")
    name = "Wasserstein estimate" if loss == "wasserstein" else "Critic gap"
    title = f"{name} E[D(real)] − E[D(fake)] ({model}, {loss} loss)"
    if clip is not None:
        title += f"\ncritic weights clipped to ±{clip:g}"
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean critic output, real − fake")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    save_figure(path, figure)
    return path


def _tile_centers(count: int, side: int, padding: int = 2) -> list[float]:
    """x positions of the centres of `count` tiles in a make_grid row (for per-column labels)."""
    return [padding + index * (side + padding) + side / 2 for index in range(count)]


def plot_epoch_progression(
    images: np.ndarray, epochs: np.ndarray, path: Path, model: str, column_names: list[str] | None = None
) -> Path:
    """The same fixed noise through training, one row per epoch: shows when and how samples form.

    `column_names` (conditional runs: the fixed label of each column) are written above the top row.
    """
    chosen = choose_epochs(len(epochs))
    rows = [make_grid(images[index], nrow=images.shape[1]) for index in chosen]
    row_height, row_width = rows[0].shape[:2]
    width = 12.0
    height = len(chosen) * width * row_height / row_width + 0.8  # + the title
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(len(chosen), 1, squeeze=False)[:, 0]
    for ax, index, row in zip(axes, chosen, rows, strict=True):
        _show_grid(ax, row)
        ax.set_ylabel(f"epoch {int(epochs[index])}", rotation=0, ha="right", va="center", fontsize=12)
    title = f"Fixed-noise samples by epoch ({model})"
    if column_names is not None:
        axes[0].xaxis.tick_top()
        centers = _tile_centers(len(column_names), images.shape[-1])
        rotation = 90 if max(map(len, column_names)) > 3 else 0  # long class names stand upright
        axes[0].set_xticks(centers, column_names, rotation=rotation, fontsize=8)
        title = f"Fixed noise and fixed labels (above each column) by epoch ({model})"
    figure.suptitle(title, fontsize=14)
    save_figure(path, figure)
    return path


def plot_samples_vs_real(
    generated: np.ndarray, real: np.ndarray, path: Path, model: str, dataset: str
) -> Path:
    """Final samples beside as many real images, at the same size: the first check of any GAN."""
    figure = Figure(figsize=(12, 6.6), layout="constrained")
    ax_generated, ax_real = figure.subplots(1, 2)
    panels = ((ax_generated, generated, f"Generated ({model})"), (ax_real, real, f"Real ({dataset})"))
    for ax, images, title in panels:
        _show_grid(ax, make_grid(images, nrow=8))
        ax.set_title(f"{title}, {len(images)} images", fontsize=13)
    figure.suptitle("Final samples vs real data", fontsize=15)
    save_figure(path, figure)
    return path


def plot_class_grid(
    images_by_class: list[np.ndarray], names: list[str], path: Path, model: str, columns: int
) -> Path:
    """One row per class: final samples generated for that class label, named on the left. A wrong
    digit in a row, or rows that look alike, show that conditioning failed at a glance."""
    shape = next(images.shape[1:] for images in images_by_class if len(images))
    channels, side = shape[0], shape[-1]
    width = 1.1 * columns + 2.5
    figure = Figure(figsize=(width, 1.1 * len(names) + 0.8), layout="constrained")
    axes = figure.subplots(len(names), 1, squeeze=False)[:, 0]
    blank = np.full((1, channels, side, side), 255, np.uint8)
    for ax, images, name in zip(axes, images_by_class, names, strict=True):
        row = images if len(images) else blank  # a class with no samples: a white tile, named
        _show_grid(ax, make_grid(row, nrow=columns))
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=11)
    figure.suptitle(f"Final samples by conditioning label ({model})", fontsize=13)
    save_figure(path, figure)
    return path


def plot_fid(fid: pd.DataFrame, path: Path, model: str) -> Path:
    """FID over training (lower is better), with the best epoch marked; with a generator EMA, also
    the trained weights' own FID (plots/train/fid.tsv's fid_generator), so the EMA's gain shows."""
    figure = Figure(figsize=(9, 5), layout="constrained")
    ax = figure.add_subplot()
    with_ema = "fid_generator" in fid and bool((fid["fid_generator"] != fid["fid"]).any())
    label = "EMA generator" if with_ema else "FID"
    ax.plot(fid["epoch"], fid["fid"], marker="o", color="tab:green", label=label)
    if with_ema:
        ax.plot(fid["epoch"], fid["fid_generator"], marker=".", color="tab:gray", label="trained weights")
    best = fid.loc[fid["fid"].idxmin()]
    ax.scatter(
        [best["epoch"]],
        [best["fid"]],
        s=120,
        facecolors="none",
        edgecolors="black",
        zorder=3,
        label=f"best: {best['fid']:.2f} at epoch {best['epoch']:g}",
    )
    ax.set_title(f"FID during training, domain features ({model}; lower is better)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("FID")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    save_figure(path, figure)
    return path


def plot_class_histogram(
    histogram: pd.DataFrame, label_names: dict[str, str], path: Path, model: str
) -> Path:
    """Real vs generated class frequencies: a missing or over-produced class is mode collapse at a glance.
    Horizontal bars, so that long class names (PathMNIST's tissue types) stay readable."""
    names = [label_names.get(str(label), str(label)) for label in histogram["label"]]
    positions = np.arange(len(names))
    height = 0.4
    figure = Figure(figsize=(9, max(3.5, 0.5 * len(names) + 1.5)), layout="constrained")
    ax = figure.add_subplot()
    ax.barh(positions - height / 2, histogram["real"], height, label="real", color="tab:gray")
    ax.barh(
        positions + height / 2,
        histogram["generated"],
        height,
        label=f"generated ({model})",
        color="tab:orange",
    )
    ax.set_yticks(positions, names)
    ax.invert_yaxis()  # first class on top, as in the info.json order
    ax.set_xlabel("fraction of images")
    ax.set_title("Class frequencies: real vs generated")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best")
    save_figure(path, figure)
    return path


def sample_rows(
    path: Path,
    key: str,
    count: int,
    rng: np.random.Generator | None = None,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """`count` rows of the array `key` in an .npz: the first ones, (with `rng`) a random, sorted
    subset, or the rows `indices` in their order. Only those rows are read, because a 224 px
    training set is many GB while a figure needs 64 images."""
    _require(path)
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = npy_format.read_magic(member)
        header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = header(member)
        if fortran_order:
            raise GanpipeError(f"{path}: {key} is stored in Fortran order; rerun the stage that writes it")
        total, row_shape = shape[0], shape[1:]
        count = min(count, total)
        rows = np.arange(count)
        if rng is not None:
            rows = np.sort(rng.choice(total, count, replace=False))
        if indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
            count = len(rows)
        row_bytes = dtype.itemsize * int(np.prod(row_shape))
        start = member.tell()
        chosen = np.empty((count, *row_shape), dtype)
        for index, row in enumerate(rows):
            member.seek(start + int(row) * row_bytes)
            chosen[index] = np.frombuffer(member.read(row_bytes), dtype).reshape(row_shape)
    return chosen


def _load_npz(path: Path, *keys: str) -> list[np.ndarray]:
    _require(path)
    with np.load(path) as archive:
        return [archive[key] for key in keys]


def _npz_member(path: Path, key: str) -> np.ndarray | None:
    """A small array of an .npz (labels), or None when the file has no such member."""
    _require(path)
    with np.load(path) as archive:
        return archive[key] if key in archive.files else None


def _class_names(info: dict[str, Any], labels: Any) -> list[str]:
    names = info.get("label_names", {})
    return [names.get(str(int(label)), str(int(label))) for label in labels]


def draw_all(params: dict[str, Any]) -> list[Path]:
    """Draw every figure whose data exists; return the written paths.

    The FID, class histogram and class grid (conditional models) figures are optional, because
    their data is: an optional figure whose data is gone is deleted, so the folder never shows a
    figure from an older run.
    """
    figures_dir = paths.FIGURES
    # The titles name the networks too where they are not the seeds' DCGAN: "dcgan" alone is a
    # loss recipe, and would mislabel a resnet run.
    arch = params["arch"]["name"]
    model = params["model"] if arch == "dcgan" else f"{params['model']}, {arch}"
    dataset = params["data"]["name"]
    config = model_config(params)
    losses = read_tsv(paths.LOSSES_TSV)
    epoch_images, epochs = _load_npz(paths.EPOCH_SAMPLES, "images", "epochs")
    info = json.loads(paths.PROCESSED_INFO.read_text()) if paths.PROCESSED_INFO.exists() else {}
    fixed_labels = _npz_member(paths.EPOCH_SAMPLES, "labels")  # conditional runs only
    column_names = None if fixed_labels is None else _class_names(info, fixed_labels)
    generated = sample_rows(paths.SAMPLES, "images", GRID_IMAGES)
    # A fixed random subset shows the class mix rather than the file's first rows, and is the same in
    # every experiment on the same data, so real grids compare across experiments.
    real_rng = numpy_rng(DATASET_SEED, "plots.real_grid")
    real = sample_rows(paths.PROCESSED_TRAIN, "images", GRID_IMAGES, real_rng)
    written = [
        plot_losses(losses, figures_dir / LOSSES_PNG, model),
        plot_wasserstein(losses, figures_dir / WASSERSTEIN_PNG, model, config["loss"], config["clip"]),
        plot_epoch_progression(
            epoch_images, epochs, figures_dir / EPOCH_PROGRESSION_PNG, model, column_names
        ),
        plot_samples_vs_real(generated, real, figures_dir / SAMPLES_VS_REAL_PNG, model, dataset),
    ]
    sample_labels = _npz_member(paths.SAMPLES, "labels")
    if sample_labels is not None:  # a conditional model: one row of samples per class
        n_classes = info.get("n_classes", int(sample_labels.max(initial=0)) + 1)
        rows = [np.flatnonzero(sample_labels == label)[:CLASS_GRID_COLUMNS] for label in range(n_classes)]
        chosen = sample_rows(paths.SAMPLES, "images", 0, indices=np.concatenate(rows))
        by_class = np.split(chosen, np.cumsum([len(row) for row in rows])[:-1])
        written.append(
            plot_class_grid(
                by_class,
                _class_names(info, range(n_classes)),
                figures_dir / CLASS_GRID_PNG,
                model,
                CLASS_GRID_COLUMNS,
            )
        )
    fid = read_tsv(paths.FID_TSV) if paths.FID_TSV.exists() else pd.DataFrame()
    if len(fid):
        written.append(plot_fid(fid, figures_dir / FID_PNG, model))
    if paths.CLASS_HISTOGRAM_TSV.exists():
        written.append(
            plot_class_histogram(
                read_tsv(paths.CLASS_HISTOGRAM_TSV),
                info.get("label_names", {}),
                figures_dir / CLASS_HISTOGRAM_PNG,
                model,
            )
        )
    for optional in (FID_PNG, CLASS_HISTOGRAM_PNG, CLASS_GRID_PNG):
        if figures_dir / optional not in written:
            (figures_dir / optional).unlink(missing_ok=True)
    return written
