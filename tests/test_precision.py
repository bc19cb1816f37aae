"""train.precision: the bf16 capability check, and bf16 training that stays exact and keeps fp32 state.

This project's test machines may lack bf16 arithmetic, so the capability is simulated (training.py's
simulate_cpu_flags, bf16_cpu_site): torch then runs the same bf16 autocast by emulation, slowly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_params
from training import (
    BF16_CPU_FLAGS,
    TRAIN_OUTPUTS,
    assert_resume_after_kill_is_bit_identical,
    bf16_cpu_site,
    simulate_cpu_flags,
    train_in,
)

from ganpipe.config import validate
from ganpipe.data.labels import class_prior
from ganpipe.gan.models import generator_from_checkpoint, to_uint8
from ganpipe.gan.sample import sample
from ganpipe.gan.train import Run, Steps
from ganpipe.pipeline import paths, precision
from ganpipe.pipeline.errors import ParamsError
from ganpipe.pipeline.io import load_torch
from ganpipe.pipeline.processed import read_split
from ganpipe.pipeline.streams import torch_generator

# The flags line of a Zen 1 EPYC (this project's first CPU machines), trimmed, and what is added to it.
ZEN1_FLAGS = "fpu sse2 avx avx2 fma sha_ni"


@pytest.mark.parametrize(
    ("flags", "support"),
    [
        (ZEN1_FLAGS, "none"),
        (f"{ZEN1_FLAGS} avx512f avx512_bf16", "avx512_bf16"),  # AMD Zen 4, Intel Cooper Lake
        (f"{ZEN1_FLAGS} avx512f avx512_bf16 amx_bf16 amx_tile", "amx"),  # Intel Sapphire Rapids
        (None, "none"),  # no /proc/cpuinfo (not Linux)
    ],
)
def test_cpu_bf16_support_reads_the_flags_of_proc_cpuinfo(
    flags: str | None, support: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert precision.cpu_bf16_support() == support


def test_bf16_on_a_cpu_without_bf16_is_refused_in_one_line(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cpu_flags(monkeypatch, frozenset(ZEN1_FLAGS.split()))
    params = validate(tiny_params(train__precision="bf16"))
    with pytest.raises(ParamsError) as refused:
        train_in(tmp_path, processed_digits(1, 28), params)
    message = str(refused.value)
    assert "\n" not in message
    assert "train.precision = 'bf16'" in message and "neither AMX-BF16 nor AVX512-BF16" in message
    assert "set train.precision=fp32" in message and "or on a GPU" in message
    assert not (tmp_path / paths.TRAIN_DIR).exists()  # refused before training


def test_bf16_steps_keep_fp32_master_weights_and_optimizer_state(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cpu_flags(monkeypatch, BF16_CPU_FLAGS)
    monkeypatch.chdir(processed_digits(1, 28).parent.parent)
    params = validate(tiny_params(model="wgan_gp", train__precision="bf16"))
    params["models"]["wgan_gp"]["ema_decay"] = 0.9
    device = torch.device("cpu")
    images, labels = (torch.from_numpy(array) for array in read_split(paths.PROCESSED_TRAIN))
    run = Run(params, device, 1, 28, class_prior(labels.numpy(), 10))
    steps = Steps(run, params, images, labels)
    for _ in range(params["models"]["wgan_gp"]["n_critic"]):
        steps.critic_step(torch.arange(params["train"]["batch_size"]))
        run.step += 1
    steps.generator_step()

    with steps.autocast:  # the autocast is on: the critic computes in bf16 ...
        assert run.critic(torch.zeros(2, 1, 28, 28), None)[0].dtype == torch.bfloat16
    # ... while every weight, buffer and optimizer moment stays fp32, and the penalty is fp32.
    for module in (run.generator, run.critic, run.ema):
        assert {t.dtype for t in module.state_dict().values() if t.is_floating_point()} == {torch.float32}
    for optimizer in (run.opt_d, run.opt_g):
        moments = [t for state in optimizer.state.values() for k, t in state.items() if k != "step"]
        assert moments and {t.dtype for t in moments} == {torch.float32}
    assert run.penalty.dtype == torch.float32 and float(run.penalty) > 0
    assert all(np.isfinite(steps.read_losses()[:4]))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_bf16_reruns_are_bit_identical_and_differ_from_fp32(
    arch: str, processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cpu_flags(monkeypatch, BF16_CPU_FLAGS)
    processed = processed_digits(1, 28)
    bf16 = validate(
        tiny_params(model="hinge", arch__name=arch, train__precision="bf16", train__augment=["translation"])
    )
    bf16["models"]["hinge"]["conditional"] = "projection"
    first = train_in(tmp_path / "a", processed, bf16)
    train_in(tmp_path / "b", processed, bf16)
    fp32 = {**bf16, "train": {**bf16["train"], "precision": "fp32"}}
    fp32_metrics = train_in(tmp_path / "fp32", processed, fp32)

    for output in TRAIN_OUTPUTS:
        assert (tmp_path / "a" / output).read_bytes() == (tmp_path / "b" / output).read_bytes(), output
    # The bf16 run is not an fp32 run: rounding moved its weights.
    assert (tmp_path / "a" / paths.CRITIC).read_bytes() != (tmp_path / "fp32" / paths.CRITIC).read_bytes()
    assert (first["precision"], first["cpu_bf16"]) == ("bf16", "amx")
    assert first["environment"].endswith(", bf16 autocast (amx)")
    assert fp32_metrics["precision"] == "fp32" and "bf16" not in fp32_metrics["environment"]


def test_sampling_for_scores_runs_the_bf16_trained_generator_in_fp32(
    processed_digits: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_cpu_flags(monkeypatch, BF16_CPU_FLAGS)
    params = validate(tiny_params(model="lsgan", train__precision="bf16", train__max_steps=4))
    train_in(tmp_path, processed_digits(1, 28), params)
    monkeypatch.chdir(tmp_path)
    sample(params)

    checkpoint = load_torch(paths.GENERATOR)
    assert {t.dtype for t in checkpoint["state_dict"].values() if t.is_floating_point()} == {torch.float32}
    generator = generator_from_checkpoint(checkpoint).eval()
    count, nz = 8, params["arch"]["nz"]
    noise = torch.randn(
        params["sample"]["num_samples"], nz, generator=torch_generator(params["seed"], "sample.noise")
    )
    with torch.no_grad():  # sample.noise's first draws, through the plain fp32 forward
        expected = to_uint8(generator(noise[:count])).numpy()
    with np.load(paths.SAMPLES) as samples:
        np.testing.assert_array_equal(samples["images"][:count], expected)


def test_bf16_resume_after_kill_is_bit_identical(
    processed_digits: Callable[..., Path], tmp_path: Path
) -> None:
    """Under bf16 every state-keeping feature resumes exactly: the lazy penalty, DiffAugment,
    conditioning, dropout and EMA (as test_train's fp32 check, at a smaller size: bf16 is emulated here)."""
    params = tiny_params(
        model="wgan_gp",
        train__precision="bf16",
        train__epochs=3,
        train__checkpoint_every=4,
        train__augment=["color", "translation", "cutout"],
    )
    params["models"]["wgan_gp"].update(conditional="projection", gp_every=3, dropout_d=0.2, ema_decay=0.95)
    site = bf16_cpu_site(tmp_path / "site")
    outputs = (*TRAIN_OUTPUTS, paths.GENERATOR_EMA)
    assert_resume_after_kill_is_bit_identical(tmp_path, processed_digits(1, 28), params, outputs, (site,))


def test_bf16_trains_data_parallel_on_gloo(processed_digits: Callable[..., Path], tmp_path: Path) -> None:
    """Two gloo ranks under bf16: the ranks all-reduce fp32 gradients of the fp32 master weights.

    On the ResNet nets (channels_last weights, batch norm, spectral norm): test_ddp covers DCGAN's.
    """
    shutil.copytree(processed_digits(1, 28), tmp_path / paths.PROCESSED_DIR)
    params = tiny_params(
        model="wgan_gp", arch__name="resnet", train__precision="bf16", train__world_size=2, train__max_steps=5
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    site = bf16_cpu_site(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(site), str(REPO))), CI="1")
    subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py")],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    metrics = json.loads((tmp_path / paths.TRAIN_METRICS).read_text())
    assert (metrics["precision"], metrics["steps"]) == ("bf16", 5)
    critic = torch.load(tmp_path / paths.CRITIC, weights_only=True)
    assert critic["config"]["arch"] == "resnet"
    weights = [t for t in critic["state_dict"].values() if t.is_floating_point()]
    assert {t.dtype for t in weights} == {torch.float32} and all(bool(t.isfinite().all()) for t in weights)
