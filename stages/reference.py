"""reference stage: real-data features per extractor, computed once and reused by every experiment."""

from ganpipe.config import load_params
from ganpipe.measure.score import compute_reference
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    params = load_params()
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        meta = compute_reference(params)
    print(f"reference: {meta['num_real']} real images, extractors {', '.join(meta['extractors'])}")


if __name__ == "__main__":
    run_stage(main)
