"""The package's floors: no module imports from a layer above its own.

From the ground up: pipeline (plumbing: paths, io, params machinery, streams, images) < data
(sources, preprocessing) < gan (networks, losses, training, sampling) < measure (classifier,
features, scores, utility, privacy) < report (figures, compare, results) < sweep (experiment grids
on the local queue or Ray, driving dvc as a subprocess) < the composition on top:
ganpipe/config.py, ganpipe/params_doc.py, ganpipe/cli.py and stages/. The GAN layer sits below the
measuring one: training is handed its FID during training (stages/train.py passes
ganpipe.measure.score.domain_fid), and the privacy audit reads the trained critic through
ganpipe.gan.models. Every import counts, those inside functions too, as for the stages' DVC deps.
"""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

from ganpipe.pipeline.deps import PACKAGE, imported_modules

LAYERS = ("pipeline", "data", "gan", "measure", "report", "sweep")
TOP = len(LAYERS)  # ganpipe/*.py and stages/: above every layer


def layer(module: str) -> int | None:
    """The floor of a `ganpipe...` module, or None for anything else (and the bare package)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else TOP


def module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def upward_imports(root: Path) -> list[str]:
    """'file: imports module (layer above)' for every import from a higher layer under root/ganpipe."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        own = layer(module_name(path, root))
        for module in sorted(imported_modules(path)):
            target = layer(module)
            if own is not None and target is not None and target > own:
                names = [*LAYERS, "top"]
                found.append(f"{path.relative_to(root)}: imports {module} ({names[target]} > {names[own]})")
    return found


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward_imports(REPO) == []


def test_every_package_folder_has_a_layer() -> None:
    folders = {path.parent.relative_to(REPO / PACKAGE).parts[0] for path in (REPO / PACKAGE).rglob("*/*.py")}
    assert folders <= set(LAYERS), folders - set(LAYERS)


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The check itself: a lazy import of the report layer from the data layer, and a relative one
    from the GAN layer into the measuring one, are both named."""
    for name, text in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/x.py": "def f():\n    from ganpipe.report.images import make_grid\n",
        "gan/__init__.py": "",
        "gan/y.py": "from ..measure import score\nfrom ganpipe.pipeline import paths\n",
        "measure/__init__.py": "",
        "measure/score.py": "from ganpipe.gan.y import z\n",
    }.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    found = upward_imports(tmp_path)
    assert found == [
        "ganpipe/data/x.py: imports ganpipe.report.images (report > data)",
        "ganpipe/data/x.py: imports ganpipe.report.images.make_grid (report > data)",
        "ganpipe/gan/y.py: imports ganpipe.measure (measure > gan)",
        "ganpipe/gan/y.py: imports ganpipe.measure.score (measure > gan)",
    ]
