"""The docs: README's size and links, the generated params page, and the worked examples of
docs/extending.md, run from the page's own code blocks so that the page cannot drift from the code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

import ganpipe.data
import ganpipe.data.base
from ganpipe import params_doc
from ganpipe.config import load_params, validate
from ganpipe.gan.catalog import LOSS_OPTIONS
from ganpipe.pipeline.errors import GanpipeError, ParamsError
from ganpipe.pipeline.params import PARAMS_FILE

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXTENDING = REPO / "docs" / "extending.md"
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def relative_links(markdown: Path) -> list[str]:
    """Every link target of a Markdown file that points into the repository (no URL, no anchor),
    leaving out code, where a link is only an example."""
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown.read_text()))
    targets = LINK.findall(prose)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


MARKDOWN = ["README.md", "CONTRIBUTING.md", "benchmarks/README.md"]
MARKDOWN += sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))


@pytest.mark.parametrize("markdown", MARKDOWN)
def test_every_relative_link_points_at_an_existing_file(markdown: str) -> None:
    path = REPO / markdown
    links = relative_links(path)
    missing = [link for link in links if not (path.parent / link).exists()]
    assert not missing, f"{markdown} links to missing files: {missing}"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:40])
    assert "pip install -r requirements.txt -c constraints.txt && dvc repro" in head
    assert "python -m pytest -q" in head
    # No dated figure up front: dates belong to the performance and results pages.
    assert not re.search(r"20\d\d-\d\d-\d\d", head)
    assert len(relative_links(README)) >= 10  # the guides are linked, so the link test has teeth


def test_readme_keeps_the_offline_demo_command_verbatim() -> None:
    demo = (
        "dvc exp run -S data.name=digits -S data.channels=1 -S model=dcgan -S train.epochs=40 "
        "-S train.eval_every=10 -S sample.num_samples=2000 -S score.num_real=1437"
    )
    assert demo in README.read_text()


# --- the generated params reference ------------------------------------------------------------


def test_params_page_is_what_the_generator_writes_now() -> None:
    written = (REPO / "docs" / "params.md").read_text()
    current = params_doc.render((REPO / PARAMS_FILE).read_text())
    assert written == current, "docs/params.md is stale: run python -m ganpipe.params_doc --write"


def test_params_page_has_a_row_for_every_schema_key() -> None:
    page = (REPO / "docs" / "params.md").read_text()
    keys = [key for key, _ in params_doc.leaf_keys(params_doc.sections((REPO / PARAMS_FILE).read_text()))]
    assert "models.<name>.gp_every" in keys and "score.weights" in keys
    missing = [key for key in keys if f"| `{key}` |" not in page]
    assert not missing


def test_params_page_generator_refuses_a_key_without_a_comment() -> None:
    text = (REPO / PARAMS_FILE).read_text()
    undocumented = text.replace("  # Passes over the training split.\n", "")
    assert undocumented != text
    with pytest.raises(GanpipeError, match=r"train\.epochs"):
        params_doc.render(undocumented)


def test_params_page_generator_imports_no_torch() -> None:
    code = (
        "import sys, pathlib; from ganpipe import params_doc; "
        "params_doc.render(pathlib.Path('params.yaml').read_text()); "
        "print(','.join(m for m in ('torch', 'torchvision', 'torch_fidelity') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- docs/extending.md: its code blocks, run ---------------------------------------------------


def code_block(heading: str, first_line: str) -> str:
    """The fenced block of docs/extending.md under `## heading` whose first line is `first_line`."""
    section = EXTENDING.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    for _, body in FENCE.findall(section):
        head, _, rest = body.partition("\n")
        if head == first_line:
            return rest
    raise AssertionError(f"docs/extending.md, {heading!r}: no code block starting {first_line!r}")


@pytest.fixture
def repo_params() -> dict:
    return load_params(REPO / PARAMS_FILE)


def test_the_new_loss_example_registers_and_validates(monkeypatch, repo_params) -> None:
    import torch
    import torch.nn.functional as F

    from ganpipe.gan import losses

    # Step 1, the catalog entry, under a temporary name of the catalog.
    entry = ast.literal_eval(
        "{" + code_block("A new loss", "# ganpipe/gan/catalog.py, an entry of LOSS_OPTIONS") + "}"
    )
    ((name, options),) = entry.items()
    assert name not in LOSS_OPTIONS
    monkeypatch.setitem(LOSS_OPTIONS, name, options)
    # Step 2, the code, registered into a copy of the registry that the test throws away.
    monkeypatch.setattr(losses, "LOSSES", dict(losses.LOSSES))
    namespace = {"torch": torch, "F": F, "register_loss": losses.register_loss}
    exec(code_block("A new loss", "# ganpipe/gan/losses.py"), namespace)
    loss = losses.LOSSES[name]
    with pytest.raises(ValueError, match="already registered"):
        losses.register_loss(name, loss.critic, loss.generator)
    # The page says it is dcgan's BCE written another way: check it, on scores of both signs.
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, generator=generator) * 3, torch.randn(64, generator=generator) * 3
    torch.testing.assert_close(loss.critic(real, fake, 0.0), losses.bce_critic(real, fake, 0.0))
    torch.testing.assert_close(loss.generator(fake), losses.bce_generator(fake))
    # Step 3, the model entry: params validation accepts it and applies the catalog's options.
    models = yaml.safe_load(code_block("A new loss", "# params.yaml, under models:"))
    repo_params["models"].update(models)
    repo_params["model"] = name
    validate(repo_params)
    repo_params["models"][name]["label_smoothing"] = 0.1
    with pytest.raises(ParamsError, match=rf"models\.{name}\.label_smoothing"):
        validate(repo_params)


def test_the_new_dataset_example_downloads_through_the_registry(monkeypatch, tmp_path, repo_params) -> None:
    module = types.ModuleType("ganpipe.data.stripes")
    exec(code_block("A new dataset source", "# ganpipe/data/stripes.py"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    registry = dict(ganpipe.data.base.DATASETS)
    monkeypatch.setattr(ganpipe.data.base, "DATASETS", registry)
    monkeypatch.setattr(ganpipe.data, "DATASETS", registry)
    exec(
        code_block("A new dataset source", "# ganpipe/data/__init__.py"),
        {"register_dataset": ganpipe.data.register_dataset},
    )
    with pytest.raises(ValueError, match="already registered"):
        ganpipe.data.register_dataset("stripes", module.StripesSource)

    repo_params["data"]["name"] = "stripes"
    validate(repo_params)
    monkeypatch.chdir(tmp_path)
    ganpipe.data.download(repo_params["data"])
    with np.load(tmp_path / "data" / "raw" / "stripes.npz") as npz:
        images, labels = npz["train_images"], npz["train_labels"][:, 0]
        assert len(images) + len(npz["test_images"]) == module.STRIPES_COUNT
    assert images.shape[1:] == (28, 28) and set(np.unique(labels)) == {0, 1}
    horizontal, vertical = images[labels == 0].astype(int), images[labels == 1].astype(int)
    assert np.all(np.ptp(horizontal, axis=2) == 0) and np.all(np.ptp(horizontal, axis=1) == 255)
    assert np.all(np.ptp(vertical, axis=1) == 0) and np.all(np.ptp(vertical, axis=2) == 255)


def test_the_new_extractor_example_fits_torch_fidelity_and_validates(monkeypatch, repo_params) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from ganpipe.measure.extractors import EXTRACTORS, Extractor

    extractor = eval(
        code_block("A new feature extractor", "# ganpipe/measure/extractors.py, an entry of EXTRACTORS"),
        {"Extractor": Extractor},
    )
    assert extractor.key not in EXTRACTORS
    torch_fidelity_class = FEATURE_EXTRACTORS_REGISTRY[extractor.name]
    assert extractor.feature_layer in torch_fidelity_class.get_provided_features_list()
    assert extractor.prefix == "vgg16_"
    monkeypatch.setitem(EXTRACTORS, extractor.key, extractor)
    weights = yaml.safe_load(code_block("A new feature extractor", "# params.yaml, under score.weights:"))
    repo_params["score"]["weights"].update(weights)
    repo_params["score"]["extractors"] = ["domain", extractor.key]
    validate(repo_params)
