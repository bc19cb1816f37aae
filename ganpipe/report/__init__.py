"""Reporting: figures, image grids, `ganpipe compare` and `ganpipe results`."""
