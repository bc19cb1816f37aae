"""Fixed output paths of every stage (dvc.yaml names the same paths).

Paths are fixed, not per model, so that `dvc exp run -S model=...` compares like with like.
"""

from pathlib import Path

DATA = Path("data")
RAW_DIR = DATA / "raw"  # download: manifest.json + dataset .npz (MedMNIST layout)
RAW_MANIFEST = RAW_DIR / "manifest.json"
PROCESSED_DIR = DATA / "processed"  # preprocess: train.npz, val.npz, test.npz, info.json
PROCESSED_TRAIN = PROCESSED_DIR / "train.npz"  # images uint8 (N, C, H, W), labels int64 (N,)
PROCESSED_VAL = PROCESSED_DIR / "val.npz"  # the source's val split, else stratified from train
PROCESSED_TEST = PROCESSED_DIR / "test.npz"
PROCESSED_INFO = PROCESSED_DIR / "info.json"
CLASSIFIER_DIR = DATA / "classifier"  # classifier: classifier.pt
CLASSIFIER_WEIGHTS = CLASSIFIER_DIR / "classifier.pt"
REFERENCE_DIR = DATA / "reference"  # reference: real-data features per extractor, noise floor
TRAIN_REFERENCE_DIR = DATA / "train_reference"  # train_reference: small reference for FID during training
TRAIN_DIR = DATA / "train"  # train: generator.pt, critic.pt, generator_ema.pt, epoch_samples.npz
GENERATOR = TRAIN_DIR / "generator.pt"
CRITIC = TRAIN_DIR / "critic.pt"
GENERATOR_EMA = TRAIN_DIR / "generator_ema.pt"
EPOCH_SAMPLES = TRAIN_DIR / "epoch_samples.npz"  # images uint8 (E, 16, C, H, W), epochs int64 (E,)
SAMPLES_DIR = DATA / "samples"  # sample: samples.npz (images uint8 (N, C, H, W))
SAMPLES = SAMPLES_DIR / "samples.npz"  # + labels int64 (N,) of a conditional generator
EXPORT_DIR = DATA / "export"  # export: the labelled synthetic dataset
EXPORT_NPZ = EXPORT_DIR / "synthetic.npz"  # MedMNIST layout: train/val/test images and labels
EXPORT_MANIFEST = EXPORT_DIR / "manifest.json"  # what made it (or why nothing was exported)
EXPORT_PNG = EXPORT_DIR / "png"  # export.png: <split>/<label>_<class name>/00001.png

METRICS = Path("metrics")
TRAIN_METRICS = METRICS / "train.json"
CLASSIFIER_METRICS = METRICS / "classifier.json"
SCORES = METRICS / "scores.json"

PLOTS = Path("plots")
REAL_GRID = PLOTS / "real_grid.png"  # preprocess
TRAIN_PLOTS = PLOTS / "train"  # train: losses.tsv, fid.tsv
LOSSES_TSV = TRAIN_PLOTS / "losses.tsv"  # step, epoch, loss_g, loss_d, wasserstein, gp
FID_TSV = TRAIN_PLOTS / "fid.tsv"  # gan.train.FID_COLUMNS (header only when eval_every is null)
SAMPLE_GRID = PLOTS / "samples_grid.png"  # sample
SCORE_PLOTS = PLOTS / "score"  # score: class_histogram.tsv
CLASS_HISTOGRAM_TSV = SCORE_PLOTS / "class_histogram.tsv"  # label, real, generated (fractions)
FIGURES = PLOTS / "figures"  # plots: the PNG figures

UTILITY_METRICS = METRICS / "utility.json"  # utility: train on synthetic, test on real
UTILITY_PLOTS = PLOTS / "utility"
UTILITY_TSV = UTILITY_PLOTS / "arms.tsv"  # arm, accuracy, accuracy_std, balanced_accuracy, auc
UTILITY_FIGURE = UTILITY_PLOTS / "arms.png"

PRIVACY_METRICS = METRICS / "privacy.json"  # privacy: copying and membership-inference audit
PRIVACY_PLOTS = PLOTS / "privacy"
DCR_HISTOGRAM_TSV = PRIVACY_PLOTS / "dcr_histogram.tsv"  # dcr, generated, heldout (fractions per bin)
DCR_HISTOGRAM_PNG = PRIVACY_PLOTS / "dcr_histogram.png"
COPY_GALLERY = PRIVACY_PLOTS / "copy_gallery.png"  # the closest samples beside their training images

REPORTS = Path("reports")  # ganpipe compare
