"""classifier stage: train the domain classifier that the domain metrics measure with."""

from ganpipe.classifier import train_and_evaluate
from ganpipe.params import load_params
from ganpipe.stage import run_stage


def main() -> None:
    params = load_params()
    metrics = train_and_evaluate(params)
    print(f"classifier: test accuracy {metrics['test_accuracy']:.4f} ({metrics['n_test']} images)")


if __name__ == "__main__":
    run_stage(main)
