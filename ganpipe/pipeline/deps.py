"""The code each stage runs: the import closure of its stage script inside the ganpipe package.

One source for two lists that must never go stale: the `deps` of every stage in dvc.yaml (checked by
`python -m ganpipe.pipeline.deps` and by the test suite) and the code part of the train
stage's checkpoint key.
The closure follows every `import` statement, those inside functions included, because a lazy import
is still code the stage can run; a module that imports its package's modules by name
(`importlib.import_module`: ganpipe.gan.arch loads an architecture's file from arch.name) brings every
module of its package. Depending on exactly
the closure, rather than on the whole package, keeps a change to the plots from retraining a GAN.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
from pathlib import Path

PACKAGE = "ganpipe"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _module_file(module: str, root: Path) -> Path | None:
    """The file of a `ganpipe...` module under `root`, or None for anything outside the package."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(path.parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(parts[parts.index(PACKAGE) :]) if PACKAGE in parts else ""
                module = ".".join(filter(None, [base, node.module]))
            else:
                module = node.module or ""
            found.add(module)
            # `from ganpipe import paths` imports the submodule ganpipe.pipeline.paths.
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_import_module(node.func):
            # By name: any module of this package may be the one loaded.
            package = (
                ".".join(package_parts[package_parts.index(PACKAGE) :]) if PACKAGE in package_parts else ""
            )
            found.update(f"{package}.{sibling.stem}" for sibling in path.parent.glob("*.py") if package)
    return found


def _is_import_module(func: ast.expr) -> bool:
    """`import_module(...)` or `importlib.import_module(...)`."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "import_module"


def import_closure(script: str | Path, root: Path = REPO_ROOT) -> list[str]:
    """Repo-relative paths of the ganpipe files that `script` can import, directly or not, sorted.

    Importing `ganpipe.x.y` also runs `ganpipe/__init__.py` and `ganpipe/x/__init__.py`, so those
    are part of the closure too.
    """
    start = (root / script).resolve()
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        for module in imported_modules(path):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):  # parent packages run their __init__ first
                found = _module_file(".".join(parts[:depth]), root)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    return sorted(str(path.relative_to(root)) for path in seen if path != start)


def code_digest(script: str | Path, root: Path = REPO_ROOT) -> str:
    """sha256 over the stage script and its closure (path and bytes of each file)."""
    digest = hashlib.sha256()
    for name in [str(script), *import_closure(script, root)]:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()


def missing_deps(dvc_yaml: dict, root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """{stage: files of its script's import closure that its `deps` do not cover} for dvc.yaml.

    A dep covers a file when it names the file or a folder that holds it.
    """
    missing: dict[str, list[str]] = {}
    for name, stage in dvc_yaml.get("stages", {}).items():
        script = _stage_script(stage.get("cmd", ""))
        if script is None:
            continue
        deps = [str(dep).rstrip("/") for dep in stage.get("deps", [])]
        needed = [script, *import_closure(script, root)]
        uncovered = [f for f in needed if not any(f == d or f.startswith(d + "/") for d in deps)]
        if uncovered:
            missing[name] = uncovered
    return missing


def code_deps(script: str, root: Path = REPO_ROOT) -> list[str]:
    """The stage script and its closure, with a folder named once when the closure holds all of its
    modules (ganpipe/data), as dvc.yaml lists them."""
    closure = import_closure(script, root)
    listed: list[str] = []
    for path in closure:
        folder = str(Path(path).parent)
        modules = sorted(str(p.relative_to(root)) for p in (root / folder).glob("*.py"))
        if folder != PACKAGE and all(m in closure for m in modules):
            if folder not in listed:
                listed.append(folder)
        else:
            listed.append(path)
    return [script, *listed]


def write_code_deps(path: Path = REPO_ROOT / "dvc.yaml") -> None:
    """Rewrite the code part of every stage's deps in dvc.yaml (stages/ and ganpipe/ entries) from the
    import closures; data deps, comments and order are kept (ruamel round trip)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    document = yaml.load(path.read_text())
    for stage in document["stages"].values():
        script = _stage_script(stage.get("cmd", ""))
        if script is None:
            continue
        data = [dep for dep in stage["deps"] if not str(dep).startswith(("stages/", PACKAGE + "/"))]
        stage["deps"].clear()
        stage["deps"].extend([*code_deps(script, path.parent), *data])
    with open(path, "w") as handle:
        yaml.dump(document, handle)


def _stage_script(cmd: str) -> str | None:
    """The stage script a command runs: `python -m stages.x` (dvc.yaml's form) or `python stages/x.py`."""
    words = cmd.split()
    scripts = [word for word in words if word.startswith("stages/") and word.endswith(".py")]
    scripts += [word.replace(".", "/") + ".py" for word in words if re.fullmatch(r"stages\.\w+", word)]
    return scripts[0] if scripts else None


def main() -> None:
    """`python -m ganpipe.pipeline.deps [--write]`: list what dvc.yaml misses (exit 1), or print each stage's
    closure; `--write` first regenerates the code deps of every stage."""
    import yaml

    if "--write" in sys.argv[1:]:
        write_code_deps()
    dvc_yaml = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    missing = missing_deps(dvc_yaml)
    for stage, files in missing.items():
        print(f"dvc.yaml: stage {stage!r} misses deps {', '.join(files)}", file=sys.stderr)
    if missing:
        sys.exit(1)
    for name, stage in dvc_yaml["stages"].items():
        script = _stage_script(stage["cmd"])
        if script:
            print(f"{name}: {script} {' '.join(import_closure(script))}")


if __name__ == "__main__":
    main()
