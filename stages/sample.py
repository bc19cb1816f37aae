"""sample stage: sample.num_samples images from the trained generator with a fixed seed."""

from ganpipe.distributed import gpu_lease
from ganpipe.params import load_params
from ganpipe.sample import sample
from ganpipe.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.distributed)
        sample(load_params())


if __name__ == "__main__":
    run_stage(main)
