"""download stage: the dataset named by data.name (or data.source) into data/raw, plus the weights of
every extractor in score.extractors (but the domain classifier's), so later stages never need the
network and missing weights stop the pipeline before training."""

from ganpipe.data import download
from ganpipe.data.schema import DATA
from ganpipe.measure.extractors import weighted_extractors
from ganpipe.measure.schema import MEASURE
from ganpipe.pipeline.params import PIPELINE, load_sections
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    # The sections of the layers this stage runs: the GAN layer's are checked by the stages that
    # read them, so that no GAN code is a dependency of the download (ganpipe.config).
    params = load_sections((PIPELINE, DATA, MEASURE))
    # Weights first: missing ones fail in seconds, before a dataset download of minutes.
    if weighted_extractors(params["score"]):
        # Imported here: torch-fidelity brings torchvision and torch._dynamo (2 s of imports), which
        # the domain extractor alone, whose weights the classifier stage trains, does not need.
        from ganpipe.measure.features import resolve_weights

        resolve_weights(params["score"])
    download(params["data"])


if __name__ == "__main__":
    run_stage(main)
