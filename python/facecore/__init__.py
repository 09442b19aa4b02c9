"""FaceCore: self-hosted face recognition (library part).

The 1:N search engine lives in :mod:`facecore.search`; the native kernels in the private
``facecore._simd_search`` extension.
"""

from __future__ import annotations

from facecore.errors import FaceCoreError, InvalidArgument, InvalidType, UnknownId
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
    "FaceCoreError",
    "InvalidArgument",
    "InvalidType",
    "SearchResult",
    "UnknownId",
    "VectorIndex",
    "__version__",
    "available_simd_levels",
    "exact_search",
    "hardware_threads",
    "quantize_int8",
    "simd_level",
]
