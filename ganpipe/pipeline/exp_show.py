"""Reading `dvc exp show --json`: the pieces that both `ganpipe compare` and `ganpipe checkpoints` use."""

from __future__ import annotations

from typing import Any

# The `rev` of the workspace's own row.
WORKSPACE = "workspace"


def file_data(files: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{path: contents} for the files DVC could read; unreadable ones ({"error": ...}) are left out."""
    return {
        path: entry["data"]
        for path, entry in (files or {}).items()
        if isinstance(entry, dict) and entry.get("data")
    }
