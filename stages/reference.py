"""reference stage: real-data features per extractor, computed once and reused by every experiment."""

from ganpipe.distributed import gpu_lease
from ganpipe.params import load_params
from ganpipe.score import compute_reference
from ganpipe.stage import run_stage


def main() -> None:
    params = load_params()
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.distributed)
        meta = compute_reference(params)
    print(f"reference: {meta['num_real']} real images, extractors {', '.join(meta['extractors'])}")


if __name__ == "__main__":
    run_stage(main)
