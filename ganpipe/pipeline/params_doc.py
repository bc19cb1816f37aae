"""Generate docs/params.md, the params reference, from SCHEMA and the comments in params.yaml.

`python -m ganpipe.pipeline.params_doc --write` rewrites the page; a test fails when the committed
page differs from what this module renders now, so the reference cannot go stale. Each key's
"allowed" column is the text its check puts in its error message (the `allowed` attribute that
ganpipe.pipeline.params attaches), its description is the comment above it in params.yaml, and its
default is its value there. Like params validation, this imports no torch.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from ganpipe.gan.catalog import LOSS_OPTIONS
from ganpipe.pipeline.deps import REPO_ROOT
from ganpipe.pipeline.errors import GanpipeError
from ganpipe.pipeline.params import MODEL_SCHEMA, PARAMS_FILE, SCHEMA

PAGE = REPO_ROOT / "docs" / "params.md"
MODELS = "models"
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")


def _registry_allowed() -> dict[str, str]:
    """Keys whose check is a plain `string` (or none) because they are checked against a registry."""
    from ganpipe.data import DATASETS
    from ganpipe.measure.extractors import DOMAIN, EXTRACTORS

    downloadable = [key for key, extractor in EXTRACTORS.items() if extractor.weights_url]
    return {
        "model": "a key of `models`",
        "data.name": "one of " + ", ".join(sorted(DATASETS)),
        f"{MODELS}.<name>.loss": "one of " + ", ".join(sorted(LOSS_OPTIONS)),
        "score.extractors": f"a list of distinct names among {', '.join(EXTRACTORS)}; must hold {DOMAIN}",
        "score.weights": "a mapping of " + ", ".join(downloadable) + " to a local weights file or null",
    }


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
        if len(path) == 3 and path[0] == MODELS:
            path[1] = "<name>"
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
    if parts[0] == MODELS and len(parts) == 3:
        per_model = {name: cfg[parts[2]] for name, cfg in params[MODELS].items()}
        if len({repr(value) for value in per_model.values()}) == 1:
            return _inline(next(iter(per_model.values())))
        return "; ".join(f"{name}: {_inline(value)}" for name, value in per_model.items())
    value: Any = params
    for part in parts:
        value = value[part]
    if isinstance(value, dict):
        return "; ".join(f"{name}: {_inline(item)}" for name, item in value.items()) or "`{}`"
    return _inline(value)


def leaf_keys(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, check) for every key of a schema, model options as `models.<name>.<option>`."""
    keys: list[tuple[str, Any]] = []
    for key, check in schema.items():
        name = f"{prefix}{key}"
        if key == MODELS and not prefix:
            keys += [(f"{MODELS}.<name>.{option}", c) for option, c in MODEL_SCHEMA.items()]
        elif isinstance(check, dict):
            keys += leaf_keys(check, f"{name}.")
        else:
            keys.append((name, check))
    return keys


def rows(params_text: str) -> list[Row]:
    """One row per SCHEMA key; refuses a key whose comment is missing from params.yaml."""
    params = yaml.safe_load(params_text)
    comments = comments_by_key(params_text)
    registry = _registry_allowed()
    table, undocumented = [], []
    for key, check in leaf_keys(SCHEMA):
        if key not in comments:
            undocumented.append(key)
            continue
        allowed = registry.get(key) or check.allowed
        table.append(Row(key, _default(key, params), allowed, comments[key]))
    if undocumented:
        raise GanpipeError(
            f"{PARAMS_FILE}: no comment above {', '.join(undocumented)}; add one saying what the key does, "
            "then rerun python -m ganpipe.pipeline.params_doc --write"
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
        "<!-- Generated by `python -m ganpipe.pipeline.params_doc --write` from SCHEMA in",
        "ganpipe/pipeline/params.py and the comments in params.yaml; edit those, not this page. -->",
        "",
        "Every key is required, and `dvc exp run -S key=value` overrides any of them. Each stage checks",
        "the whole file before it touches an output: a bad value stops it with one line naming the key,",
        "the value and what is allowed (the *allowed* column), with exit status 2.",
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
