"""export stage: a labelled synthetic dataset (MedMNIST-layout npz + manifest) from the trained generator."""

from ganpipe.config import load_params
from ganpipe.gan.export import export
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        manifest = export(load_params())
    if manifest["exported"]:
        counts = ", ".join(f"{split} {count}" for split, count in manifest["num_images"].items())
        print(f"export: data/export/{manifest['file']} ({counts})")
    else:
        print(f"export: nothing exported: {manifest['reason']}")


if __name__ == "__main__":
    run_stage(main)
