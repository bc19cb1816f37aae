"""utility stage: classifiers trained on synthetic, real and mixed data, tested on the real test split."""

from ganpipe.config import load_params
from ganpipe.measure.utility import measure_utility
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        metrics = measure_utility(load_params())
    if metrics["skipped"]:
        print(f"utility: skipped ({metrics['skipped']})")
    else:
        print(f"utility: TSTR/TRTR accuracy ratio {metrics['tstr_ratio']:.3f} over {metrics['seeds']} seeds")


if __name__ == "__main__":
    run_stage(main)
