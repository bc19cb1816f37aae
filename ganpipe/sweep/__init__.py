"""`ganpipe sweep`: one sweep, on this machine's DVC queue or as Ray tasks on a cluster.

- `plan`: the trials of a sweep (DVC's own -S sweep expansion times --seeds), their names and the
  resources each asks for; the checks a Ray sweep needs before it starts. No Ray import.
- `local`: `--engine local`, today's queue (`dvc exp run --queue`, `dvc queue start -j N`).
- `ray_engine`: `--engine ray`, one Ray task per trial, each a `dvc exp run` in a clean clone,
  pushed back through the git and DVC remotes and pulled by the driver.

Plumbing like ganpipe.pipeline: it shells out to git and dvc and imports nothing from data, gan,
measure or report.
"""
