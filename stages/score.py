"""score stage: the metrics of the generated samples on every extractor of score.extractors."""

from ganpipe.config import load_params
from ganpipe.measure.metrics import scored_metrics
from ganpipe.measure.score import score_samples
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    params = load_params()
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        scores = score_samples(params, scored_metrics())  # with the registry's own metrics
    print(
        f"score: fid {scores['fid']:.3f}, is {scores['is_mean']:.3f}, "
        f"{scores['num_generated']} generated vs {scores['num_real']} real"
    )


if __name__ == "__main__":
    run_stage(main)
