"""train stage: fit the GAN that `model` selects; weights, loss log, epoch samples, metrics/train.json."""

import sys

from ganpipe.config import load_params
from ganpipe.gan.ddp import launch, launched
from ganpipe.gan.train import train
from ganpipe.measure.score import domain_fid
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    params = load_params()
    world_size, on_gpu = params["train"]["world_size"], params["train"]["device"] != "cpu"
    # Several GPUs: hold free ones (ganpipe.gan.ddp); a CPU run leases none. The ranks of a
    # data-parallel run inherit this process's lease.
    with gpu_lease(enabled=on_gpu, wanted=world_size):
        if world_size > 1 and not launched():
            # This process only starts the ranks: torchrun runs this script world_size times.
            sys.exit(launch(world_size, __file__))
        train(params, fid=domain_fid)  # FID during training on the domain classifier


if __name__ == "__main__":
    run_stage(main)
