"""train stage: fit the GAN that `model` selects; weights, loss log, epoch samples, metrics/train.json."""

from ganpipe.params import load_params
from ganpipe.stage import run_stage
from ganpipe.train import train


def main() -> None:
    train(load_params())


if __name__ == "__main__":
    run_stage(main)
