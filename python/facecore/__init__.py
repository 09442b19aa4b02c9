"""FaceCore: self-hosted face recognition (library part).

The face pipeline lives in :mod:`facecore.engine` (``Engine.detect`` -> ``Face``), image decoding in
:mod:`facecore.image`, the 1:N search engine in :mod:`facecore.search`, the native kernels in the
private ``facecore._simd_search`` extension.
"""

from __future__ import annotations

from facecore.engine import Engine, Face
from facecore.errors import (
    FaceCoreError,
    ImageTooLarge,
    ImageUnreadable,
    InvalidArgument,
    InvalidType,
    UnknownId,
)
from facecore.image import decode_image
from facecore.search import (
    SearchResult,
    VectorIndex,
    available_simd_levels,
    exact_search,
    hardware_threads,
    quantize_int8,
    simd_level,
)

__version__ = "0.1.0"

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
