"""The networks of each architecture (arch.name), one file each: ganpipe/gan/arch/<name>.py.

Each file defines GENERATOR, CRITIC and init(net) over the shared blocks of ganpipe.gan.layers. The
registry is ganpipe.gan.catalog.ARCHITECTURES: plain data, because params validation reads it in
every stage that checks the GAN sections and must not import torch; its entry names the file. A new
architecture is that file plus one entry there (docs/extending.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def networks(name: str) -> ModuleType:
    """The module of architecture `name`: GENERATOR, CRITIC and init(net) (ganpipe.gan.models)."""
    return importlib.import_module(f"{__name__}.{name}")
