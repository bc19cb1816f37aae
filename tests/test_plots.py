"""The plots stage's figures, drawn from synthetic stage outputs (no training)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from synthetic_run import write_run

from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.report.plots import choose_epochs, draw_all, sample_rows

REPO = Path(__file__).resolve().parents[1]
ALWAYS = {"losses.png", "wasserstein.png", "epoch_progression.png", "samples_vs_real.png"}
OPTIONAL = {"fid.png", "class_histogram.png"}


@pytest.fixture()
def params() -> dict:
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


def figure_names(written: list[Path]) -> set[str]:
    return {path.name for path in written}


def assert_readable_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 600 and image.height >= 300, (path.name, image.size)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10, f"{path.name} looks blank"


@pytest.mark.parametrize(("channels", "model"), [(3, "wgan_gp"), (1, "wgan")])
def test_draw_all_writes_every_figure(tmp_path, monkeypatch, params, channels, model):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path, channels=channels)
    params["model"] = model

    written = draw_all(params)

    assert figure_names(written) == ALWAYS | OPTIONAL
    assert {path.name for path in paths.FIGURES.iterdir()} == ALWAYS | OPTIONAL  # no temp files left
    for path in written:
        assert_readable_png(path)
    with Image.open(paths.FIGURES / "samples_vs_real.png") as image:
        rgb = np.asarray(image.convert("RGB"), dtype=int)
    channel_spread = np.abs(rgb[..., 0] - rgb[..., 1]).max()
    if channels == 1:  # a gray colormap keeps R = G = B; matplotlib's default (viridis) would not
        assert channel_spread <= 2
    else:
        assert channel_spread > 50


def test_optional_figures_are_absent_without_their_data(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path, fid_epochs=0, class_histogram=False)  # FID during training off: header only
    paths.FIGURES.mkdir(parents=True)
    for name in OPTIONAL:  # left by an older run that had the data
        (paths.FIGURES / name).write_bytes(b"old")

    written = draw_all(params)

    assert figure_names(written) == ALWAYS
    assert {path.name for path in paths.FIGURES.iterdir()} == ALWAYS  # no stale figure left behind


def test_missing_stage_output_is_one_line_error(tmp_path, monkeypatch, params):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path)
    paths.SAMPLES.unlink()

    with pytest.raises(GanpipeError, match=r"samples\.npz: not found; run `dvc repro plots` first"):
        draw_all(params)


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, [0]), (3, [0, 1, 2]), (8, list(range(8))), (100, [0, 14, 28, 42, 57, 71, 85, 99])],
)
def test_choose_epochs_spans_first_to_last(count, expected):
    assert choose_epochs(count) == expected


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_sample_rows_reads_the_same_rows_as_a_full_load(tmp_path, save):
    images = np.random.default_rng(3).integers(0, 256, size=(50, 3, 5, 4), dtype=np.uint8)
    path = tmp_path / "images.npz"
    save(path, images=images, labels=np.arange(50))
    subset = np.sort(np.random.default_rng(7).choice(50, 20, replace=False))

    np.testing.assert_array_equal(sample_rows(path, "images", 8), images[:8])
    np.testing.assert_array_equal(sample_rows(path, "images", 20, np.random.default_rng(7)), images[subset])
    np.testing.assert_array_equal(sample_rows(path, "images", 64), images)  # fewer rows than asked
