"""Generate docs/params.md, the params reference, from every layer's schema and the comments in
params.yaml.

`python -m ganpipe.params_doc --write` rewrites the page; a test fails when the committed
page differs from what this module renders now, so the reference cannot go stale. Each key's
"allowed" column is the text its check puts in its error message (the `allowed` attribute that
ganpipe.pipeline.params attaches, or the text its layer's Schema.allowed gives for a key checked
against a registry), its description is the comment above it in params.yaml, and its
default is its value there. Like params validation, this imports no torch.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from ganpipe.config import SCHEMAS
from ganpipe.pipeline.deps import REPO_ROOT
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.params import PARAMS_FILE, Schema

PAGE = REPO_ROOT / "docs" / "params.md"
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")
# Entries of a mapping of named settings (`models.wgan.lr_g`) are documented once, as `models.<name>.lr_g`.
ENTRY = "<name>"


def _entries(schemas: tuple[Schema, ...] = SCHEMAS) -> dict[str, dict[str, Any]]:
    return {key: entry for schema in schemas for key, entry in schema.entries.items()}


def _registry_allowed(schemas: tuple[Schema, ...] = SCHEMAS) -> dict[str, str]:
    """Keys whose check is a plain `string` (or none) because they are checked against a registry."""
    return {key: text for schema in schemas for key, text in schema.allowed.items()}


def comments_by_key(text: str) -> dict[str, str]:
    """The comment block right above each key of params.yaml, keyed by its dotted path.

    A model option's comment is filed under `models.<name>.<option>` whichever model entry carries
    it, so one comment documents the option for every model.
    """
    comments: dict[str, str] = {}
    pending: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:
            pending = []  # a blank line or a list item ends a comment block
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match["key"]]
        if len(path) == 3 and path[0] in _entries():
            path[1] = ENTRY
        dotted = ".".join(path)
        if pending and dotted not in comments:
            comments[dotted] = " ".join(pending)
        pending = []
        stack.append((indent, match["key"]))
    return comments


@dataclass(frozen=True)
class Row:
    key: str
    default: str
    allowed: str
    meaning: str


def _inline(value: Any) -> str:
    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return "`" + flow.strip().removesuffix("...").strip() + "`"


def _default(key: str, params: dict[str, Any]) -> str:
    parts = key.split(".")
    if parts[0] in _entries() and len(parts) == 3:
        per_model = {name: cfg[parts[2]] for name, cfg in params[parts[0]].items()}
        if len({repr(value) for value in per_model.values()}) == 1:
            return _inline(next(iter(per_model.values())))
        return "; ".join(f"{name}: {_inline(value)}" for name, value in per_model.items())
    value: Any = params
    for part in parts:
        value = value[part]
    if isinstance(value, dict):
        return "; ".join(f"{name}: {_inline(item)}" for name, item in value.items()) or "`{}`"
    return _inline(value)


def sections(params_text: str, schemas: tuple[Schema, ...] = SCHEMAS) -> dict[str, Any]:
    """Every layer's sections in one mapping, in the order of params.yaml's top-level keys."""
    merged = {key: check for schema in schemas for key, check in schema.sections.items()}
    order = list(yaml.safe_load(params_text) or {})
    return dict(
        sorted(merged.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    )


def leaf_keys(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, check) for every key of a schema, model options as `models.<name>.<option>`."""
    keys: list[tuple[str, Any]] = []
    entries = _entries()
    for key, check in schema.items():
        name = f"{prefix}{key}"
        if key in entries and not prefix:
            keys += [(f"{key}.{ENTRY}.{option}", c) for option, c in entries[key].items()]
        elif isinstance(check, dict):
            keys += leaf_keys(check, f"{name}.")
        else:
            keys.append((name, check))
    return keys


def rows(params_text: str) -> list[Row]:
    """One row per schema key; refuses a key whose comment is missing from params.yaml."""
    params = yaml.safe_load(params_text)
    comments = comments_by_key(params_text)
    registry = _registry_allowed()
    table, undocumented = [], []
    for key, check in leaf_keys(sections(params_text)):
        if key not in comments:
            undocumented.append(key)
            continue
        allowed = registry.get(key) or check.allowed
        table.append(Row(key, _default(key, params), allowed, comments[key]))
    if undocumented:
        raise GanpipeError(
            f"{PARAMS_FILE}: no comment above {', '.join(undocumented)}; add one saying what the key does, "
            "then rerun python -m ganpipe.params_doc --write"
        )
    return table


def _cell(text: str) -> str:
    # Plain text from comments and checks: `<class name>` must not read as an HTML tag.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render(params_text: str) -> str:
    """The whole params page as Markdown."""
    comments = comments_by_key(params_text)
    lines = [
        "# Params reference",
        "",
        "<!-- Generated by `python -m ganpipe.params_doc --write` from the schemas of",
        "ganpipe/pipeline/params.py, ganpipe/data/schema.py, ganpipe/gan/schema.py and",
        "ganpipe/measure/schema.py and the comments in params.yaml; edit those, not this page. -->",
        "",
        "Every key is required, and `dvc exp run -S key=value` overrides any of them. Each stage checks",
        "the file before it touches an output: a bad value stops it with one line naming the key,",
        "the value and what is allowed (the *allowed* column), with exit status 2. From the classifier",
        "stage on, every stage checks the whole file; download, preprocess and plots check the",
        "sections of the layers they run (`seed`, `data`, and for download the measuring sections).",
        "`models.<name>` stands for every entry under `models:`; `model` picks the one to train.",
    ]
    section = None
    for row in rows(params_text):
        top = row.key.split(".")[0] if "." in row.key else ""
        if top != section:
            section = top
            lines += ["", f"## {f'`{top}`' if top else 'Top level'}", ""]
            if top in comments:
                lines += [comments[top], ""]
            lines += ["| key | default | allowed | what it does |", "|---|---|---|---|"]
        lines.append(f"| `{row.key}` | {row.default} | {_cell(row.allowed)} | {_cell(row.meaning)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE} (default: print it)")
    args = parser.parse_args(argv)
    try:
        page = render((REPO_ROOT / PARAMS_FILE).read_text())
    except GanpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.write:
        PAGE.write_text(page)
        print(f"wrote {PAGE.relative_to(REPO_ROOT)}")
    else:
        print(page, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
