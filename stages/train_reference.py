"""train_reference stage: the small real-data reference that FID during training is measured against."""

from ganpipe.config import load_params
from ganpipe.measure.score import compute_train_reference
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        meta = compute_train_reference(load_params())
    print(f"train_reference: {meta['num_real']} real images")


if __name__ == "__main__":
    run_stage(main)
