"""preprocess stage: data/raw to uint8 N×C×H×W train/test arrays, info.json and the real-sample grid."""

from ganpipe.data import preprocess
from ganpipe.pipeline.params import load_params
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    preprocess(load_params())


if __name__ == "__main__":
    run_stage(main)
