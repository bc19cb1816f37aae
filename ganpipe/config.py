"""params.yaml as a whole: every layer's schema, assembled.

Each layer declares and checks its own sections (ganpipe.pipeline.params: `seed`;
ganpipe.data.schema, ganpipe.gan.schema, ganpipe.measure.schema); this module sits above them all
and composes them. Every stage from the classifier on calls `load_params()` before it touches an
output. The stages below the GAN layer (download, preprocess) and the plots check the sections of
the layers they run (`load_sections`), so that no GAN code is among their DVC dependencies.
Nothing here imports torch.
"""

from __future__ import annotations

import os
from typing import Any

from ganpipe.data.schema import DATA
from ganpipe.gan.schema import GAN
from ganpipe.measure.schema import MEASURE
from ganpipe.pipeline import params as _params
from ganpipe.pipeline.params import PARAMS_FILE, PIPELINE

# In the order of params.yaml's sections, which the params reference follows too.
SCHEMAS = (PIPELINE, DATA, GAN, MEASURE)


def validate(params: Any) -> dict[str, Any]:
    """Check a whole params mapping; return it unchanged or raise ParamsError."""
    return _params.validate(params, SCHEMAS)


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> dict[str, Any]:
    """Read and check all of params.yaml (relative to the current directory, the repo root)."""
    return validate(_params.read_params(path))
