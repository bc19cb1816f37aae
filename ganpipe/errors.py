"""User-facing errors: each is reported as one line, never as a traceback."""


class GanpipeError(Exception):
    """A problem the user can fix (bad data, missing file, no network). Exit status 1."""

    exit_code = 1


class ParamsError(GanpipeError):
    """A bad value in params.yaml. Exit status 2."""

    exit_code = 2
