"""Apply each mutation that issue 32's audit found surviving (plus the data-flow holes it named) to a
scratch copy of the repository, run the tests that should catch it, and print which ones failed.

    python tools/named_mutations.py            # every mutation
    python tools/named_mutations.py gp_target  # some, by name

Not part of CI (a few minutes of CPU); the mutation score over whole modules is tools/mutation.sh.
The working tree is never modified: each mutation edits a fresh copy under a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("ganpipe", "tests", "stages", "params.yaml", "dvc.yaml", "pyproject.toml", ".dvc", ".dvcignore")

# name -> (file, exact source text, its mutant, the tests that must fail)
MUTATIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "wasserstein_generator_sign": (
        "ganpipe/gan/losses.py",
        "def wasserstein_generator(fake: torch.Tensor) -> torch.Tensor:\n    return -fake.mean()",
        "def wasserstein_generator(fake: torch.Tensor) -> torch.Tensor:\n    return fake.mean()",
        ["tests/test_losses.py"],
    ),
    "hinge_generator_sign": (
        "ganpipe/gan/losses.py",
        "def hinge_generator(fake: torch.Tensor) -> torch.Tensor:\n    return -fake.mean()",
        "def hinge_generator(fake: torch.Tensor) -> torch.Tensor:\n    return fake.mean()",
        ["tests/test_losses.py"],
    ),
    "hinge_fake_term_sign": (
        "ganpipe/gan/losses.py",
        "F.relu(1.0 + fake).mean()",
        "F.relu(1.0 - fake).mean()",
        ["tests/test_losses.py"],
    ),
    "bce_generator_saturating": (
        "ganpipe/gan/losses.py",
        "return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))",
        "return -F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))",
        ["tests/test_losses.py"],
    ),
    "least_squares_target_minus_one": (
        "ganpipe/gan/losses.py",
        "return 0.5 * ((fake - 1.0) ** 2).mean()",
        "return 0.5 * ((fake - -1.0) ** 2).mean()",
        ["tests/test_losses.py"],
    ),
    "label_smoothing_sign": (
        "ganpipe/gan/losses.py",
        "real_target = torch.full_like(real, 1.0 - smoothing)",
        "real_target = torch.full_like(real, 1.0 + smoothing)",
        ["tests/test_losses.py"],
    ),
    "gp_target_half": (
        "ganpipe/gan/losses.py",
        "return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()",
        "return ((grad.flatten(1).norm(2, dim=1) - 0.5) ** 2).mean()",
        ["tests/test_losses.py"],
    ),
    "gp_interpolation_alpha_alpha": (
        "ganpipe/gan/losses.py",
        "mixed = (alpha * real + (1 - alpha) * fake.to(real.dtype))",
        "mixed = (alpha * real + alpha * fake.to(real.dtype))",
        ["tests/test_losses.py"],
    ),
    # The other holes of the audit.
    "utility_selects_on_test": (
        "ganpipe/measure/utility.py",
        "val_images=val_images if len(val_images) else None,\n                val_labels=val_labels if",
        "val_images=test_images if len(val_images) else None,\n                val_labels=test_labels if",
        ["tests/test_utility.py::test_arms_select_on_val_and_are_tested_on_test_only"],
    ),
    "coverage_kl_reversed": (
        "ganpipe/measure/score.py",
        '"coverage_kl": float(np.sum(p * np.log(p / q))),',
        '"coverage_kl": float(np.sum(q * np.log(q / p))),',
        ["tests/test_metric_values.py"],
    ),
    "noise_floor_same_set": (
        "ganpipe/measure/score.py",
        "floor_other = rest[stratified_subset(labels[rest], num_generated, floor_rng)]",
        "floor_other = reference[stratified_subset(labels[reference], num_generated, floor_rng)]",
        ["tests/test_metric_values.py"],
    ),
    "augment_skipped_in_generator_step": (
        "ganpipe/gan/train.py",
        "fake = self.augment_generator(fake)",
        "fake = fake",
        ["tests/test_augment.py::test_generator_step_scores_augmented_fakes"],
    ),
    "lease_keeps_partial_holds": (
        "ganpipe/pipeline/leases.py",
        "        for _, fd in held:\n"
        "            os.close(fd)  # closing the last descriptor releases the flock\n",
        "",
        ["tests/test_leases.py::test_multi_gpu_lease_waits_holding_nothing_until_enough_are_free"],
    ),
}


def failing_tests(pytest_output: str) -> list[str]:
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", pytest_output, flags=re.MULTILINE)


def check(name: str, scratch: Path) -> bool:
    relative, original, mutant, tests = MUTATIONS[name]
    path = scratch / relative
    source = path.read_text()
    if source.count(original) != 1:
        print(f"{name}: the original text is not in {relative} exactly once; update this script")
        return False
    path.write_text(source.replace(original, mutant))
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(scratch), CI="1")
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-x", *tests]
        result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=900)
    finally:
        path.write_text(source)
    failed = failing_tests(result.stdout)
    killed = result.returncode != 0 and bool(failed)
    print(f"{name}: {'killed by ' + ', '.join(failed) if killed else 'SURVIVED'}", flush=True)
    return killed


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in MUTATIONS]
    if unknown:
        print(f"unknown mutations {unknown}; choose among {', '.join(MUTATIONS)}")
        return 2
    with tempfile.TemporaryDirectory(prefix="ganpipe-mutations-") as folder:
        scratch = Path(folder)
        for name in COPIED:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, scratch / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, scratch / name)
        results = [check(name, scratch) for name in names or list(MUTATIONS)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
