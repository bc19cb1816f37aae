"""privacy stage: copying, authenticity and membership inference of the samples, each against its null."""

from ganpipe.config import load_params
from ganpipe.measure.audit import audit
from ganpipe.pipeline.leases import gpu_lease
from ganpipe.pipeline.stage import run_stage


def main() -> None:
    params = load_params()
    with gpu_lease():  # several GPUs: hold a free one (ganpipe.gan.ddp)
        result = audit(params)
    verdict = result["verdict"]
    ct = "none (every cell dropped)" if result["ct"] is None else f"{result['ct']:.2f}"
    print(
        f"privacy: copy_share {result['copy_share']:.3f} (null {result['null_copy_share']:.3f}), "
        f"dcr_share {result['dcr_share']:.3f} (null {result['null_dcr_share']:.3f}), "
        f"ct {ct}, authenticity {result['authenticity']:.3f} "
        f"(null {result['null_authenticity']:.3f}), logan_auc {result['logan_auc']:.3f}; "
        + ("flagged: " + "; ".join(verdict["reasons"]) if verdict["flagged"] else "not flagged")
    )


if __name__ == "__main__":
    run_stage(main)
