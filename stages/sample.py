"""sample stage: sample.num_samples images from the trained generator with a fixed seed."""

from ganpipe.params import load_params
from ganpipe.sample import sample
from ganpipe.stage import run_stage


def main() -> None:
    sample(load_params())


if __name__ == "__main__":
    run_stage(main)
