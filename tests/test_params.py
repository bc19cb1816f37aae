"""Bad params.yaml values: every stage that checks them refuses them in one line, exit status 2,
outputs untouched. From the classifier on a stage checks the whole file; download, preprocess and
plots check the sections of the layers they run (ganpipe.config)."""

from __future__ import annotations

import hashlib
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, set_params, tiny_params

from ganpipe.gan.catalog import LOSS_OPTIONS

# The stages that check the whole file, and those that check their layers' sections only, with the
# sections they check (the top level: seed, and a file that is no YAML).
STAGES = ("classifier", "reference", "train", "sample", "score")
PARTIAL_STAGES = {
    "download": ("seed", "data", "score", "params"),
    "preprocess": ("seed", "data", "params"),
    "plots": ("seed", "data", "params"),
}
# Earlier outputs that a refused stage must leave exactly as they were.
SENTINELS = {
    "data/processed/train.npz": b"earlier processed data",
    "data/train/generator.pt": b"earlier weights",
    "metrics/train.json": b'{"loss_g": 1.0}\n',
    "metrics/scores.json": b'{"fid": 12.5}\n',
    "plots/train/losses.tsv": b"step\tepoch\n",
}


def _delete(key: str):
    def mutate(params: dict[str, Any]) -> None:
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        del node[leaf]

    return mutate


def _add(key: str, value: Any):
    return lambda params: set_params(params, {key: value})


# (case id, mutation of the params mapping or raw YAML text, fragments the one-line message must hold)
CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("unknown top-level key", _add("foo", 1), ("unknown key 'foo'", "allowed keys")),
    ("typo in nested key", lambda p: p["train"].update(epoch=3), ("unknown key 'train.epoch'",)),
    ("missing key", _delete("train.batch_size"), ("missing key 'train.batch_size'",)),
    ("zero epochs", _add("train.epochs", 0), ("train.epochs = 0", "integer >= 1")),
    ("epochs as text", _add("train.epochs", "five"), ("train.epochs = 'five'", "integer")),
    ("fractional batch size", _add("train.batch_size", 1.5), ("train.batch_size = 1.5",)),
    ("unknown model", _add("model", "stylegan"), ("model = 'stylegan'", "wgan_gp")),
    ("unknown dataset", _add("data.name", "cifar10"), ("data.name = 'cifar10'", "pathmnist", "digits")),
    ("unsupported size", _add("data.image_size", 32), ("data.image_size = 32", "28, 64, 128, 224")),
    ("bad channel count", _add("data.channels", 2), ("data.channels = 2", "1, 3")),
    (
        "missing source file",
        _add("data.source", "missing/file.npz"),
        ("data.source", "missing/file.npz", "no such file"),
    ),
    ("local without source", _add("data.name", "local"), ("data.name = 'local'", "data.source")),
    ("negative learning rate", _add("models.wgan.lr_d", -1.0), ("models.wgan.lr_d = -1.0",)),
    (
        "betas of length one",
        _add("models.wgan_gp.betas", [0.5]),
        ("models.wgan_gp.betas = [0.5]", "two numbers"),
    ),
    (
        "unknown optimizer",
        _add("models.wgan.optimizer", "adagrad"),
        ("models.wgan.optimizer = 'adagrad'", "adam, rmsprop, sgd"),
    ),
    (
        "clipping with hinge",
        _add("models.hinge.clip", 0.01),
        ("models.hinge.clip = 0.01", "no sense with loss 'hinge'"),
    ),
    (
        "clipping with gradient penalty",
        _add("models.wgan_gp.clip", 0.01),
        ("models.wgan_gp.clip = 0.01", "gp_lambda"),
    ),
    (
        "label smoothing with wasserstein",
        _add("models.wgan.label_smoothing", 0.1),
        ("models.wgan.label_smoothing = 0.1", "no sense with loss 'wasserstein'"),
    ),
    (
        "unknown loss",
        _add("models.dcgan.loss", "nonexistent"),
        ("models.dcgan.loss = 'nonexistent'", "hinge"),
    ),
    ("unknown device", _add("train.device", "tpu"), ("train.device = 'tpu'", "auto, cpu, cuda")),
    ("negative seed", _add("seed", -1), ("seed = -1",)),
    (
        "missing extractor weights",
        _add("score.weights.inception", "nope.pth"),
        ("score.weights.inception", "no such file"),
    ),
    (
        "unknown extractor",
        _add("score.extractors", ["domain", "dinov3"]),
        ("score.extractors", "'dinov3'", "inception", "dinov2-vit-s-14"),
    ),
    (
        "extractors without domain",
        _add("score.extractors", ["inception"]),
        ("score.extractors", "lacks 'domain'", "add it back"),
    ),
    ("boolean as text", _add("train.compile", "yes"), ("train.compile = 'yes'", "true or false")),
    ("unknown precision", _add("train.precision", "fp16"), ("train.precision = 'fp16'", "fp32, bf16")),
    ("the replaced bf16 key", _add("train.bf16", True), ("'train.bf16' was replaced", "train.precision")),
    ("dropout of one", _add("models.lsgan.dropout_d", 1.0), ("models.lsgan.dropout_d = 1.0",)),
    ("no samples", _add("sample.num_samples", 0), ("sample.num_samples = 0",)),
    ("zero critic steps", _add("models.wgan.n_critic", 0), ("models.wgan.n_critic = 0",)),
    ("tiny limit", _add("data.limit", 5), ("data.limit = 5", "integer >= 16")),
    (
        "class names for a source that publishes its own",
        _add("data.label_names", ["normal", "pneumonia"]),
        ("data.label_names", "'local' only", "set data.label_names to null"),
    ),
    (
        "repeated class names",
        _add("data.label_names", ["normal", "normal"]),
        ("data.label_names = ['normal', 'normal']", "distinct class names"),
    ),
    (
        "class names for labels that do not start at 0",
        _add("data.label_names", {1: "normal", 2: "pneumonia"}),
        ("data.label_names = {1: 'normal', 2: 'pneumonia'}", "mapping {0: name, 1: name, ...}"),
    ),
    ("EMA decay of one", _add("models.wgan.ema_decay", 1.0), ("models.wgan.ema_decay = 1.0",)),
    (
        "clipping with spectral norm",
        lambda p: p["models"]["wgan"].update(spectral_norm_d=True),
        ("models.wgan.clip", "spectral_norm_d"),
    ),
    ("broken YAML", "model: [unclosed\n", ("params.yaml", "not valid YAML")),
]


def _digest(root: Path) -> dict[str, str]:
    return {name: hashlib.md5((root / name).read_bytes()).hexdigest() for name in SENTINELS}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, content in SENTINELS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _section(fragments: tuple[str, ...]) -> str:
    """The section a case's message names first: `data` for 'data.image_size = 32', `params` for a
    file that is no YAML."""
    return re.match(r"(?:unknown key |missing key )?'?([a-z_]+)", fragments[0])[1]


# (case index, stage): every case on one whole-file stage in turn, and on each partial stage that
# checks its section.
RUNS = [(index, STAGES[index % len(STAGES)]) for index in range(len(CASES))] + [
    (index, stage)
    for index, (_, _, fragments) in enumerate(CASES)
    for stage, sections in PARTIAL_STAGES.items()
    if _section(fragments) in sections
]


@pytest.mark.parametrize(("index", "stage"), RUNS, ids=[f"{CASES[i][0]}-{stage}" for i, stage in RUNS])
def test_bad_params_refused_in_one_line(
    index: int, stage: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, mutation, fragments = CASES[index]
    if isinstance(mutation, str):
        (workdir / "params.yaml").write_text(mutation)
    else:
        params = tiny_params()
        mutation(params)
        (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = _digest(workdir)

    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="__main__")

    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert _digest(workdir) == before
    assert not list(workdir.rglob("*.tmp"))


def test_shell_exit_status_is_2(workdir: Path) -> None:
    params = tiny_params(train__epochs=-3)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: params.yaml: train.epochs = -3 is not allowed; expected an integer >= 1"
    )


def test_every_partial_stage_gets_cases() -> None:
    assert {stage for _, stage in RUNS} == set(STAGES) | set(PARTIAL_STAGES)
    download = {_section(CASES[i][2]) for i, stage in RUNS if stage == "download"}
    assert download == {"seed", "data", "score", "params"}


def test_repo_params_are_valid() -> None:
    from ganpipe.config import load_params

    params = load_params(REPO / "params.yaml")
    assert params["model"] in params["models"]


def test_load_params_imports_no_torch() -> None:
    """Every stage validates params first; download, preprocess and plots must not pay torch's import
    (about 2 s a process) or depend on the GAN code through it."""
    probe = (
        "import sys; from ganpipe.config import load_params; load_params(); "
        "print(','.join(m for m in ('torch', 'torchvision', 'torch_fidelity') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"load_params() imported {result.stdout.strip()}"


def test_loss_registry_refuses_a_name_taken_or_unlisted() -> None:
    from ganpipe.gan.losses import LOSSES, register_loss

    before = dict(LOSSES)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("hinge", LOSSES["wasserstein"].critic, LOSSES["wasserstein"].generator)
    with pytest.raises(ValueError, match="add 'my_loss' to LOSS_OPTIONS"):
        register_loss("my_loss", LOSSES["hinge"].critic, LOSSES["hinge"].generator)
    assert before == LOSSES  # the hinge formulas are still hinge's
    assert set(LOSSES) == set(LOSS_OPTIONS)  # every listed loss has code, and no code is unlisted
