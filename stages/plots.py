"""plots stage: the PNG figures in plots/figures/ from the train, sample and score outputs."""

from ganpipe.pipeline.params import load_params
from ganpipe.pipeline.stage import run_stage
from ganpipe.report.plots import draw_all


def main() -> None:
    draw_all(load_params())


if __name__ == "__main__":
    run_stage(main)
