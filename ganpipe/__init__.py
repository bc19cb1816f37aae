"""ganpipe: train, score and compare GANs on MedMNIST as a reproducible DVC pipeline."""

__version__ = "0.1.0"
