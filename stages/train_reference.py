"""train_reference stage: the small real-data reference that FID during training is measured against."""

from ganpipe.distributed import gpu_lease
from ganpipe.params import load_params
from ganpipe.score import compute_train_reference
from ganpipe.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.distributed)
        meta = compute_train_reference(load_params())
    print(f"train_reference: {meta['num_real']} real images")


if __name__ == "__main__":
    run_stage(main)
