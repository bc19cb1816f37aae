"""train stage: fit the GAN that `model` selects; weights, loss log, epoch samples, metrics/train.json."""

from ganpipe.distributed import gpu_lease
from ganpipe.params import load_params
from ganpipe.stage import run_stage
from ganpipe.train import train


def main() -> None:
    params = load_params()
    # Several GPUs: hold a free one (ganpipe.distributed); a CPU run leases none.
    with gpu_lease(enabled=params["train"]["device"] != "cpu"):
        train(params)


if __name__ == "__main__":
    run_stage(main)
