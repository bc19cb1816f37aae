"""Training precision (`train.precision`): whether the hardware has bf16 arithmetic, and the autocast.

bf16 pays only where the hardware computes in it: a GPU with bf16 tensor cores, or an x86 CPU with
AMX-BF16 (Intel Sapphire Rapids and later) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4), whose
oneDNN kernels run bf16 convolutions and matmuls. Elsewhere torch still runs bf16 autocast,
through its slow reference convolutions, which on a Zen 1 EPYC made a hinge iteration about 14x
slower than fp32 (docs/precision.md); so a CPU without bf16 arithmetic is refused in one line
instead of training slowly and, with other rounding, silently differently.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganpipe.pipeline.errors import ParamsError

CPUINFO = Path("/proc/cpuinfo")
# The CPU's bf16 support as train.json records it, best first, with the /proc/cpuinfo flag that shows it.
CPU_BF16_FLAGS = (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"))


def cpu_flags() -> frozenset[str]:
    """The feature flags of the first processor in /proc/cpuinfo; empty where there is no such file."""
    try:
        text = CPUINFO.read_text()
    except OSError:  # not Linux: no flags to read, so no bf16 claimed
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_support() -> str:
    """`amx`, `avx512_bf16` or `none`: the best bf16 arithmetic this CPU has, as /proc/cpuinfo says."""
    flags = cpu_flags()
    return next((support for support, flag in CPU_BF16_FLAGS if flag in flags), "none")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse `train.precision: bf16` in one line where `device` has no bf16 arithmetic."""
    if precision == "fp32":
        return
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ParamsError(
                f"params.yaml: train.precision = 'bf16' but {torch.cuda.get_device_name(device)} has no "
                "bf16 arithmetic; set train.precision=fp32, or train on a GPU with bf16 (Ampere or later)"
            )
        return
    if cpu_bf16_support() == "none":
        raise ParamsError(
            "params.yaml: train.precision = 'bf16' needs bf16 arithmetic, but this CPU has neither "
            "AMX-BF16 nor AVX512-BF16 (no amx_bf16 or avx512_bf16 in /proc/cpuinfo); set "
            "train.precision=fp32, or train on a CPU with AMX-BF16 or AVX512-BF16, or on a GPU"
        )
    if not torch.backends.mkldnn.is_available():  # oneDNN holds the CPU's bf16 kernels
        raise ParamsError(
            "params.yaml: train.precision = 'bf16' on the CPU needs torch built with oneDNN "
            "(torch.backends.mkldnn), and this build has none; set train.precision=fp32, or install "
            "the standard torch wheel"
        )


def autocast(precision: str, device: torch.device, cache_enabled: bool = True) -> torch.autocast:
    """The autocast region of the training forwards: bf16 under `precision` bf16, else a no-op.

    `cache_enabled=False` inside CUDA graphs: the autocast weight cache would be captured stale.
    """
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=cache_enabled
    )
