"""Queue the results grid as DVC experiments on the MNIST npz, run it, and write docs/results.md.

Every row of docs/results.md comes from real `dvc exp run` experiments: this script clones the
repository's HEAD into a folder (`--repo`, default a new temporary one), queues the groups asked for
(`--groups`), starts `dvc queue start -j --jobs`, waits for the queue to drain, then runs
`ganpipe results` there, writing the page to `--out`, and prints a block saying which groups,
commands and machine made it (for the commit that adds the rows: the page itself is generated
whole). The rows of earlier invocations stay, even when their clone is gone (`ganpipe results
--keep-rows`).

Groups (all but `breastmnist` on ../shared/data/mnist_t10k.npz, 8,000 training images, 1 channel, 28 px,
arch.ngf = ndf = 16 so that a CPU can afford the steps, 5,000 samples scored against up to 5,000
real images, seeds 0, 1, 2 unless `--seeds` says otherwise):
- `conditional`: hinge (8,000 critic steps), unconditional and projection, with the utility stage's
  low-data arm at 1% of the real training split (80 images; at the default 10% real MNIST alone
  already matches the synthetic data, docs/utility.md);
- `augment`: hinge and dcgan (2,000 critic steps) and wgan_gp (10,000: the same 2,000 generator
  steps), without and with DiffAugment (color, translation, cutout), at data.limit 500 and on all
  8,000 images;
- `augment_wgan_gp`: the wgan_gp part of `augment` alone;
- `augment_long`: hinge and dcgan as in `augment`, at data.limit 500 only, 8,000 critic steps, with
  the domain FID about every 1,000 steps during training;
- `augment_policy`: hinge as in `augment_long`, with each DiffAugment operation alone (color,
  translation, cutout), with all three and without: which operation costs what;
- `augment_longest`: dcgan as in `augment_long`, 40,000 critic steps, the domain FID about every
  2,000: whether the unaugmented arm turns at width 16;
- `augment_wide`: hinge and dcgan as in `augment_long` with a critic four times as wide (arch.ndf 64,
  the generator still 16), 20,000 critic steps, the domain FID about every 1,000: a critic that can
  memorise 500 images, the regime DiffAugment is for;
- `augment_wide_longest`: dcgan as in `augment_wide`, 40,000 critic steps, the domain FID about every
  2,000: whether the arms part further once the wide critic's generator has turned;
- `augment_wide_target`: the issue's three losses (hinge, dcgan, wgan_gp) as in
  `augment_wide_longest`, each for 40,000 generator steps (200,000 critic steps for wgan_gp): the
  DiffAugment target's whole grid at the one setting where it paid, sized for a GPU (`--device cuda`;
  an estimated 30 to 40 hours on the 2-core CPU, two runs at a time, from the train_time_s of the
  runs so far);
- `conditional_wgan_gp`: wgan_gp (40,000 critic steps, 8,000 generator steps as in `conditional`),
  unconditional and projection, with the domain FID every 40 epochs (5,000 steps) during training;
- `conditional_wgan_gp_long`: wgan_gp projection alone at 80,000 critic steps (16,000 generator
  steps): its label accuracy was 0.92 at 40,000, short of the 0.95 the hinge model reached;
- `losses`: all five losses, unconditional and projection, 2,000 critic steps (10,000 for the two
  n_critic-5 Wasserstein models);
- `losses_rest`: the rest of the five losses' grid, at `losses`' steps: every cell of loss ×
  conditioning (none, projection) × DiffAugment (off, on) × data.limit (500, all 8,000) that
  `losses` and `augment` do not run (21 of the 40 cells);
- `losses_rerun`: the `losses` cells whose DiffAugment partner in `losses_rest` ran on another machine
  (`environment` column): hinge, lsgan, dcgan and wgan_gp projection and wgan unconditional and
  projection, again, so that each of those ratios compares runs of one machine;
- `breastmnist`: the BreastMNIST benchmark (docs/protocol.md), on ../shared/data/breastmnist.npz
  (546 training images, 1 channel, 28 px) at the default widths (64): dcgan and resnet, each at
  equal training wall time (about BREASTMNIST_TRAIN_S seconds: the critic steps come from measured
  rates), over BREASTMNIST_CELLS (hinge: unconditional and projection, DiffAugment off and on;
  wgan_gp and lsgan: unconditional, without DiffAugment), 2,000 samples against all 546 training
  images, about 80 minutes with `--jobs 2` on the 2-core CPU;
- `breastmnist_recipes`: the same benchmark under the architectures' recipes, three projection hinge
  settings (BREASTMNIST_RECIPE_CELLS) for about 550 s of training each, a generator EMA on every one,
  the domain FID every 20 epochs;
- `digits_recipes`: the offline demo's command (DIGITS_DEMO) with model=hinge, arch.name dcgan and
  resnet, on scikit-learn's digits (no ../shared/data needed).
The first two are what the 2-core CPU could afford in one session (the table's footer says which
ran); the others take hours there.

An existing `--repo` (a clone this script made before) is reused: it is fast-forwarded to this
checkout's HEAD, so new runs use today's code, and its finished experiments stay in the table
(`ganpipe results --all-commits`; the `code` column tells the commits apart), so groups can be run
one after another. `--collect` queues nothing: it waits for that clone's queue to drain and writes
the table.

    python research/results_grid.py [--groups conditional,augment] [--jobs 2] [--seeds 0,1,2] [--repo DIR]
        [--collect] [--out docs/results.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ganpipe.gan.train import numeric_environment
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.report.results import write_results

REPO = Path(__file__).resolve().parents[1]
MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist_t10k.npz"
BREASTMNIST_NPZ = REPO.parent / "shared" / "data" / "breastmnist.npz"
DIFFAUGMENT = "[color,translation,cutout]"
GROUPS = (
    "conditional",
    "augment",
    "augment_wgan_gp",
    "augment_long",
    "augment_policy",
    "augment_longest",
    "augment_wide",
    "augment_wide_longest",
    "augment_wide_target",
    "conditional_wgan_gp",
    "conditional_wgan_gp_long",
    "losses",
    "losses_rest",
    "losses_rerun",
    "breastmnist",
    "breastmnist_recipes",
    "digits_recipes",
)
LOW_DATA_FRACTION = 0.01
# (model, critic steps, conditioning modes, extra overrides) of the conditioning groups.
CONDITIONAL_GROUPS = {
    "conditional": ("hinge", 8000, ("none", "projection"), []),
    # wgan_gp takes five critic steps per generator step: 40,000 give it hinge's 8,000 generator
    # steps. Its curve is kept (plots/train/fid.tsv in each experiment) in case that is too few.
    "conditional_wgan_gp": ("wgan_gp", 40000, ("none", "projection"), ["train.eval_every=40"]),
    # Projection alone: the unconditional arm's FID ratio was settled at 40,000 (0.28x); the
    # question here is the label accuracy of a longer-trained conditional generator.
    "conditional_wgan_gp_long": ("wgan_gp", 80000, ("projection",), []),
}
AUGMENTS = ("[]", DIFFAUGMENT)
# ((model, critic steps), data.limit values, train.augment values, extra overrides) of the
# DiffAugment groups.
AUGMENT_GROUPS = {
    # wgan_gp's five critic steps per generator step: 10,000 give the others' 2,000 generator
    # steps (at 4,000 its samples were still noise in both arms, FID 640 to 700).
    "augment": ([("hinge", 2000), ("dcgan", 2000), ("wgan_gp", 10000)], ("500", "null"), AUGMENTS, []),
    "augment_wgan_gp": ([("wgan_gp", 10000)], ("500", "null"), AUGMENTS, []),
    # Four times as long (about 1,100 passes over 500 images): at 2,000 the critic had begun to
    # memorise the 500 images but the generator was not yet worse for it, so only DiffAugment's cost
    # showed. The curves say whether and when the arm without it turns. 500 images only: on all
    # 8,000 DiffAugment was within 1.1x at 2,000 steps, and the CPU affords one half of the grid.
    # The domain FID every 143 epochs: 7 steps each on 500 images, so about every 1,000 steps.
    "augment_long": ([("hinge", 8000), ("dcgan", 8000)], ("500",), AUGMENTS, ["train.eval_every=143"]),
    # augment_long cost hinge 1.7x with all three operations. Each alone says which one costs it;
    # the two arms of augment_long run again beside them so that every ratio shares one machine.
    "augment_policy": (
        [("hinge", 8000)],
        ("500",),
        ("[]", "[color]", "[translation]", "[cutout]", DIFFAUGMENT),
        ["train.eval_every=143"],
    ),
    # Five times as long as augment_long: hinge's one long seed (docs/small-datasets.md) had not
    # turned by 36,000.
    "augment_longest": ([("dcgan", 40000)], ("500",), AUGMENTS, ["train.eval_every=286"]),
    # At width 16 the unaugmented critic memorised the 500 images without hurting its generator (to
    # 40,000 steps for dcgan). A 64-wide critic has the capacity to; the curve says when it turns.
    "augment_wide": (
        [("hinge", 20000), ("dcgan", 20000)],
        ("500",),
        AUGMENTS,
        ["arch.ndf=64", "train.eval_every=143"],
    ),
    # augment_wide's unaugmented dcgan curves bottomed near step 13,000 and rose; the augmented ones
    # still fell at 20,000. Twice as long says where each arm ends up.
    "augment_wide_longest": ([("dcgan", 40000)], ("500",), AUGMENTS, ["arch.ndf=64", "train.eval_every=286"]),
    # The target's three losses where dcgan's arms parted (0.20x at 40,000 steps, seed 0). wgan_gp's
    # five critic steps per generator step: 200,000 give the others' 40,000 generator steps.
    "augment_wide_target": (
        [("hinge", 40000), ("dcgan", 40000), ("wgan_gp", 200000)],
        ("500",),
        AUGMENTS,
        ["arch.ndf=64", "train.eval_every=286"],
    ),
}
FIVE_LOSSES = {"wgan": 10000, "wgan_gp": 10000, "lsgan": 2000, "dcgan": 2000, "hinge": 2000}
CONDITIONING = ("none", "projection")
# (model, conditioning) of `losses_rerun`: losses ran on the first machine, losses_rest on a second,
# whose CPU alone moves a three-seed domain FID by 1-4% (docs/reproducibility.md, "Same code,
# another environment").
LOSSES_RERUN = {
    ("hinge", "projection"),
    ("lsgan", "projection"),
    ("dcgan", "projection"),
    ("wgan_gp", "projection"),
    ("wgan", "none"),
    ("wgan", "projection"),
}


# The BreastMNIST benchmark (docs/protocol.md): architectures compared at equal training wall
# time. Every run trains for about BREASTMNIST_TRAIN_S seconds: its critic steps are that times the
# rate of its (arch.name, model, DiffAugment on), in critic steps per second, measured with 120-step
# train-only runs on the 2-core AMD EPYC (no bf16), two at a time on one torch thread each, as the
# queue runs them. Conditioning costs little beside the nets and is not told apart.
BREASTMNIST_TRAIN_S = 150
BREASTMNIST_RATES = {
    ("dcgan", "hinge", False): 2.42,
    ("dcgan", "hinge", True): 2.41,
    ("dcgan", "wgan_gp", False): 2.68,
    ("dcgan", "lsgan", False): 2.13,
    ("resnet", "hinge", False): 1.40,
    ("resnet", "hinge", True): 1.47,
    ("resnet", "wgan_gp", False): 1.24,
    ("resnet", "lsgan", False): 1.53,
}
# (model, conditioning, DiffAugment on) of every BreastMNIST cell, each for both architectures and
# every seed. The SNGAN recipe (hinge) is the full factorial; wgan_gp and lsgan run unconditional and
# without DiffAugment only: their projection and DiffAugment cells (12 of the 24) are left out to fit
# the grid into 90 minutes of the 2-core CPU with 3 seeds on every row.
BREASTMNIST_CELLS = (
    *(("hinge", mode, augment) for mode in CONDITIONING for augment in (False, True)),
    ("wgan_gp", "none", False),
    ("lsgan", "none", False),
)


def breastmnist_steps(arch: str, model: str, augment: bool, seconds: float = BREASTMNIST_TRAIN_S) -> int:
    """The critic steps of a BreastMNIST run: `seconds` of training at its measured rate."""
    return max(10, round(seconds * BREASTMNIST_RATES[(arch, model, augment)] / 10) * 10)


# The BreastMNIST grid under the architectures' recipes (#38): three projection hinge settings, each
# for about 550 s of training (under the 10 minutes the benchmark allows; steps from the rates
# measured on the 2-core CPU: resnet 0.34 s a step, dcgan 0.24 s), with a generator EMA (decay 0.999)
# on every one so that the FID curve shows the EMA's gain on 3 seeds, and the domain FID every 20
# epochs (160 steps on 546 images) for the FID-against-time curves. (arch, DiffAugment, overrides,
# critic steps):
# - resnet on its recipe (params.yaml recipes.resnet.hinge);
# - dcgan on the seeds' recipe (the model's own settings) and resnet, each with DiffAugment and
#   LeCam (lecam_lambda 0.3, the paper's), the small-data regularisers.
# Plain dcgan (no DiffAugment) was left out to fit the 90 minutes: a run took about 13 minutes of
# wall time with its other stages, two at a time. Its 150 s rows (360 steps) stay in the table.
# The recipes set no EMA, so models.hinge.ema_decay reaches both architectures.
BREASTMNIST_RECIPE_EMA = "models.hinge.ema_decay=0.999"
BREASTMNIST_RECIPE_LECAM = "models.hinge.lecam_lambda=0.3"
BREASTMNIST_RECIPE_CELLS = (
    ("resnet", False, [], 1600),
    ("dcgan", True, [BREASTMNIST_RECIPE_LECAM], 2200),
    ("resnet", True, [BREASTMNIST_RECIPE_LECAM], 1500),
)
# The digits acceptance run of #38: the offline demo's command (README) with the hinge model, once
# per architecture, one seed. max_steps 880 is the demo's 40 epochs (22 steps of 64 of 1,437 images).
DIGITS_DEMO = [
    "data.name=digits",
    "data.channels=1",
    "model=hinge",
    "train.epochs=40",
    "train.eval_every=10",
    "sample.num_samples=2000",
    "score.num_real=1437",
]


def common_overrides(seeds: str, device: str = "cpu", group: str = "") -> list[str]:
    if group == "digits_recipes":
        return [*DIGITS_DEMO, f"train.device={device}", "seed=0"]  # one seed per architecture
    if group in ("breastmnist", "breastmnist_recipes"):
        # All 546 training images as the reference, 2,000 generated. One utility seed per run: the
        # row's spread is then over the GANs' seeds. The export only as large as the real splits.
        return [
            "data.name=breastmnist",
            f"data.source={BREASTMNIST_NPZ}",
            "data.channels=1",
            "data.image_size=28",
            "train.epochs=100000",  # max_steps decides the length
            f"train.device={device}",
            "sample.num_samples=2000",
            "score.num_real=2000",
            "utility.seeds=1",
            "export.num_train=546",
            "export.num_val=78",
            "export.num_test=156",
            f"seed={seeds}",
        ]
    return [
        "data.name=local",
        f"data.source={MNIST_NPZ}",
        "data.channels=1",
        "data.image_size=28",
        "arch.ngf=16",
        "arch.ndf=16",
        "train.epochs=100000",  # max_steps decides the length
        f"train.device={device}",
        "sample.num_samples=5000",
        "score.num_real=5000",
        f"seed={seeds}",
    ]


def merged_overrides(common: list[str], group: list[str]) -> list[str]:
    """`common` then `group` as `-S key=value` overrides; a key in both takes the group's value, once."""
    values = dict(override.split("=", 1) for override in common)
    values.update(override.split("=", 1) for override in group)
    return [f"{key}={value}" for key, value in values.items()]


def group_runs(group: str) -> list[tuple[int, list[str]]]:
    """(critic steps, other -S overrides) of each queued command of a group (a grid over the seeds)."""
    runs: list[tuple[int, list[str]]] = []
    if group in CONDITIONAL_GROUPS:
        model, steps, modes, extra = CONDITIONAL_GROUPS[group]
        for mode in modes:
            runs.append(
                (
                    steps,
                    [
                        f"model={model}",
                        f"models.{model}.conditional={mode}",
                        f"utility.low_data_fraction={LOW_DATA_FRACTION}",
                        *extra,
                    ],
                )
            )
    elif group in AUGMENT_GROUPS:
        models, limits, augments, extra = AUGMENT_GROUPS[group]
        for limit in limits:
            for model, steps in models:
                for augment in augments:
                    overrides = [f"model={model}", f"train.augment={augment}", f"data.limit={limit}"]
                    runs.append((steps, [*overrides, *extra]))
    elif group in ("losses", "losses_rerun"):
        for model, steps in FIVE_LOSSES.items():
            for mode in CONDITIONING:
                if group == "losses" or (model, mode) in LOSSES_RERUN:
                    runs.append((steps, [f"model={model}", f"models.{model}.conditional={mode}"]))
    elif group == "losses_rest":
        # The cells `losses` and `augment` ran already, as (model, conditioning, augment, limit).
        augment_models, augment_limits, augment_values, _ = AUGMENT_GROUPS["augment"]
        ran = {(model, mode, "[]", "null") for model in FIVE_LOSSES for mode in CONDITIONING}
        ran |= {
            (model, "none", augment, limit)
            for model, _ in augment_models
            for augment in augment_values
            for limit in augment_limits
        }
        for model, steps in FIVE_LOSSES.items():
            for mode in CONDITIONING:
                for augment in AUGMENTS:
                    for limit in ("500", "null"):
                        if (model, mode, augment, limit) not in ran:
                            runs.append(
                                (
                                    steps,
                                    [
                                        f"model={model}",
                                        f"models.{model}.conditional={mode}",
                                        f"train.augment={augment}",
                                        f"data.limit={limit}",
                                    ],
                                )
                            )
    elif group == "breastmnist":
        for arch in ("dcgan", "resnet"):
            for model, mode, augment in BREASTMNIST_CELLS:
                overrides = [
                    f"arch.name={arch}",
                    f"model={model}",
                    f"models.{model}.conditional={mode}",
                    f"train.augment={DIFFAUGMENT if augment else '[]'}",
                ]
                runs.append((breastmnist_steps(arch, model, augment), overrides))
    elif group == "breastmnist_recipes":
        for arch, augment, extra, steps in BREASTMNIST_RECIPE_CELLS:
            overrides = [
                f"arch.name={arch}",
                "model=hinge",
                "models.hinge.conditional=projection",
                f"train.augment={DIFFAUGMENT if augment else '[]'}",
                "train.eval_every=20",
                BREASTMNIST_RECIPE_EMA,
                *extra,
            ]
            runs.append((steps, overrides))
    elif group == "digits_recipes":
        runs += [(880, [f"arch.name={arch}"]) for arch in ("dcgan", "resnet")]
    else:
        raise SystemExit(f"unknown group {group!r}; use {', '.join(GROUPS)}")
    return runs


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def start_workers(repo: Path, jobs: int, env: dict[str, str]) -> None:
    # The workers inherit its stdout: with captured pipes the call would last the whole queue.
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_queue(repo: Path, jobs: int, env: dict[str, str], poll_s: float = 30.0, retries: int = 5) -> str:
    """Block until no experiment is queued or running; the final `dvc queue status` table.

    `dvc queue status` now and then fails while a task changes state (it reads a half-written file:
    "Expecting value: line 1 column 1"); the queue itself is fine, so a failed poll is retried.
    A queue that stalls, tasks queued and none running on two polls in a row, gets `jobs` new
    workers: workers have quit with tasks left (.dvc/tmp/exps/celery/dvc-exp-worker-*.out): in a
    reused clone, on "Got shutdown from remote" as they took their first task (most likely a
    shutdown an earlier run's `dvc queue stop` left in the broker), and on that same JSONDecodeError.
    The "Worker status" line is no guide: it read "0 active, 0 idle" with three tasks running.
    """
    failures, stalled_polls = 0, 0
    while True:
        done = subprocess.run(["dvc", "queue", "status"], cwd=repo, capture_output=True, text=True)
        if done.returncode != 0:
            failures += 1
            if failures > retries:
                raise SystemExit(f"dvc queue status failed {failures} times in a row:\n{done.stderr}")
            time.sleep(poll_s)
            continue
        failures, status = 0, done.stdout
        # The state is a column of its own, the last one where the table has no other after it.
        states = [line.split()[-1] for line in status.splitlines() if line.split()]
        queued, running = states.count("Queued"), states.count("Running")
        now = time.strftime("%H:%M:%S")
        print(f"{now} queue: {queued} queued, {running} running", file=sys.stderr, flush=True)
        if not queued and not running:
            return status
        stalled_polls = stalled_polls + 1 if queued and not running else 0
        if stalled_polls == 2:
            print(
                f"{now} queue: stalled, no task running; starting {jobs} workers", file=sys.stderr, flush=True
            )
            start_workers(repo, jobs, env)
            stalled_polls = 0
        time.sleep(poll_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="conditional,augment")
    parser.add_argument("--jobs", type=int, default=2, help="experiments at once (dvc queue start -j)")
    parser.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds, each a run of every setting (default 0,1,2)"
    )
    parser.add_argument("--repo", type=Path, help="the clone to run in (default: a new temporary one)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="train.device of every run (default cpu; sample and score take a visible GPU)",
    )
    parser.add_argument(
        "--collect", action="store_true", help="queue nothing: wait for --repo's queue, then write the table"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args()
    groups = args.groups.split(",")
    needed = {BREASTMNIST_NPZ if group.startswith("breastmnist") else MNIST_NPZ for group in groups}
    for npz in needed - ({MNIST_NPZ} if groups == ["digits_recipes"] else set()):
        if not npz.exists():
            raise SystemExit(f"{npz} not found: the groups asked for run on it (../shared/data)")
    repo = args.repo or Path(tempfile.mkdtemp(prefix="ganpipe-results-")) / "repo"
    if args.collect and not (repo / ".dvc").exists():
        raise SystemExit("--collect needs --repo: a clone this script queued runs in")
    if not (repo / ".dvc").exists():
        run(["git", "clone", "--quiet", str(REPO), str(repo)], REPO.parent)
    elif not args.collect:
        run(["git", "pull", "--quiet", "--ff-only", str(REPO), "HEAD"], repo)
    # The clone's own ganpipe, not the editable install's checkout (which may have moved on since);
    # no progress bars in the queue logs.
    env = dict(os.environ, CI="1", PYTHONPATH=str(repo.resolve()))
    threads = ""
    if args.jobs > 1:
        env["OMP_NUM_THREADS"] = "1"  # each experiment's stages on one thread: no oversubscription
        # numeric_environment below, in this process, then names the experiments' thread count.
        torch.set_num_threads(1)
        threads = ", one torch thread per experiment"
    # train.device=cpu keeps training on the CPU even then; sample and score take a visible GPU.
    gpu = "a GPU visible to sample and score" if torch.cuda.is_available() else "no GPU"
    start = time.perf_counter()
    commands = []
    queued = [(steps, overrides, group) for group in groups for steps, overrides in group_runs(group)]
    # Shortest first (DVC's queue is first in, first out): a cut-short grid still has whole rows.
    queued.sort(key=lambda steps_overrides_group: steps_overrides_group[0])
    for steps, overrides, group in queued:
        command = ["dvc", "exp", "run", "--queue"]
        own = [*overrides, f"train.max_steps={steps}"]
        for override in merged_overrides(common_overrides(args.seeds, args.device, group), own):
            command += ["-S", override]
        if not args.collect:
            run(command, repo, env)
        shown = shlex.join(command)
        for npz in (MNIST_NPZ, BREASTMNIST_NPZ):
            shown = shown.replace(str(npz), f"../shared/data/{npz.name}")
        commands.append(shown)
    if not args.collect:
        start_workers(repo, args.jobs, env)
    status = wait_for_queue(repo, args.jobs, env)
    run(["dvc", "queue", "stop"], repo, env)  # its workers stay up, idle, until told to stop
    failed = [line for line in status.splitlines() if "Failed" in line.split()]
    # This checkout's `ganpipe results`, in this process, not the clone's: an older clone's (with
    # --collect) lacks what this one writes. (`python -m ganpipe.cli` run in the clone imported the
    # clone's package, its folder first on sys.path, whatever PYTHONPATH said.) keep_rows: the file's
    # rows run in other clones (an earlier invocation's temporary one) stay.
    try:
        write_results(args.out.resolve(), all_commits=True, keep_rows=True, repo=repo)
    except GanpipeError as error:
        raise SystemExit(f"ganpipe results in {repo}: {error}") from None
    minutes = (time.perf_counter() - start) / 60
    wall = "wall time not measured (--collect)" if args.collect else f"{minutes:.0f} min wall"
    code = run(["git", "rev-parse", "--short=7", "HEAD"], repo).strip()  # the rows' `code` column
    block = [
        f"The `{code}` rows: `python research/results_grid.py --groups {args.groups} --jobs {args.jobs} "
        f"--seeds {args.seeds}` "
        f"on {time.strftime('%Y-%m-%d')}: {len(commands)} queued grids of seeds {args.seeds}, {wall}, on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores and {gpu} (`train.device={args.device}`, "
        f"`dvc queue start -j {args.jobs}`{threads}; {numeric_environment(torch.device(args.device))}).",
        "",
        "```bash",
        *commands,
        f"dvc queue start -j {args.jobs}",
        "ganpipe results --all-commits --keep-rows",
        "```",
    ]
    if failed:
        block += ["", "Failed experiments (`dvc queue logs <name>`):", ""]
        block += [f"- `{line.strip()}`" for line in failed]
    # The page is generated whole (table, environments, protocol): how this invocation went is for
    # the commit that adds its rows, so it is printed, not written into the page.
    print("\n".join(block))
    print(f"wrote {args.out} from {repo}; {len(failed)} failed; {minutes:.1f} min")


if __name__ == "__main__":
    main()
