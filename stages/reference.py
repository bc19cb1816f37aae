"""reference stage: real-data features per extractor, computed once and reused by every experiment."""

from ganpipe.params import load_params
from ganpipe.score import compute_reference
from ganpipe.stage import run_stage


def main() -> None:
    params = load_params()
    meta = compute_reference(params)
    print(f"reference: {meta['num_real']} real images, extractors {', '.join(meta['extractors'])}")


if __name__ == "__main__":
    run_stage(main)
