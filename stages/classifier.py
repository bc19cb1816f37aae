"""classifier stage: train the domain classifier that the domain metrics measure with."""

from ganpipe.config import load_params
from ganpipe.measure.classifier import train_and_evaluate
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    params = load_params()
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        metrics = train_and_evaluate(params)
    val = metrics["val_accuracy"]
    kept = f"val accuracy {val:.4f} ({metrics['n_val']} images)" if val is not None else "no val images"
    print(
        f"classifier: test accuracy {metrics['test_accuracy']:.4f} ({metrics['n_test']} images); "
        f"kept epoch {metrics['best_epoch']}/{metrics['epochs']}, {kept}"
    )


if __name__ == "__main__":
    run_stage(main)
