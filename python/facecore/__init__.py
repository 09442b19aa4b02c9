"""FaceCore: self-hosted face recognition (library part).

The face pipeline lives in :mod:`facecore.pipeline.engine` (``Engine.detect`` -> ``Face``), image decoding in
:mod:`facecore.pipeline.image`, the 1:N search engine in :mod:`facecore.search`, the native kernels in the
private ``facecore._simd_search`` extension.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from facecore.errors import (
    FaceCoreError,
    ImageTooLarge,
    ImageUnreadable,
    InvalidArgument,
    InvalidType,
    UnknownId,
)
from facecore.search import (
    SearchResult,
    VectorIndex,
    available_simd_levels,
    exact_search,
    hardware_threads,
    quantize_int8,
    simd_level,
)

if TYPE_CHECKING:
    from facecore.pipeline.engine import Engine, Face
    from facecore.pipeline.image import decode_image

__version__ = "0.1.0"

# The face pipeline (and OpenCV, ONNX Runtime) loads on first use of these names, so that
# `import facecore.search` (a search service, a tool) does not pay for it.
_LAZY = {
    "Engine": "facecore.pipeline.engine",
    "Face": "facecore.pipeline.engine",
    "decode_image": "facecore.pipeline.image",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facecore' has no attribute {name!r}")


__all__ = [
    "Engine",
    "Face",
    "FaceCoreError",
    "ImageTooLarge",
    "ImageUnreadable",
    "InvalidArgument",
    "InvalidType",
    "SearchResult",
    "UnknownId",
    "VectorIndex",
    "__version__",
    "available_simd_levels",
    "decode_image",
    "exact_search",
    "hardware_threads",
    "quantize_int8",
    "simd_level",
]
