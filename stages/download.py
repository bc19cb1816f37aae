"""download stage: the dataset named by data.name (or data.source) into data/raw, plus the
Inception weights when score.inception asks for them, so later stages never need the network."""

from ganpipe.data import download
from ganpipe.features import ensure_inception_weights
from ganpipe.params import load_params
from ganpipe.stage import run_stage


def main() -> None:
    params = load_params()
    download(params["data"])
    ensure_inception_weights(params["score"])


if __name__ == "__main__":
    run_stage(main)
