"""preprocess stage: data/raw to uint8 N×C×H×W train/test arrays, info.json and the real-sample grid."""

from ganpipe.data import preprocess
from ganpipe.data.schema import DATA
from ganpipe.pipeline.params import PIPELINE, load_sections
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    # The data layer's sections only: no GAN or measuring code is a dependency of preprocessing.
    preprocess(load_sections((PIPELINE, DATA)))


if __name__ == "__main__":
    run_stage(main)
