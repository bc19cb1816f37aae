"""The `plots:` section of dvc.yaml, rendered by `dvc plots show` / `dvc plots diff` and opened in a real
browser (headless Chromium) with no network.

DVC's default page loads vega, vega-lite and vega-embed from a CDN: offline, every chart stays blank
("vegaEmbed is not defined"). The repo's .dvc/plots/offline.html inlines them; these tests render a
temporary DVC repo holding synthetic plot files, this repo's `plots:` section and that template.
The browser tests skip when chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, dvc, run
from PIL import Image
from synthetic_run import write_class_histogram, write_dcr_histogram, write_fid, write_losses

from ganpipe.pipeline import paths

TEMPLATE = Path(".dvc") / "plots" / "offline.html"  # relative to a repo root
TEMPLATE_SETTING = "plots/offline.html"  # plots.html_template is relative to .dvc/
VEGA_PLOTS = ("losses", "wasserstein", "fid", "class_frequencies", "dcr_histogram")
IMAGE_PLOTS = (
    paths.REAL_GRID,
    paths.SAMPLE_GRID,
    paths.UTILITY_FIGURE,
    paths.FIGURES / "losses.png",
    paths.FIGURES / "fid.png",
    paths.COPY_GALLERY,
    paths.DCR_HISTOGRAM_PNG,
)
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")


def git(repo: Path, *args: str) -> None:
    run(["git", "-c", "user.name=ganpipe tests", "-c", "user.email=ci@ganpipe.invalid", *args], repo)


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def initialized_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo with this repo's `plots:` section, the offline template and synthetic plot data."""
    repo = tmp_path_factory.mktemp("plots_repo")
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    (repo / TEMPLATE).parent.mkdir()
    shutil.copy(REPO / TEMPLATE, repo / TEMPLATE)
    with open(repo / ".dvc" / "config", "a") as config:
        config.write(f"[core]\n    analytics = false\n[plots]\n    html_template = {TEMPLATE_SETTING}\n")
    plots_section = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots_section}, sort_keys=False))
    write_losses(repo)
    write_fid(repo, epochs=5)
    write_class_histogram(repo)
    write_dcr_histogram(repo)
    for seed, path in enumerate(IMAGE_PLOTS):
        write_png(repo / path, seed)
    return repo


@pytest.fixture()
def plots_repo(initialized_repo: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's repo, for a test to change."""
    return Path(shutil.copytree(initialized_repo, tmp_path / "repo", symlinks=True))


def plots_json(repo: Path, *args: str) -> dict:
    return json.loads(dvc(repo, "plots", *args, "--json").stdout)


def test_offline_template_loads_nothing_from_the_network():
    page = (REPO / TEMPLATE).read_text(encoding="utf8")

    assert "<script src" not in page and "cdn." not in page
    # DVC fills these by plain text replacement: each once, and no scripts placeholder (it would
    # bring the CDN tags back).
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1
    assert "{scripts}" not in page
    for library in ("vega@5", "vega-lite@5", "vega-embed@6"):
        assert f"/* {library}" in page


def test_repo_dvc_config_selects_the_offline_template():
    assert dvc(REPO, "config", "plots.html_template").stdout.strip() == TEMPLATE_SETTING


def test_plots_show_finds_every_plot(plots_repo):
    shown = plots_json(plots_repo, "show")

    assert not shown.get("errors")
    for name in VEGA_PLOTS:
        assert [plot["type"] for plot in shown["data"][name]] == ["vega"], name
    for path in IMAGE_PLOTS:
        assert [plot["type"] for plot in shown["data"][path.as_posix()]] == ["image"], path


def test_plots_diff_shows_both_revisions(plots_repo):
    write_fid(plots_repo, epochs=0)  # committed with FID during training off: header only
    git(plots_repo, "add", "-A")
    git(plots_repo, "commit", "-q", "-m", "baseline")
    write_fid(plots_repo, epochs=5)
    write_losses(plots_repo, steps=900)

    diff = plots_json(plots_repo, "diff", "HEAD")

    assert not diff.get("errors")
    for name in ("losses", "wasserstein", "class_frequencies"):
        assert [sorted(plot["revisions"]) for plot in diff["data"][name]] == [["HEAD", "workspace"]], name
    assert [plot["revisions"] for plot in diff["data"]["fid"]] == [["workspace"]]  # no rows at HEAD


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a file: URL; --virtual-time-budget lets the page's scripts finish first."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=180, check=True
    )


def console_errors(log: str) -> list[str]:
    """Console messages that are errors: uncaught exceptions and vega's ERROR log lines."""
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    return [line for line in console if "Uncaught" in line or "ERROR" in line or "Error:" in line]


@needs_chromium
def test_plots_render_offline_in_chromium(plots_repo, tmp_path):
    dvc(plots_repo, "plots", "show", "-o", "rendered")
    page = plots_repo / "rendered" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf8")

    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    screenshot = tmp_path / "plots.png"
    shot = chromium(page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1400,2000")

    assert dom.stdout.count('class="vega-embed') == len(VEGA_PLOTS)  # vegaEmbed ran for every chart
    assert console_errors(dom.stderr + shot.stderr) == []
    with Image.open(screenshot) as image:
        assert image.size == (1400, 2000)
        charts = np.asarray(image.convert("L").crop((0, 0, 1400, 600)), dtype=float)  # vega charts come first
    assert charts.std() > 20, "the chart area of the page is blank"
    assert (charts < 128).mean() > 0.005, "no dark pixels (lines, axes, text) in the chart area"
