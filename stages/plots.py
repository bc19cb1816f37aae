"""plots stage: the PNG figures in plots/figures/ from the train, sample and score outputs."""

from ganpipe.params import load_params
from ganpipe.plots import draw_all
from ganpipe.stage import run_stage


def main() -> None:
    draw_all(load_params())


if __name__ == "__main__":
    run_stage(main)
