"""The stage scripts, run by dvc.yaml as modules (`python -m stages.train`): a regular package, so
that no other installed `stages` can shadow it."""
