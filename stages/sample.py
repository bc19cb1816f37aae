"""sample stage: sample.num_samples images from the trained generator with a fixed seed."""

from ganpipe.config import load_params
from ganpipe.gan.sample import sample
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        sample(load_params())


if __name__ == "__main__":
    run_stage(main)
