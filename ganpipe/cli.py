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
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ganpipe` console script; user errors end in one line and exit status 1."""
    args = build_parser().parse_args(argv)
    run_stage(lambda: args.run(args))


if __name__ == "__main__":
    main()
