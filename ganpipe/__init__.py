"""ganpipe: train, score and compare GANs on MedMNIST as a reproducible DVC pipeline."""

__version__ = "0.1.0"

import os

# Torch's OpenMP threads spin-wait by default; on a small shared CPU (2 cores, another process busy)
# that made training 5-12x slower, passive waiting 7-8x faster than that and no slower when idle.
# Set before torch is imported, which every ganpipe module does after this package runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
