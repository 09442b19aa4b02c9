"""The package's import cost: `import facecore.search` (a search service, a tool) loads neither the
face pipeline nor OpenCV nor ONNX Runtime; the documented names of `facecore` still work."""

from __future__ import annotations

import subprocess
import sys

import facecore
import pytest


def test_search_alone_loads_no_pipeline() -> None:
    code = (
        "import sys, facecore.search\n"
        "loaded = [m for m in ('cv2', 'onnxruntime', 'PIL', 'facecore.pipeline', 'facecore.store')"
        " if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_the_rooms_import_by_their_names() -> None:
    """Each sub-package a newcomer can name imports on its own, its modules by their new paths."""
    import facecore.pipeline.engine
    import facecore.runtime.backend
    import facecore.store.library

    assert facecore.pipeline.engine.Engine is facecore.Engine
    assert facecore.runtime.backend.OnnxRuntimeBackend.__module__ == "facecore.runtime.backend"
    assert facecore.store.library.FaceLibrary.__module__ == "facecore.store.library"


@pytest.mark.parametrize("name", facecore.__all__)
def test_every_documented_name_resolves(name: str) -> None:
    assert getattr(facecore, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        facecore.Nope  # noqa: B018
