"""The download and preprocess stages, driven through ganpipe.data's public functions.

No test touches the network: downloads are served from localhost or pointed at a closed local
port, and the real MedMNIST URL is only tried where DNS cannot resolve it. Real data comes from
scikit-learn's digits and, when present, ../shared/data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from synthetic_run import blobs, write_fid, write_losses

from ganpipe.data import DATASETS, MedMNISTSource, download, preprocess, register_dataset
from ganpipe.data.medmnist2d import flags_2d
from ganpipe.data.transform import canonical_order
from ganpipe.pipeline import paths
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.io import save_npz
from ganpipe.pipeline.stage import run_stage

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_NPZ = SHARED_DATA / "mnist_t10k.npz"
SHARED_IDX = SHARED_DATA / "MNIST"
MNIST_T10K_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
needs_shared_npz = pytest.mark.skipif(not SHARED_NPZ.is_file(), reason="../shared/data/mnist_t10k.npz absent")
needs_shared_idx = pytest.mark.skipif(not SHARED_IDX.is_dir(), reason="../shared/data/MNIST absent")


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty folder, as a stage runs in the repository root."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_params(**data: Any) -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data)
    return params


def run_stages(**data: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """download + preprocess; return the processed train and test arrays and info.json."""
    params = make_params(**data)
    download(params["data"])
    preprocess(params)
    train, test = (dict(np.load(path)) for path in (paths.PROCESSED_TRAIN, paths.PROCESSED_TEST))
    return train, test, json.loads(paths.PROCESSED_INFO.read_text())


def manifest() -> dict[str, Any]:
    return json.loads(paths.RAW_MANIFEST.read_text())


def synthetic_arrays(
    channels: int = 3, side: int = 28, label_columns: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """A small random dataset in MedMNIST layout: 40 train, 10 val, 20 test images, 3 classes."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", 40), ("val", 10), ("test", 20)):
        shape = (count, side, side, channels) if channels == 3 else (count, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = np.arange(count) % 3 if label_columns == 1 else rng.integers(0, 2, (count, label_columns))
        arrays[f"{split}_labels"] = labels.reshape(count, -1).astype(np.uint8)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def test_registry_names_every_2d_medmnist_flag_and_the_extra_sources() -> None:
    assert set(flags_2d()) <= set(DATASETS)
    assert {"pathmnist", "chestmnist", "bloodmnist", "mnist", "digits", "local"} <= set(DATASETS)
    assert not any(name.endswith("3d") for name in DATASETS)


def test_digits_end_to_end_is_deterministic() -> None:
    train, test, info = run_stages(name="digits", image_size=28, channels=3)
    # digits publish no val split: 10% of the 1,437 derived training images, stratified, become val.
    val = dict(np.load(paths.PROCESSED_VAL))
    assert train["images"].shape == (1293, 3, 28, 28) and test["images"].shape == (360, 3, 28, 28)
    assert val["images"].shape == (144, 3, 28, 28) and set(np.unique(val["labels"])) == set(range(10))
    assert train["images"].dtype == np.uint8 and train["labels"].dtype == np.int64
    assert train["labels"].shape == (1293,) and set(np.unique(test["labels"])) == set(range(10))
    assert train["images"].min() == 0 and train["images"].max() == 255
    # Grayscale data repeated to 3 channels.
    assert np.array_equal(train["images"][:, 0], train["images"][:, 2])
    assert info == {
        "name": "digits",
        "n_classes": 10,
        "label_names": {str(d): str(d) for d in range(10)},
        "channels": 3,
        "size": 28,
        "n_train": 1293,
        "n_val": 144,
        "n_test": 360,
        "val_split": "carved: stratified 10% of train, "
        "sklearn.model_selection.train_test_split(random_state=0)",
        "order": "canonical: each split sorted by blake2b(image bytes + label bytes)",
        "task": "multi-class",
    }
    raw = manifest()
    assert raw["splits"] == {"train": 1437, "test": 360} and raw["split"].startswith("derived: stratified")
    assert sorted(p.name for p in paths.RAW_DIR.iterdir()) == ["digits.npz", "manifest.json"]
    assert paths.REAL_GRID.stat().st_size > 0
    outputs = [paths.RAW_DIR / "digits.npz", paths.PROCESSED_TRAIN, paths.PROCESSED_VAL]
    outputs += [paths.PROCESSED_TEST, paths.REAL_GRID]
    first_run = [path.read_bytes() for path in outputs]
    run_stages(name="digits", image_size=28, channels=3)
    assert [path.read_bytes() for path in outputs] == first_run


def test_size_64_resizes_and_limit_takes_the_same_subset_for_every_seed() -> None:
    train, test, info = run_stages(name="digits", image_size=64, channels=1, limit=200)
    assert train["images"].shape == (200, 1, 64, 64) and test["images"].shape == (200, 1, 64, 64)
    assert (info["size"], info["n_train"], info["n_test"]) == (64, 200, 200)
    assert len(np.unique(train["labels"])) == 10  # a random subset keeps every class
    params = make_params(name="digits", image_size=64, channels=1, limit=200)
    params["seed"] = 1  # the subset belongs to the data: another experiment seed trains on it too
    preprocess(params)
    assert np.array_equal(np.load(paths.PROCESSED_TRAIN)["images"], train["images"])


def test_channels_one_uses_itu_601_luminance_and_three_keeps_rgb(workdir: Path) -> None:
    arrays = synthetic_arrays(channels=3)
    pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (100, 150, 200)]
    expected_gray = [76, 150, 29, 255, 0, 141]  # round(0.299 R + 0.587 G + 0.114 B)
    arrays["train_images"][0, 0, : len(pixels)] = pixels
    source = write_npz(workdir / "rgb.npz", arrays)

    # Processed splits are in canonical (content-hash) order, whatever the file's order.
    train_order = canonical_order(arrays["train_images"], arrays["train_labels"])
    test_order = canonical_order(arrays["test_images"], arrays["test_labels"])
    first = int(np.flatnonzero(train_order == 0)[0])  # where the image with the known pixels went

    train, test, info = run_stages(name="local", source=str(source), image_size=28, channels=3)
    assert np.array_equal(train["images"], arrays["train_images"][train_order].transpose(0, 3, 1, 2))
    assert np.array_equal(test["labels"], arrays["test_labels"][test_order].reshape(-1))
    assert info["n_classes"] == 3 and info["label_names"] == {"0": "0", "1": "1", "2": "2"}

    train, _, _ = run_stages(name="local", source=str(source), image_size=28, channels=1)
    assert train["images"].shape == (40, 1, 28, 28)
    assert train["images"][first, 0, 0, : len(pixels)].tolist() == expected_gray
    rgb = arrays["train_images"][train_order].astype(np.int64)
    per_mille = 299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]
    assert np.array_equal(train["images"][:, 0], (per_mille + 500) // 1000)


def test_local_npz_is_copied_byte_for_byte_with_its_splits(workdir: Path) -> None:
    source = write_npz(workdir / "gray.npz", synthetic_arrays(channels=1))
    download(make_params(name="local", source=str(source))["data"])
    raw = manifest()
    assert (paths.RAW_DIR / raw["file"]).read_bytes() == source.read_bytes()
    assert raw["splits"] == {"train": 40, "val": 10, "test": 20}
    assert (raw["name"], raw["source"], raw["size"], raw["channels"]) == ("local", str(source), 28, 1)
    assert (raw["n_classes"], raw["label_names"], raw["verified_md5s"]) == (3, None, {})


def two_class_source(folder: Path) -> Path:
    """A local MedMNIST-layout npz whose labels are 0 and 1."""
    arrays = synthetic_arrays(channels=1)
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] %= 2
    return write_npz(folder / "xray.npz", arrays)


@pytest.mark.parametrize("names", [["normal", "pneumonia"], {0: "normal", 1: "pneumonia"}])
def test_label_names_name_a_local_sources_classes_in_figures_and_export(
    workdir: Path, names: list[str] | dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganpipe.gan import export
    from ganpipe.report import plots

    source = str(two_class_source(workdir))
    _, _, info = run_stages(name="local", source=source, channels=1, label_names=names)
    assert info["label_names"] == manifest()["label_names"] == {"0": "normal", "1": "pneumonia"}

    # The class grid: a conditional run's samples, one row per class, named from info.json.
    write_losses(workdir)
    write_fid(workdir, 0)
    rng = np.random.default_rng(0)
    labels = np.arange(20, dtype=np.int64) % 2
    save_npz(paths.SAMPLES, images=blobs(20, 1, 28, rng), labels=labels)
    epoch_images = blobs(2 * 16, 1, 28, rng).reshape(2, 16, 1, 28, 28)
    save_npz(paths.EPOCH_SAMPLES, images=epoch_images, epochs=np.arange(1, 3), labels=labels[:16])
    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda path, figure: figures.setdefault(path.name, figure))
    plots.draw_all(make_params(name="local"))
    grid = figures[plots.CLASS_GRID_PNG]
    assert [ax.get_ylabel() for ax in grid.axes] == ["normal", "pneumonia"]

    # The export's PNG folders, as export() writes them from info.json's names.
    export.write_pngs({"train": (blobs(4, 1, 28, rng), np.array([0, 1, 1, 0]))}, info["label_names"])
    folders = sorted(folder.name for folder in (paths.EXPORT_PNG / "train").iterdir())
    assert folders == ["0_normal", "1_pneumonia"]


def test_a_wrong_count_of_label_names_is_refused_in_one_line(workdir: Path) -> None:
    params = make_params(name="local", source=str(two_class_source(workdir)), label_names=["a", "b", "c"])
    with pytest.raises(
        ParamsError,
        match=r"^params\.yaml: data\.label_names has 3 names, but .*xray\.npz "
        r"holds 2 classes \(labels 0\.\.1\); give one name per label$",
    ):
        download(params["data"])
    assert not paths.RAW_MANIFEST.exists()


def test_multi_label_becomes_first_positive_label_or_an_extra_none_class(workdir: Path) -> None:
    arrays = synthetic_arrays(channels=1, label_columns=4)
    source = write_npz(workdir / "multi.npz", arrays)
    train, _, info = run_stages(name="local", source=str(source))
    assert manifest()["task"] == "multi-label, binary-class"
    labels = arrays["train_labels"][canonical_order(arrays["train_images"], arrays["train_labels"])]
    expected = np.where(labels.any(axis=1), labels.argmax(axis=1), 4)
    assert np.array_equal(train["labels"], expected)
    assert info["n_classes"] == 5 and info["label_names"]["4"] == "none"


@needs_shared_npz
def test_shared_mnist_npz_as_local_data() -> None:
    _, test, info = run_stages(name="local", source=str(SHARED_NPZ), channels=1)
    with np.load(SHARED_NPZ) as original:
        order = canonical_order(original["test_images"], original["test_labels"])
        assert np.array_equal(test["images"][:, 0], original["test_images"][order])
    assert (info["n_train"], info["n_val"], info["n_test"], info["n_classes"]) == (8000, 1000, 1000, 10)
    assert info["val_split"] == "as published"
    assert manifest()["md5"] == "91e608727f9f49d5bf3e61f2c53aaee0"


@needs_shared_idx
def test_shared_mnist_idx_folder_is_verified_and_split() -> None:
    train, test, info = run_stages(name="mnist", source=str(SHARED_IDX), channels=1)
    raw = manifest()
    assert set(raw["verified_md5s"]) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert "t10k files only" in raw["split"]
    assert (info["n_train"], info["n_val"], info["n_test"]) == (7200, 800, 2000)
    val_labels = np.load(paths.PROCESSED_VAL)["labels"]
    all_labels = np.concatenate([train["labels"], val_labels, test["labels"]])
    assert np.bincount(all_labels).tolist() == MNIST_T10K_CLASS_COUNTS
    assert np.bincount(test["labels"]).tolist() == pytest.approx(np.array(MNIST_T10K_CLASS_COUNTS) / 5, abs=1)


def test_idx_folder_with_both_splits_keeps_them_and_mnist_name_is_verified(workdir: Path) -> None:
    arrays = synthetic_arrays(channels=1)
    folder = workdir / "idx" / "raw"
    folder.mkdir(parents=True)
    for prefix, split in (("train", "train"), ("t10k", "test")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", arrays[f"{split}_images"])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", arrays[f"{split}_labels"].reshape(-1))
    train, test, _ = run_stages(name="local", source=str(workdir / "idx"), channels=1)
    assert manifest()["split"] == "as published"
    # No val split in an idx folder: 10% of train is carved out; together they are the train file.
    kept = np.concatenate([train["images"], np.load(paths.PROCESSED_VAL)["images"]])[:, 0]
    assert sorted(map(np.ndarray.tobytes, kept)) == sorted(map(np.ndarray.tobytes, arrays["train_images"]))
    pairs = sorted(zip(map(np.ndarray.tobytes, test["images"][:, 0]), test["labels"].tolist()))
    expected = zip(map(np.ndarray.tobytes, arrays["test_images"]), arrays["test_labels"].reshape(-1).tolist())
    assert pairs == sorted(expected)
    with pytest.raises(GanpipeError, match=r"not the published MNIST file.*data.name=local"):
        download(make_params(name="mnist", source=str(workdir / "idx"))["data"])


def test_known_name_with_a_different_file_is_refused(workdir: Path) -> None:
    source = write_npz(workdir / "other.npz", synthetic_arrays())
    with pytest.raises(GanpipeError, match=r"md5 .* pathmnist .*data.name=local"):
        download(make_params(name="pathmnist", source=str(source))["data"])
    assert not list(paths.RAW_DIR.glob("*.npz"))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupted(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


@pytest.mark.parametrize("damage", [_truncated, _corrupted])
def test_damaged_npz_is_refused_in_one_line_naming_it(workdir: Path, damage: Any) -> None:
    good = write_npz(workdir / "good.npz", synthetic_arrays())
    bad = workdir / "bad.npz"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(GanpipeError) as error:
        download(make_params(name="local", source=str(bad))["data"])
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


@needs_shared_npz
def test_first_half_of_the_shared_npz_is_refused(workdir: Path) -> None:
    bad = workdir / "half.npz"
    bad.write_bytes(_truncated(SHARED_NPZ.read_bytes()))
    with pytest.raises(GanpipeError, match=r"half\.npz: cannot be read as \.npz"):
        download(make_params(name="local", source=str(bad))["data"])


def _without_test_labels(arrays: dict[str, np.ndarray]) -> None:
    del arrays["test_labels"]


def _float_images(arrays: dict[str, np.ndarray]) -> None:
    arrays["train_images"] = arrays["train_images"].astype(np.float32)


def _float_labels(arrays: dict[str, np.ndarray]) -> None:
    arrays["train_labels"] = arrays["train_labels"].astype(np.float32)


def _fewer_labels_than_images(arrays: dict[str, np.ndarray]) -> None:
    arrays["test_labels"] = arrays["test_labels"][:-1]


def _non_square_images(arrays: dict[str, np.ndarray]) -> None:
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = arrays[f"{split}_images"][:, :, :20]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_without_test_labels, "missing arrays test_labels"),
        (_float_images, "train_images has dtype float32, not uint8"),
        (_float_labels, "train_labels has dtype float32"),
        (_fewer_labels_than_images, r"test_labels has shape \(19, 1\); its 20 images need"),
        (_non_square_images, "train_images holds 28×20 images; only square"),
    ],
)
def test_npz_not_in_medmnist_layout_is_refused(workdir: Path, breakage: Any, message: str) -> None:
    arrays = synthetic_arrays()
    breakage(arrays)
    source = write_npz(workdir / "broken.npz", arrays)
    with pytest.raises(GanpipeError, match=rf"broken\.npz: {message}"):
        download(make_params(name="local", source=str(source))["data"])


@pytest.fixture
def register_medmnist_like() -> Iterator[Callable[..., str]]:
    """Register datasets like pathmnist's INFO entry with some fields replaced; unregister after."""
    names: list[str] = []

    def register(name: str, **info: Any) -> str:
        register_dataset(name, MedMNISTSource, info={**flags_2d()["pathmnist"], **info})
        names.append(name)
        return name

    yield register
    for name in names:
        del DATASETS[name]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep request logs out of the test output."""


@pytest.fixture
def served_npz(workdir: Path) -> Iterator[tuple[str, Path]]:
    """A synthetic npz served over HTTP on localhost: (its URL, the served file)."""
    folder = workdir / "served"
    folder.mkdir()
    served = write_npz(folder / "served.npz", synthetic_arrays())
    handler = functools.partial(QuietHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}/served.npz", served
        server.shutdown()


def test_download_over_http_verifies_md5_and_keeps_the_file(
    register_medmnist_like: Callable[..., str], served_npz: tuple[str, Path]
) -> None:
    url, served = served_npz
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    name = register_medmnist_like("served", url=url, MD5=md5, label={"0": "a", "1": "b", "2": "c"})
    download(make_params(name=name)["data"])
    raw = manifest()
    assert (raw["origin"], raw["file"], raw["verified_md5s"]) == (url, "served.npz", {"served.npz": md5})
    assert (paths.RAW_DIR / "served.npz").read_bytes() == served.read_bytes()
    assert raw["label_names"] == {"0": "a", "1": "b", "2": "c"} and raw["n_classes"] == 3


def test_download_with_wrong_md5_leaves_no_file(
    register_medmnist_like: Callable[..., str], served_npz: tuple[str, Path]
) -> None:
    name = register_medmnist_like("changed_upstream", url=served_npz[0], MD5="0" * 32)
    with pytest.raises(GanpipeError, match=r"has md5 \w+, expected 0{32}"):
        download(make_params(name=name)["data"])
    assert not list(paths.RAW_DIR.iterdir())


def test_network_failure_is_one_line_naming_the_offline_alternatives(
    register_medmnist_like: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    # pathmnist's entry with its URL on a local port nothing listens on.
    name = register_medmnist_like("unreachable", url="http://127.0.0.1:9/pathmnist.npz")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda: download(make_params(name=name)["data"]))
    assert time.monotonic() - started < 30
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("error: could not download unreachable")
    assert "data.source" in message and "data.name=digits" in message
    assert not list(paths.RAW_DIR.iterdir())  # no partial download left behind


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_resolves("zenodo.org"), reason="network present: this checks the offline failure")
def test_default_pathmnist_download_fails_fast_offline() -> None:
    started = time.monotonic()
    with pytest.raises(GanpipeError) as error:
        download(make_params()["data"])
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "pathmnist" in message and "data.source" in message and "data.name=digits" in message


def test_preprocess_without_download_says_what_to_run() -> None:
    with pytest.raises(GanpipeError, match=r"manifest\.json: not found; run `dvc repro download` first"):
        preprocess(make_params())


def test_preprocess_stage_script_runs_from_params_yaml(workdir: Path) -> None:
    params = make_params(name="digits", limit=64)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    download(params["data"])
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "preprocess.py")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(paths.PROCESSED_INFO.read_text())["n_train"] == 64
