"""The `ganpipe` command: helpers around the DVC pipeline (the pipeline itself runs with dvc)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ganpipe.pipeline import paths
from ganpipe.pipeline.stage import run_stage


def _compare(args: argparse.Namespace) -> None:
    from ganpipe.report.compare import compare  # matplotlib and pandas load only when needed

    written, table = compare(Path(args.out), all_commits=args.all_commits)
    print(f"{len(table)} experiments compared; wrote {', '.join(str(path) for path in written)}")


def _results(args: argparse.Namespace) -> None:
    from ganpipe.report.results import write_results

    written, rows = write_results(Path(args.out), all_commits=args.all_commits, keep_rows=args.keep_rows)
    print(f"{len(rows)} settings; wrote {written}")


def _checkpoints(args: argparse.Namespace) -> None:
    from ganpipe.config import load_params, validate
    from ganpipe.gan import inventory
    from ganpipe.report.compare import run_exp_show

    load_params()  # a missing or broken params.yaml says so in one line, before dvc is asked
    found = inventory.list_checkpoints(inventory.settings_from_exp_show(run_exp_show(), validate))
    for entry in found:
        print(
            f"{entry.state:<9}  {inventory.human_size(entry.size):>8}  {inventory.human_age(entry.age_s):>6}"
            f"  {entry.folder}  {entry.why}"
        )
    stale = [entry for entry in found if entry.state == inventory.STALE]
    stale_size = inventory.human_size(sum(entry.size for entry in stale))
    folders = f"{len(found)} checkpoint folder{'' if len(found) == 1 else 's'}"
    total = f"{folders}, {inventory.human_size(sum(entry.size for entry in found))}"
    if args.prune:
        removed = inventory.prune(stale)
        print(f"{total}; removed {len(removed)} stale ({inventory.human_size(sum(e.size for e in removed))})")
    elif stale:
        print(f"{total}; {len(stale)} stale ({stale_size}): `ganpipe checkpoints --prune` removes them")
    else:
        print(f"{total}; none stale")


def _sweep(args: argparse.Namespace) -> None:
    from ganpipe.pipeline.errors import GanpipeError
    from ganpipe.sweep import plan

    repo = Path.cwd()
    ray_only = {
        "--address": args.address,
        "--remote": args.remote,
        "--checkpoints": args.checkpoints,
        "--work-dir": args.work_dir,
        "--cpus-per-trial": args.cpus_per_trial,
        "--max-retries": args.max_retries,
    }
    if args.engine == "local":
        given = [flag for flag, value in ray_only.items() if value is not None]
        if given:
            raise GanpipeError(f"{given[0]} is for --engine ray; drop it, or add --engine ray")
        from ganpipe.sweep import local

        local.queue(repo, args.set_param, args.seeds, args.targets, args.jobs or 1)
        return
    if args.jobs is not None:
        raise GanpipeError(
            "-j is for --engine local; Ray runs as many trials at once as the cluster has room for "
            "(set --cpus-per-trial)"
        )
    remote = args.remote or "origin"
    cpus = 1.0 if args.cpus_per_trial is None else args.cpus_per_trial
    retries = 3 if args.max_retries is None else args.max_retries
    if cpus <= 0 or retries < 0:
        flag = "--cpus-per-trial" if cpus <= 0 else "--max-retries"
        raise GanpipeError(f"{flag} must be {'above' if flag == '--cpus-per-trial' else 'at least'} 0")
    from ganpipe.sweep import ray_engine

    sha, url = plan.check_repo(repo, remote)
    trials = plan.plan(repo, args.set_param, args.seeds, args.targets)
    default = plan.resolved_params(repo, ())["train"]["checkpoint_dir"]
    options = ray_engine.Options(
        address=args.address,
        remote=remote,
        checkpoints=Path(args.checkpoints).resolve() if args.checkpoints else repo / default,
        work_dir=args.work_dir or "",
        cpus=cpus,
        max_retries=retries,
    )
    ray_engine.sweep(repo, trials, args.targets, sha, url, options)


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run a sweep: on this machine's DVC queue (--engine local) or as Ray tasks (--engine ray)",
        description="Run every combination of the -S values (DVC's sweep syntax, as `dvc exp run --queue`) "
        "and --seeds. --engine local queues them and starts `dvc queue start -j N`, as ever. --engine ray "
        "runs each as a Ray task: `dvc exp run` in a clean clone of the git remote at HEAD, pushed to the "
        "git and DVC remotes and pulled here, so `dvc exp show` and `ganpipe compare` list it "
        "(docs/scaling-out.md). Run it in the repository root.",
    )
    sweep.add_argument("targets", nargs="*", help="stages to run, as for dvc exp run (default: all)")
    sweep.add_argument(
        "-S",
        "--set-param",
        action="append",
        default=[],
        metavar="[FILE:]KEY=V1,V2",
        help="a param and its values, as `dvc exp run --queue -S` takes them; repeat for a grid",
    )
    sweep.add_argument(
        "--seeds", help="comma-separated seeds, one trial per seed: --seeds 0,1,2 (-S seed=0,1,2)"
    )
    sweep.add_argument("--engine", choices=("local", "ray"), default="local", help="default: %(default)s")
    sweep.add_argument(
        "-j", "--jobs", type=int, help="local: experiments at once (dvc queue start -j; default 1)"
    )
    sweep.add_argument(
        "--address",
        help="ray: the cluster's head (HOST:PORT, as `ray start --head` prints it); default RAY_ADDRESS, "
        "else a new local cluster on this machine",
    )
    sweep.add_argument(
        "--remote",
        help="ray: the git remote the workers clone and push to (default: origin)",
    )
    sweep.add_argument(
        "--checkpoints",
        help="ray: the checkpoint folder every node shares, at the same path, so a retried trial resumes "
        "(default: this repo's train.checkpoint_dir, shared on one machine only)",
    )
    sweep.add_argument(
        "--work-dir", help="ray: where each node clones the trials (default: <tmp>/ganpipe-sweep)"
    )
    sweep.add_argument("--cpus-per-trial", type=float, help="ray: num_cpus per task (default: 1)")
    sweep.add_argument(
        "--max-retries",
        type=int,
        help="ray: reruns of a trial whose worker died, each from its checkpoint (default: 3)",
    )
    sweep.set_defaults(run=_sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    compare = commands.add_parser(
        "compare",
        help="tabulate and chart every experiment of this repo (from dvc exp show --json)",
        description="Write OUT/comparison.md (one row per finished experiment: params and metrics) and "
        "OUT/comparison.png (FID and IS, one bar per setting: runs that differ only in seed pool, "
        "error bar = their std). Run it in the repository root after `dvc exp run` or `dvc queue start`.",
    )
    compare.add_argument("--out", default=str(paths.REPORTS), help="output folder (default: %(default)s)")
    compare.add_argument(
        "--all-commits",
        action="store_true",
        help="include experiments based on every commit, not only on HEAD",
    )
    compare.set_defaults(run=_compare)
    results = commands.add_parser(
        "results",
        help="the results table: one row per setting, mean ± std over seeds (from dvc exp show --json)",
        description="Write OUT (default docs/results.md): experiments that differ only in seed form one "
        "row with domain FID and its noise floor, held-out FID, label accuracy, TSTR ratio, the low-data "
        "arms and training time, mean ± std; then the environments and the protocol.",
    )
    results.add_argument("--out", default="docs/results.md", help="output file (default: %(default)s)")
    results.add_argument(
        "--all-commits",
        action="store_true",
        help="include experiments based on every commit, not only on HEAD",
    )
    results.add_argument(
        "--keep-rows",
        action="store_true",
        help="keep OUT's rows of settings that have no experiment here (runs made in "
        "another clone); settings that have experiments here are rewritten. With no experiment "
        "here, OUT is rewritten from its own rows",
    )
    results.set_defaults(run=_results)
    checkpoints = commands.add_parser(
        "checkpoints",
        help="list the resumable training checkpoints with size and age; --prune removes the stale ones",
        description="List every checkpoint folder of train.checkpoint_dir (params.yaml's and each "
        "experiment's) with its size, its age and its state: resumable (a setting of params.yaml or of "
        "an experiment in `dvc exp show` trains it with the current code), in use (a run holds its "
        "lock) or stale (no setting or the code no longer gives its key; it can never be resumed). "
        "Run it in the repository root.",
    )
    checkpoints.add_argument("--prune", action="store_true", help="delete the stale checkpoint folders")
    checkpoints.set_defaults(run=_checkpoints)
    _add_sweep(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ganpipe` console script; user errors end in one line and exit status 1."""
    args = build_parser().parse_args(argv)
    run_stage(lambda: args.run(args))


if __name__ == "__main__":
    main()
