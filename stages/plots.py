"""plots stage: the PNG figures in plots/figures/ from the train, sample and score outputs."""

from ganpipe.data.schema import DATA
from ganpipe.pipeline.params import PIPELINE, load_sections
from ganpipe.pipeline.stage import run_stage
from ganpipe.report.plots import draw_all


def main() -> None:
    # The figures read model, models.<model> and arch.name as the train stage, which checked them,
    # used them; checking them here would make the GAN code a dependency of the figures.
    draw_all(load_sections((PIPELINE, DATA)))


if __name__ == "__main__":
    run_stage(main)
