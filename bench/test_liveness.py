"""Image liveness latency per face (the MiniFASNet pair: two crops and two model runs), at 1 and 2
threads, beside the recogniser's embedding of the same face in the same run (the baseline: the
per-face cost every request already pays), on the 640x480 phone photo of test_pipeline.py.

The liveness models are user-supplied: they are installed from ../shared/data/models/minifasnet into
a temporary models directory, as `make models LIVENESS_MODEL_DIR=...` would. Each benchmark checks
its answer: the real face of the photo scores > 0.9.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _harness import warm_up
from facecore.convert import minifasnet
from facecore.pipeline.align import chip_transform_from_mtcnn, extract_chips
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PHOTO = SHARED / "spoof" / "image_T1.jpg"
SOURCE = SHARED / "models" / "minifasnet"
THREADS = (1, 2)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = REPO / "models" / "onnx"
    out = tmp_path_factory.mktemp("liveness-models")
    for f in base.iterdir():
        if f.is_file() and f.name != "manifest.json":
            (out / f.name).symlink_to(f)
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["models"].update(minifasnet.build(SOURCE, out))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


_engines: dict[int, Engine] = {}


def engine(models_dir: Path, threads: int) -> Engine:
    if threads not in _engines:
        _engines[threads] = Engine(models_dir=models_dir, threads=threads)
    return _engines[threads]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("what", ["liveness", "embedding"])
def test_per_face(benchmark: Any, models_dir: Path, threads: int, what: str) -> None:
    eng = engine(models_dir, threads)
    image = decode_image(PHOTO.read_bytes())
    (face,) = eng.detect(image, 1, ("embedding",))
    boxes = face.box[None]
    assert eng.liveness is not None
    live = eng.liveness

    if what == "liveness":

        def call() -> Any:
            return live.predict(image, boxes)
    else:  # the recogniser alone on one chip, cut once outside the timing
        chips = extract_chips(
            image, chip_transform_from_mtcnn(face.landmarks5, 150, 0.25)[None], 150
        )

        def call() -> Any:
            return eng.recognizer.embed(chips)

    cv2.setNumThreads(threads)
    rounds = warm_up(call)
    out = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    if what == "liveness":
        assert float(out[0]) > 0.9
    else:
        assert abs(float(np.linalg.norm(out[0])) - 1) < 1e-3
    benchmark.extra_info.update(threads=threads, rounds=rounds, what=what)


VIDEO = SHARED / "video" / "WDA_AlexandriaOcasioCortez_000.mp4"


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("what", ["decode", "decode+analyse"])
def test_per_video(benchmark: Any, models_dir: Path, threads: int, what: str) -> None:
    """The 8-second talking-head clip: decoding and sampling alone (the baseline), and the whole
    video liveness (decode, a face in every sampled frame, motion tracking, 16 liveness scores)."""
    from facecore.pipeline.video import Video, analyse

    eng = engine(models_dir, threads)
    data = VIDEO.read_bytes()

    def call() -> Any:
        with Video(data) as video:
            if what == "decode+analyse":
                return analyse(eng, video)
            return sum(1 for _ in video.frames()), video.seconds

    cv2.setNumThreads(threads)
    out = benchmark.pedantic(call, rounds=3, iterations=1, warmup_rounds=1)
    if what == "decode+analyse":
        assert out.score > 0.9 and out.frames_with_face >= 50
    else:
        assert out[0] == 100 and abs(out[1] - 8.0) < 0.1
    benchmark.extra_info.update(threads=threads, what=what)
